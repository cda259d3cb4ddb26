"""RoIAlign over a feature pyramid: each box is pooled from the level that matches its size
(Lin et al. 2017, FPN eq. 1), through ``nasx.ops.roi_align``.

Letters: R boxes over the batch, C channels, S output size, L levels.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from nasx.ops import roi_align

__all__ = ["MultiLevelRoIAlign", "assign_levels"]


def assign_levels(boxes: Tensor, levels: Sequence[int], canonical_size: float = 224.0,
                  canonical_level: int = 4, eps: float = 1e-6) -> Tensor:
    """Index (into ``levels``) of the pyramid level of each box: ``floor(canonical_level +
    log2(sqrt(area) / canonical_size))``, clamped to the levels present. ``levels`` are log2 of the
    strides, consecutive and increasing (e.g. 2..5 for strides 4..32).

    boxes: Tensor[R, 4] -> Tensor[R] int64 in [0, len(levels)).
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    k = torch.floor(canonical_level + torch.log2(torch.sqrt(area) / canonical_size) + eps)
    return (k.clamp(min=levels[0], max=levels[-1]) - levels[0]).to(torch.int64)


class MultiLevelRoIAlign(nn.Module):
    """Args:
        output_size: S, bins per side.
        sampling_ratio: samples per bin per axis (<= 0: adaptive), as ``roi_align``.
        aligned: ``roi_align``'s half-pixel correction (False in torchvision's Faster R-CNN and mmdet-1.x).
        canonical_size, canonical_level: a box of ``canonical_size`` pixels pools from the level of
            stride ``2 ** canonical_level`` (224 px at level 4: ImageNet's size on ResNet's C4).

    ``forward(levels, strides, boxes)`` takes L x Tensor[B, C, H_l, W_l], their strides (powers of two,
    consecutive) and one Tensor[R_i, 4] of boxes per image, and returns Tensor[R, C, S, S] in the
    order of the boxes, image after image. One level: every box pools from it (the original
    Faster R-CNN on C4).
    """

    def __init__(self, *, output_size: int = 7, sampling_ratio: int = 2, aligned: bool = False,
                 canonical_size: float = 224.0, canonical_level: int = 4):
        super().__init__()
        self.output_size, self.sampling_ratio, self.aligned = int(output_size), int(sampling_ratio), bool(aligned)
        self.canonical_size, self.canonical_level = float(canonical_size), int(canonical_level)

    def forward(self, levels: list[Tensor], strides: Sequence[int], boxes: list[Tensor]) -> Tensor:
        if len(levels) != len(strides) or not levels:
            raise ValueError(f"MultiLevelRoIAlign: got {len(levels)} feature levels and {len(strides)} strides")
        logs = [math.log2(s) for s in strides]
        if any(v != int(v) for v in logs) or any(b - a != 1 for a, b in zip(logs, logs[1:])):
            raise ValueError(f"MultiLevelRoIAlign: strides must be consecutive powers of two, got {list(strides)}")
        rois = torch.cat([torch.cat([b.new_full((b.shape[0], 1), float(i)), b], dim=1)
                          for i, b in enumerate(boxes)]) if boxes else levels[0].new_zeros((0, 5))  # (R, 5)
        s = self.output_size
        if len(levels) == 1:
            return roi_align(levels[0], rois, s, 1.0 / strides[0], self.sampling_ratio, self.aligned)
        which = assign_levels(rois[:, 1:], [int(v) for v in logs], self.canonical_size, self.canonical_level)
        out = levels[0].new_zeros((rois.shape[0], levels[0].shape[1], s, s))
        for k, (x, stride) in enumerate(zip(levels, strides)):
            idx = torch.nonzero(which == k).squeeze(1)
            if idx.numel():
                out[idx] = roi_align(x, rois[idx], s, 1.0 / stride, self.sampling_ratio, self.aligned)
        return out
