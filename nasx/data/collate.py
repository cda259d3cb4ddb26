"""Batching detection samples of different sizes: zero padding at the bottom and right."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["DetectionBatch", "Collate", "collate_detection"]


class DetectionBatch(NamedTuple):
    """images: Tensor[B, 3, H, W], padded; image_sizes: the (h, w) of each image before
    padding; targets: the B target dicts, unchanged."""

    images: Tensor
    image_sizes: list
    targets: list


def collate_detection(batch, size_divisible: int = 32, pad_value: float = 0.0) -> DetectionBatch:
    """Stack ``[(image Tensor[3, h_i, w_i], target), ...]`` into one padded batch.

    H and W are the largest h_i and w_i rounded up to a multiple of ``size_divisible``
    (so every feature-pyramid stride up to it divides them); images keep their top-left corner.
    """
    if len(batch) == 0:
        raise ValueError("collate_detection: expected at least one sample, got an empty batch")
    images = [img for img, _ in batch]
    if len({(img.dtype, img.shape[0], img.device) for img in images}) != 1:
        kinds = sorted({f"{img.dtype} with {img.shape[0]} channels on {img.device}" for img in images})
        raise ValueError(f"collate_detection: expected images of one dtype, channel count and device, got {kinds}")
    d = max(int(size_divisible), 1)
    h = -(-max(img.shape[1] for img in images) // d) * d
    w = -(-max(img.shape[2] for img in images) // d) * d
    out = images[0].new_full((len(images), images[0].shape[0], h, w), pad_value)
    for i, img in enumerate(images):
        out[i, :, : img.shape[1], : img.shape[2]].copy_(img)
    return DetectionBatch(out, [(int(img.shape[1]), int(img.shape[2])) for img in images], [t for _, t in batch])


class Collate:
    """Picklable ``collate_fn`` for a DataLoader: :func:`collate_detection` with fixed settings."""

    def __init__(self, size_divisible: int = 32, pad_value: float = 0.0):
        self.size_divisible, self.pad_value = size_divisible, pad_value

    def __call__(self, batch) -> DetectionBatch:
        return collate_detection(batch, self.size_divisible, self.pad_value)
