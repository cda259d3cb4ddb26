from nasx.models.detectors.anchors import AnchorGenerator, BoxCoder, DefaultBoxGenerator
from nasx.models.detectors.fcos import FCOS, FCOS_SIZE_RANGES
from nasx.models.detectors.postprocess import postprocess_detections
from nasx.models.detectors.retinanet import RetinaNet
from nasx.models.detectors.ssdlite import SSDLite, SSDLiteFeatures

__all__ = ["AnchorGenerator", "BoxCoder", "DefaultBoxGenerator", "FCOS", "FCOS_SIZE_RANGES", "RetinaNet", "SSDLite",
           "SSDLiteFeatures", "postprocess_detections"]
