from nasx.models.necks.fpn import FPN
from nasx.models.necks.ssdlite_extra import SSDLiteExtra

__all__ = ["FPN", "SSDLiteExtra"]
