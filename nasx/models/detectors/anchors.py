"""Anchors (RetinaNet) and default boxes (SSD / SSDLite), and the box-delta coder both use.

Letters: A anchors per location, H_l x W_l the size of level l, N anchors over all levels.
Anchors of a level are ordered location-major, row by row, then the A shapes of a location:
the order of a head output ``[B, A * X, H_l, W_l]`` viewed as ``[B, H_l, W_l, A, X]``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["AnchorGenerator", "BoxCoder", "DefaultBoxGenerator", "flatten_anchor_outputs"]


def flatten_anchor_outputs(maps: list[Tensor], per_anchor: int) -> Tensor:
    """L x Tensor[B, A * X, H_l, W_l] -> Tensor[B, N, X] in the anchors' order (location, then anchor)."""
    out = []
    for x in maps:
        b, _, h, w = x.shape
        out.append(x.view(b, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, per_anchor))
    return torch.cat(out, dim=1)


def _grid(h: int, w: int, step_y: float, step_x: float, device, dtype, offset: float = 0.5) -> Tensor:
    """Points ``(j + offset) * step`` of an h x w grid (cell centres by default): Tensor[h * w, 2] as (x, y)."""
    ys = (torch.arange(h, device=device, dtype=dtype) + offset) * step_y
    xs = (torch.arange(w, device=device, dtype=dtype) + offset) * step_x
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1)


def _place(centres: Tensor, wh: Tensor) -> Tensor:
    """Boxes of sizes wh [A, 2] at every centre [P, 2] -> [P * A, 4] (x1, y1, x2, y2)."""
    c = centres[:, None, :]                                            # (P, 1, 2)
    half = wh[None, :, :] / 2                                           # (1, A, 2)
    return torch.cat([c - half, c + half], dim=2).reshape(-1, 4)


class AnchorGenerator:
    """RetinaNet anchors: on level l, ``len(scales) * len(aspect_ratios)`` boxes of area
    ``(sizes[l] * scale) ** 2`` and height / width = ratio, centred on each feature cell
    (at ``(j + 0.5) * stride``, the same points FCOS regresses from).

    Args:
        sizes: base anchor size of each level (32..512 px for P3-P7).
        strides: stride of each level.
        scales: per-level octave scales (2^0, 2^(1/3), 2^(2/3)).
        aspect_ratios: height / width ratios.
        offset: anchor centres at ``(j + offset) * stride``: 0.5 puts them on the cell centres (the
            points FCOS regresses from), 0 on the cells' top-left corners as torchvision and mmdet do.
        round_half_sizes: round each anchor's half width / height to whole pixels, as torchvision's
            ``AnchorGenerator`` does (needed to give its proposals exactly).

    ``generator(feature_sizes, device, dtype)`` returns one Tensor[H_l * W_l * A, 4] per level,
    cached per (feature sizes, device, dtype): an input size is computed once.
    """

    def __init__(self, *, sizes: Sequence[float] = (32, 64, 128, 256, 512),
                 strides: Sequence[int] = (8, 16, 32, 64, 128),
                 scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), offset: float = 0.5,
                 round_half_sizes: bool = False):
        if len(sizes) != len(strides):
            raise ValueError(f"AnchorGenerator: {len(sizes)} sizes but {len(strides)} strides; expected one per level")
        self.sizes, self.strides = tuple(float(s) for s in sizes), tuple(int(s) for s in strides)
        self.scales, self.aspect_ratios = tuple(scales), tuple(aspect_ratios)
        self.offset, self.round_half_sizes = float(offset), bool(round_half_sizes)
        self._cache: dict = {}

    @property
    def num_anchors(self) -> int:
        """A, the same on every level."""
        return len(self.scales) * len(self.aspect_ratios)

    def shapes(self, level: int) -> Tensor:
        """(w, h) of the A anchors of a level: Tensor[A, 2] float64, ratios outer, scales inner."""
        wh = []
        for ratio in self.aspect_ratios:
            for scale in self.scales:
                area = (self.sizes[level] * scale) ** 2
                w = math.sqrt(area / ratio)
                wh.append((w, w * ratio))
        wh = torch.tensor(wh, dtype=torch.float64)
        return 2 * torch.round(wh / 2) if self.round_half_sizes else wh

    def __call__(self, feature_sizes: Sequence[tuple[int, int]], device=None, dtype=torch.float32) -> list[Tensor]:
        if len(feature_sizes) != len(self.strides):
            raise ValueError(f"AnchorGenerator: got {len(feature_sizes)} feature maps, expected {len(self.strides)} levels")
        key = (tuple(tuple(int(v) for v in s) for s in feature_sizes), str(device), dtype)
        if key not in self._cache:
            out = []
            for level, ((h, w), s) in enumerate(zip(key[0], self.strides)):
                centres = _grid(h, w, s, s, device, torch.float64, self.offset)
                out.append(_place(centres, self.shapes(level).to(device)).to(dtype))
            self._cache[key] = out
        return self._cache[key]


