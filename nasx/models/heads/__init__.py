from nasx.models.heads.fcos_head import FCOSHead, FCOSPredictor, Scale
from nasx.models.heads.retina_head import RetinaHead
from nasx.models.heads.searched_head import SearchedHead, SearchedTower
from nasx.models.heads.ssdlite_head import SSDLiteHead

__all__ = ["FCOSHead", "FCOSPredictor", "RetinaHead", "SSDLiteHead", "Scale", "SearchedHead", "SearchedTower"]
