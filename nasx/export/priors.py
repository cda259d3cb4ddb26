"""Anchors, default boxes and FCOS points computed from feature sizes that may be symbolic.

The detectors' own generators turn the feature sizes into Python ints (to cache per size), which
would freeze a ``dynamic`` export to the example's size. These compute the same values, in the
same float64 arithmetic and order, from sizes that stay symbolic under ``torch.export``, so the
exported graph computes its priors from the input's shape. Tests compare them with the generators.

Letters: L levels, h x w a level's size, A priors per location.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from nasx.models.detectors.anchors import AnchorGenerator, DefaultBoxGenerator

__all__ = ["anchors", "default_boxes", "fcos_points"]


def _centres(h, w, step_y, step_x, offset: float, device) -> Tensor:
    """(x, y) of ``(j + offset) * step`` on an h x w grid, row by row: Tensor[h * w, 2] float64.
    ``step`` is a float or a float64 0-dim tensor."""
    ys = (torch.arange(h, device=device, dtype=torch.float64) + offset) * step_y
    xs = (torch.arange(w, device=device, dtype=torch.float64) + offset) * step_x
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1)


def _boxes_at(centres: Tensor, wh: Tensor) -> Tensor:
    """A boxes of sizes wh [A, 2] at every centre [P, 2] -> [P * A, 4], location-major."""
    half = wh[None, :, :] / 2
    return torch.cat([centres[:, None, :] - half, centres[:, None, :] + half], dim=2).reshape(-1, 4)


def anchors(generator: AnchorGenerator, sizes: list, device) -> list[Tensor]:
    """``generator(sizes)`` for feature sizes [(h, w)] that may be symbolic: L x Tensor[h * w * A, 4] float32."""
    if len(sizes) != len(generator.strides):
        raise ValueError(f"anchors: got {len(sizes)} feature maps, the anchor generator has {len(generator.strides)} "
                         f"levels")
    out = []
    for level, ((h, w), s) in enumerate(zip(sizes, generator.strides)):
        centres = _centres(h, w, float(s), float(s), generator.offset, device)
        out.append(_boxes_at(centres, generator.shapes(level).to(device)).to(torch.float32))
    return out


def default_boxes(generator: DefaultBoxGenerator, sizes: list, image_shape, device) -> list[Tensor]:
    """``generator(sizes, image_shape)`` with symbolic sizes: L x Tensor[h * w * A_l, 4] float32.
    Box sizes are (s sqrt(r)) * W and (s / sqrt(r)) * H, the generator's float64 products."""
    if len(sizes) != generator.num_levels:
        raise ValueError(f"default_boxes: got {len(sizes)} feature maps, the generator has {generator.num_levels}")
    img_h, img_w = image_shape
    img = torch.stack([_as_float64(img_w, device), _as_float64(img_h, device)])            # (2,) as (W, H)
    out = []
    for level, (h, w) in enumerate(sizes):
        rel = torch.tensor([(s * math.sqrt(r), s / math.sqrt(r)) for s, r in generator.shapes(level)],
                           dtype=torch.float64, device=device)                               # (A, 2)
        centres = _centres(h, w, img[1] / _as_float64(h, device), img[0] / _as_float64(w, device), 0.5, device)
        out.append(_boxes_at(centres, rel * img).to(torch.float32))
    return out


def fcos_points(sizes: list, strides, device) -> list[Tensor]:
    """FCOS' locations ``j * stride + stride // 2`` per level (as ``FCOS.locations``): L x Tensor[h * w, 2] float32."""
    out = []
    for (h, w), s in zip(sizes, strides):
        ys = torch.arange(h, device=device, dtype=torch.float32) * s + s // 2
        xs = torch.arange(w, device=device, dtype=torch.float32) * s + s // 2
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        out.append(torch.stack([xx.flatten(), yy.flatten()], dim=1))
    return out


def _as_float64(v, device) -> Tensor:
    """A size (int or symbolic int) as a float64 0-dim tensor, so steps divide in float64 as the generators do."""
    if isinstance(v, int):
        return torch.tensor(float(v), dtype=torch.float64, device=device)
    return torch.scalar_tensor(v, dtype=torch.float64, device=device)