class DefaultBoxGenerator:
    """SSD default boxes with the SSDLite settings of the TF object-detection API.

    Scales grow linearly from ``min_scale`` to ``max_scale`` over the levels (as fractions of
    the image side). Every level has a box per aspect ratio at its scale plus a square box of
    scale ``sqrt(s_l * s_{l+1})``; with ``reduce_lowest`` the first level has only
    (0.1, ratio 1), (s_0, 2) and (s_0, 1/2): 3 boxes instead of 6, as SSDLite does.
    Box width ``s * sqrt(r) * W``, height ``s / sqrt(r) * H`` for an H x W input; centres at the
    cell centres of each level's grid spread over the input.

    With ``level_ratios`` (mmdet's SSD layout, e.g. ``((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))``:
    4/6/6/6/4/4 boxes) level l instead has (s_l, 1), (sqrt(s_l s_{l+1}), 1) and (s_l, r), (s_l, 1/r)
    for each r of ``level_ratios[l]``; ``aspect_ratios`` and ``reduce_lowest`` then do not apply.

    ``generator(feature_sizes, image_shape, device, dtype)`` returns one Tensor[H_l * W_l * A_l, 4]
    per level, cached per (feature sizes, image shape, device, dtype).
    """

    def __init__(self, *, num_levels: int = 6, min_scale: float = 0.2, max_scale: float = 0.95,
                 aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 1 / 3), reduce_lowest: bool = True,
                 level_ratios: Optional[Sequence[Sequence[float]]] = None):
        if num_levels < 2:
            raise ValueError(f"DefaultBoxGenerator: num_levels must be >= 2, got {num_levels}")
        if level_ratios is not None and len(level_ratios) != num_levels:
            raise ValueError(f"DefaultBoxGenerator: {len(level_ratios)} level_ratios for {num_levels} levels")
        self.level_ratios = None if level_ratios is None else tuple(tuple(float(r) for r in rs) for rs in level_ratios)
        self.num_levels = num_levels
        self.scales = [min_scale + (max_scale - min_scale) * i / (num_levels - 1) for i in range(num_levels)] + [1.0]
        self.aspect_ratios = tuple(aspect_ratios)
        self.reduce_lowest = reduce_lowest
        self._cache: dict = {}

    def shapes(self, level: int) -> list[tuple[float, float]]:
        """(scale, aspect ratio w/h) of each box of a level."""
        s = self.scales[level]
        if self.level_ratios is not None:
            pairs = [(s, r) for ratio in self.level_ratios[level] for r in (ratio, 1 / ratio)]
            return [(s, 1.0), (math.sqrt(s * self.scales[level + 1]), 1.0)] + pairs
        if level == 0 and self.reduce_lowest:
            return [(0.1, 1.0), (s, 2.0), (s, 0.5)]
        return [(s, r) for r in self.aspect_ratios] + [(math.sqrt(s * self.scales[level + 1]), 1.0)]

    @property
    def num_anchors(self) -> list[int]:
        """A_l of each level."""
        return [len(self.shapes(level)) for level in range(self.num_levels)]

    def __call__(self, feature_sizes: Sequence[tuple[int, int]], image_shape: tuple[int, int], device=None,
                 dtype=torch.float32) -> list[Tensor]:
        if len(feature_sizes) != self.num_levels:
            raise ValueError(f"DefaultBoxGenerator: got {len(feature_sizes)} feature maps, expected {self.num_levels}")
        img_h, img_w = (int(v) for v in image_shape)
        key = (tuple(tuple(int(v) for v in s) for s in feature_sizes), (img_h, img_w), str(device), dtype)
        if key not in self._cache:
            out = []
            for level, (h, w) in enumerate(key[0]):
                wh = torch.tensor([(s * math.sqrt(r) * img_w, s / math.sqrt(r) * img_h) for s, r in self.shapes(level)],
                                  dtype=torch.float64, device=device)
                centres = _grid(h, w, img_h / h, img_w / w, device, torch.float64)
                out.append(_place(centres, wh).to(dtype))
            self._cache[key] = out
        return self._cache[key]


class BoxCoder:
    """Boxes <-> deltas relative to reference boxes (R-CNN parametrisation):
    ``(wx * dx / w_a, wy * dy / h_a, ww * log(w / w_a), wh * log(h / h_a))``.

    ``weights=(1, 1, 1, 1)`` for RetinaNet; SSD's variances (0.1, 0.2) are ``(10, 10, 5, 5)``.
    Decoded log-sizes are clamped at ``log(1000 / 16)`` so an untrained net cannot overflow exp.
    """

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), clamp: float = math.log(1000.0 / 16)):
        self.weights = tuple(float(w) for w in weights)
        self.clamp = clamp

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """boxes, anchors: Tensor[N, 4] -> deltas Tensor[N, 4]."""
        wx, wy, ww, wh = self.weights
        aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
        ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        bx, by = boxes[:, 0] + 0.5 * bw, boxes[:, 1] + 0.5 * bh
        return torch.stack([wx * (bx - ax) / aw, wy * (by - ay) / ah,
                            ww * torch.log(bw / aw), wh * torch.log(bh / ah)], dim=1)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """deltas, anchors: Tensor[N, 4] -> boxes Tensor[N, 4] (x1, y1, x2, y2)."""
        wx, wy, ww, wh = self.weights
        aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
        ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
        cx = deltas[:, 0] / wx * aw + ax
        cy = deltas[:, 1] / wy * ah + ay
        w = torch.exp((deltas[:, 2] / ww).clamp(max=self.clamp)) * aw
        h = torch.exp((deltas[:, 3] / wh).clamp(max=self.clamp)) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)
