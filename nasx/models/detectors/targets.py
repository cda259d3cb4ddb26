"""Input checks and GT padding shared by the detectors."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["check_detector_inputs", "pad_targets"]


def check_detector_inputs(images: Tensor, image_sizes: Optional[list], targets: Optional[list], training: bool,
                          name: str) -> list:
    """Validate a detector call; returns the image sizes (the padded size when not given)."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name}: expected images as a float Tensor[B, 3, H, W], got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{name}: expected normalised floating-point images, got {images.dtype}")
    b = images.shape[0]
    if image_sizes is None:
        image_sizes = [tuple(images.shape[-2:])] * b
    if len(image_sizes) != b:
        raise ValueError(f"{name}: got {b} images but {len(image_sizes)} image_sizes")
    if training:
        if targets is None:
            raise ValueError(f"{name}: targets are required in training mode (call model.eval() for inference)")
        if len(targets) != b:
            raise ValueError(f"{name}: got {b} images but {len(targets)} targets")
        for i, t in enumerate(targets):
            boxes = t.get("boxes") if isinstance(t, dict) else None
            labels = t.get("labels") if isinstance(t, dict) else None
            if boxes is None or labels is None:
                raise ValueError(f"{name}: target {i} needs 'boxes' and 'labels'")
            if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
                raise ValueError(f"{name}: target {i}: expected boxes Tensor[K, 4] and labels Tensor[K], got "
                                 f"{list(boxes.shape)} and {list(labels.shape)}")
    return [tuple(int(v) for v in s) for s in image_sizes]


def pad_targets(targets: list, device) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image GTs: (boxes Tensor[B, G, 4] float32, labels Tensor[B, G] int64, counts Tensor[B])
    with G = max(1, most GTs in an image); padding rows are zero."""
    counts = [int(t["boxes"].shape[0]) for t in targets]
    g = max(1, max(counts))
    boxes = torch.zeros(len(targets), g, 4, device=device)
    labels = torch.zeros(len(targets), g, dtype=torch.int64, device=device)
    for i, t in enumerate(targets):
        boxes[i, : counts[i]] = t["boxes"].to(device=device, dtype=torch.float32)
        labels[i, : counts[i]] = t["labels"].to(device=device, dtype=torch.int64)
    return boxes, labels, torch.tensor(counts, device=device)
