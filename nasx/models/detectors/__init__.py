from nasx.models.detectors.fcos import FCOS, FCOS_SIZE_RANGES
from nasx.models.detectors.postprocess import postprocess_detections

__all__ = ["FCOS", "FCOS_SIZE_RANGES", "postprocess_detections"]
