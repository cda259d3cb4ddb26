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
    "SynthConfig", "write_synth_dataset", "synth_dataset", "coco_layout_dataset",
    "Collate", "DetectionBatch", "collate_detection", "build_loader",
    "AnnotationError", "AnnotationWarning", "UnreadableImageError",
]


def coco_layout_dataset(root, split: str = "train", **kwargs) -> CocoDetection:
    """The ``split`` of a dataset in COCO's layout — ``root/<split>/`` images and
    ``root/annotations/instances_<split>.json``, what ``nasx data synth --out root`` writes —
    read through :class:`CocoDetection` (keyword arguments go to it). A missing annotation file
    is a ``ValueError`` that says how to make a dataset."""
    from pathlib import Path

    root = Path(root)
    ann = root / "annotations" / f"instances_{split}.json"
    if not ann.is_file():
        raise ValueError(f"--data {root}: missing annotations/instances_{split}.json "
                         f"(create a dataset with `nasx data synth --out {root}`)")
    return CocoDetection(root / split, ann, **kwargs)


synth_dataset = coco_layout_dataset  # the name the embedded dataset's docs use
