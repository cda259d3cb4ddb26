from nasx.models.heads.fcos_head import FCOSHead, FCOSPredictor, Scale

__all__ = ["FCOSHead", "FCOSPredictor", "Scale"]
