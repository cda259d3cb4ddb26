from nasx.models.necks.fpn import FPN
from nasx.models.necks.searched_fpn import SearchedFPN

__all__ = ["FPN", "SearchedFPN"]
