"""Transforms on ``(image, target)`` pairs: the boxes always follow the image.

``image`` is a Tensor[3, H, W] (uint8 or float), ``target`` a dict with ``boxes``
(float Tensor[K, 4], x1 y1 x2 y2 in pixels of the current image) and any other keys, which
are passed through. Random transforms draw from torch's global RNG, which
:func:`nasx.data.loader.build_loader` seeds per sample, so a run is reproducible for any
number of loader workers.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Compose", "Resize", "RandomResize", "RandomHorizontalFlip", "ToFloat", "Normalize",
    "resize", "hflip", "resized_shape", "IMAGENET_MEAN", "IMAGENET_STD", "detection_transforms",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resized_shape(height: int, width: int, min_size: int, max_size: Optional[int] = None) -> tuple[int, int]:
    """(H', W') with the shorter side scaled to ``min_size``, unless that takes the longer
    side beyond ``max_size``, in which case the longer side becomes ``max_size``."""
    scale = min_size / min(height, width)
    if max_size is not None and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image: Tensor, target: dict, size: tuple[int, int]) -> tuple[Tensor, dict]:
    """Resize to ``size`` = (H', W') (bilinear, antialiased when shrinking); boxes are scaled
    by exactly W'/W and H'/H."""
    h, w = image.shape[-2:]
    nh, nw = size
    if (nh, nw) != (h, w):
        x = image[None]
        if x.dtype == torch.uint8 and x.device.type != "cpu":
            x = x.float()  # the uint8 antialiased kernel is CPU only
        out = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
        image = out.round().clamp_(0, 255).to(torch.uint8) if image.dtype == torch.uint8 else out.to(image.dtype)
    target = dict(target)
    boxes = target["boxes"]
    scale = torch.tensor([nw / w, nh / h, nw / w, nh / h], dtype=boxes.dtype, device=boxes.device)
    target["boxes"] = boxes * scale
    return image, target


def hflip(image: Tensor, target: dict) -> tuple[Tensor, dict]:
    """Mirror left-right: x -> W - x, so (x1, x2) -> (W - x2, W - x1)."""
    w = image.shape[-1]
    target = dict(target)
    b = target["boxes"]
    target["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
    return image.flip(-1), target


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class Resize:
    """Shorter side to ``min_size``, longer side at most ``max_size``; aspect ratio kept."""

    def __init__(self, min_size: int, max_size: Optional[int] = None):
        if min_size < 1 or (max_size is not None and max_size < min_size):
            raise ValueError(f"Resize: expected 1 <= min_size <= max_size, got {min_size} and {max_size}")
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, image, target):
        return resize(image, target, resized_shape(*image.shape[-2:], self.min_size, self.max_size))

    def __repr__(self) -> str:
        return f"Resize(min_size={self.min_size}, max_size={self.max_size})"


class RandomResize:
    """Scale jitter: the shorter side is drawn uniformly from ``min_sizes`` (a list, or a
    ``range``), the longer side capped at ``max_size``; aspect ratio kept."""

    def __init__(self, min_sizes: Sequence[int], max_size: Optional[int] = None):
        self.min_sizes = list(min_sizes)
        if not self.min_sizes or min(self.min_sizes) < 1:
            raise ValueError(f"RandomResize: expected a non-empty list of sizes >= 1, got {min_sizes!r}")
        self.max_size = max_size

    def __call__(self, image, target):
        size = self.min_sizes[int(torch.randint(len(self.min_sizes), ()))]
        return resize(image, target, resized_shape(*image.shape[-2:], size, self.max_size))

    def __repr__(self) -> str:
        return f"RandomResize(min_sizes={self.min_sizes}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, target):
        return hflip(image, target) if float(torch.rand(())) < self.p else (image, target)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ToFloat:
    """uint8 [0, 255] -> float32 [0, 1]; float images pass unchanged."""

    def __call__(self, image, target):
        return (image.float().div_(255) if image.dtype == torch.uint8 else image), target

    def __repr__(self) -> str:
        return "ToFloat()"


class Normalize:
    """(image - mean) / std per channel, on [0, 1] intensities (uint8 images are converted first)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if len(mean) != 3 or len(std) != 3 or not all(s > 0 and math.isfinite(s) for s in std):
            raise ValueError(f"Normalize: expected 3 means and 3 positive stds, got {mean!r} and {std!r}")
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image, target):
        image, _ = ToFloat()(image, target)
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device)[:, None, None]
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device)[:, None, None]
        return (image - mean) / std, target

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


def detection_transforms(train: bool, min_size: int, max_size: Optional[int] = None,
                         jitter: Sequence[float] = (0.8, 1.0, 1.2)) -> Compose:
    """The usual recipe: for training, scale jitter around ``min_size`` (factors ``jitter``)
    and a horizontal flip; for evaluation, a plain resize; then ImageNet normalisation."""
    if train:
        sizes = sorted({max(int(round(min_size * f)), 1) for f in jitter})
        cap = None if max_size is None else max(max_size, max(sizes))
        return Compose([RandomResize(sizes, cap), RandomHorizontalFlip(), Normalize()])
    return Compose([Resize(min_size, max_size), Normalize()])
