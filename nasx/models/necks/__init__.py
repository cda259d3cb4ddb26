from nasx.models.necks.fpn import FPN, build_sm_nas_fpn, sm_nas_fpn_levels
from nasx.models.necks.searched_fpn import SearchedFPN
from nasx.models.necks.ssdlite_extra import SSDLiteExtra

__all__ = ["FPN", "build_sm_nas_fpn", "sm_nas_fpn_levels", "SearchedFPN", "SSDLiteExtra"]
