"""Object crops of a detection dataset, as a classification dataset: what a seed network is
pre-trained on when ImageNet weights cannot be had (network adaptation starts from a classifier,
as FNA's MobileNetV2 seed is an ImageNet classifier).

Every kept box becomes one sample: the box grown by ``context`` of its size on each side (so the
silhouette's edge is inside), made square around its centre, clipped to the image, resized to
``size`` x ``size``; the label is the box's class. All crops are cut once, when the dataset is
made, and kept as uint8 in memory (5,749 crops of the embedded dataset at 64 px: 70 MB).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nasx.data.transforms import Normalize

__all__ = ["ObjectCrops"]


class ObjectCrops(torch.utils.data.Dataset):
    """Args:
        dataset: a :class:`~nasx.data.coco.CocoDetection` without transforms (uint8 images).
        size: side of every crop in pixels.
        context: margin added around each box, as a share of its longer side.
        train: random horizontal flips (drawn from torch's global RNG, which nasx's loader seeds
            per sample).

    ``dataset[i]`` is ``(Tensor[3, size, size] normalised as the detectors' inputs, label)``;
    ``labels`` is Tensor[N] and ``num_classes`` the dataset's.
    """

    def __init__(self, dataset, *, size: int = 64, context: float = 0.15, train: bool = True):
        if size < 8:
            raise ValueError(f"ObjectCrops: size must be >= 8 pixels, got {size}")
        if context < 0:
            raise ValueError(f"ObjectCrops: context must be >= 0, got {context}")
        if getattr(dataset, "transforms", None) is not None:
            raise ValueError("ObjectCrops: pass the detection dataset without transforms; crops are cut from the "
                             "original images")
        self.size, self.train, self.num_classes = size, train, dataset.num_classes
        crops, labels = [], []
        for i in range(len(dataset)):
            target = dataset.load_target(i)
            if len(target["boxes"]) == 0:
                continue
            image, _ = dataset[i]
            for box, label in zip(target["boxes"], target["labels"]):
                crops.append(_crop(image, box, size, context))
                labels.append(int(label))
        if not crops:
            raise ValueError(f"ObjectCrops: the dataset ({len(dataset)} images) has no boxes to crop")
        self.images = torch.stack(crops)                       # (N, 3, size, size) uint8
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self._normalize = Normalize()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.train and torch.rand(()) < 0.5:
            image = image.flip(-1)
        image, _ = self._normalize(image, {})
        return image, int(self.labels[index])


def _crop(image: Tensor, box: Tensor, size: int, context: float) -> Tensor:
    """The square window around ``box`` (x1, y1, x2, y2) with ``context``, resized: uint8 [3, size, size]."""
    _, h, w = image.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * context)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(max(0, round(cx - side / 2))), int(max(0, round(cy - side / 2)))
    right, bottom = int(min(w, round(cx + side / 2))), int(min(h, round(cy + side / 2)))
    right, bottom = max(right, left + 1), max(bottom, top + 1)
    window = image[:, top:bottom, left:right].float().unsqueeze(0)
    out = F.interpolate(window, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.squeeze(0).round().clamp(0, 255).to(torch.uint8)
