from nasx.models.heads.fcos_head import FCOSHead, FCOSPredictor, Scale
from nasx.models.heads.searched_head import SearchedHead, SearchedTower

__all__ = ["FCOSHead", "FCOSPredictor", "Scale", "SearchedHead", "SearchedTower"]
