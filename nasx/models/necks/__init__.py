from nasx.models.necks.fpn import FPN
from nasx.models.necks.searched_fpn import SearchedFPN
from nasx.models.necks.ssdlite_extra import SSDLiteExtra

__all__ = ["FPN", "SearchedFPN", "SSDLiteExtra"]
