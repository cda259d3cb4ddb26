"""Detection data: the embedded synthetic dataset, COCO and VOC readers, transforms,
batching and loading.

Every dataset yields ``(image uint8 Tensor[3, H, W], target)`` with ``target["boxes"]``
(float32 Tensor[K, 4], x1 y1 x2 y2 pixels), ``target["labels"]`` (int64 Tensor[K], 0..C-1),
``target["image_id"]`` and ``target["orig_size"]`` (H, W).
"""
from nasx.data.annotation_checks import AnnotationError, AnnotationWarning, UnreadableImageError
from nasx.data.coco import CocoDetection, load_coco_json
from nasx.data.collate import Collate, DetectionBatch, collate_detection
from nasx.data.loader import build_loader
from nasx.data.synth import SynthConfig, write_synth_dataset
from nasx.data.voc import VOC_CLASSES, VOCDetection

__all__ = [
    "CocoDetection", "VOCDetection", "VOC_CLASSES", "load_coco_json",
    "SynthConfig", "write_synth_dataset", "synth_dataset",
    "Collate", "DetectionBatch", "collate_detection", "build_loader",
    "AnnotationError", "AnnotationWarning", "UnreadableImageError",
]


def synth_dataset(root, split: str = "train", **kwargs) -> CocoDetection:
    """The ``split`` of a dataset written by ``nasx data synth --out root``, read through the
    same COCO reader as any other data (keyword arguments go to :class:`CocoDetection`)."""
    from pathlib import Path

    root = Path(root)
    return CocoDetection(root / split, root / "annotations" / f"instances_{split}.json", **kwargs)
