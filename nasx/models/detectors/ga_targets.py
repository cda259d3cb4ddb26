"""Training targets and the shape loss of GA-RPN's anchor-generation branches (Wang et al. 2019,
"Region Proposal by Guided Anchoring"), used by :class:`nasx.models.detectors.ga_rpn.GARPN`.

Letters: L levels, H_l x W_l the size of level l, N locations over all levels (level by level, row
by row), A approximate anchors per location, G GT boxes, M selected locations. Boxes are
(x1, y1, x2, y2) in pixels; location j of a level of stride s is centred at ``(j + 0.5) * s``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from nasx.ops import match_anchors

__all__ = ["approx_shape_assign", "bounded_iou_shape_loss", "demote_weak_matches", "gt_levels", "location_targets",
           "valid_gt_boxes"]


def valid_gt_boxes(boxes: Tensor) -> Tensor:
    """The GTs with a finite, positive width and height: Tensor[G', 4]. A zero-width box has no
    shape to learn and an IoU of 0 with every anchor, so it is no target at all."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes[torch.isfinite(boxes).all(dim=1) & (w > 0) & (h > 0)]


def gt_levels(boxes: Tensor, base_size: float, num_levels: int) -> Tensor:
    """The level of each GT (Tensor[G] int64): ``round(log2(sqrt(w h) / base_size))`` clamped to
    [0, L - 1], with ``base_size`` the anchor scale of level 0 (``octave_base_scale * strides[0]``).
    mmdet rounds (``floor(x + 0.5)``): a GT goes to the level whose base anchor is nearest in log scale."""
    w, h = (boxes[:, 2] - boxes[:, 0]).clamp(min=0), (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    scale = torch.sqrt(w * h)
    # log2(0) = -inf clamps to level 0; nothing here can be NaN.
    level = torch.floor(torch.log2(scale / base_size) + 0.5)
    return level.clamp(min=0, max=num_levels - 1).long()


def _region(boxes: Tensor, ratio: float, stride: int, size: tuple[int, int]) -> Tensor:
    """Cells of an H x W level whose centres lie in the central ``ratio`` part of any of the K boxes
    (each box's own centre cell always included, so small boxes keep one cell): Tensor[H, W] bool."""
    h, w = size
    if boxes.numel() == 0:
        return torch.zeros(h, w, dtype=torch.bool, device=boxes.device)
    shrink = (1 - ratio) / 2
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    a = torch.stack([boxes[:, 0] + shrink * bw, boxes[:, 1] + shrink * bh], dim=1) / stride  # (K, 2) x, y
    b = torch.stack([boxes[:, 2] - shrink * bw, boxes[:, 3] - shrink * bh], dim=1) / stride
    centre = torch.floor((a + b) / 2)
    limit = torch.tensor([w - 1, h - 1], device=boxes.device, dtype=boxes.dtype)
    # Cell j's centre j + 0.5 lies in [a, b] for ceil(a - 0.5) <= j <= floor(b - 0.5).
    lo = torch.minimum(torch.ceil(a - 0.5), centre).clamp(min=0)
    hi = torch.maximum(torch.floor(b - 0.5), centre)
    lo, hi = torch.minimum(lo, limit).long(), torch.minimum(hi, limit).long()  # (K, 2)
    xs = torch.arange(w, device=boxes.device)
    ys = torch.arange(h, device=boxes.device)
    in_x = (xs >= lo[:, :1]) & (xs <= hi[:, :1])                                 # (K, W)
    in_y = (ys >= lo[:, 1:]) & (ys <= hi[:, 1:])                                 # (K, H)
    return (in_y[:, :, None] & in_x[:, None, :]).any(dim=0)


def location_targets(gt_boxes: Tensor, strides: Sequence[int], sizes: Sequence[tuple[int, int]], base_size: float,
                     center_ratio: float = 0.2, ignore_ratio: float = 0.5) -> tuple[Tensor, Tensor]:
    """Targets of the location branch for one image (GA paper §3.3, "anchor location targets").

    Each GT goes to the level of its scale (:func:`gt_levels`). There the cells of its centre region
    (the central ``center_ratio`` of the box) are positive and the rest of its ignore region (the
    central ``ignore_ratio``) is ignored; its ignore region is also ignored on the two adjacent
    levels. Every other cell is negative. Where GTs overlap, positive beats ignored beats negative.

    Args:
        gt_boxes: Tensor[G, 4] non-degenerate GTs (see :func:`valid_gt_boxes`).
        strides, sizes: stride and (H_l, W_l) of each level.
        base_size: anchor scale of level 0, ``octave_base_scale * strides[0]``.

    Returns:
        (targets Tensor[N] float, 1 positive and 0 otherwise; valid Tensor[N] bool, False where ignored).
    """
    levels = gt_levels(gt_boxes, base_size, len(strides))
    targets, valid = [], []
    for level, (stride, size) in enumerate(zip(strides, sizes)):
        own = gt_boxes[levels == level]
        near = gt_boxes[(levels - level).abs() == 1]
        pos = _region(own, center_ratio, stride, size)                                  # (H_l, W_l)
        ignore = _region(own, ignore_ratio, stride, size) | _region(near, ignore_ratio, stride, size)
        targets.append(pos.flatten().to(gt_boxes.dtype))
        valid.append((pos | ~ignore).flatten())
    return torch.cat(targets), torch.cat(valid)


def demote_weak_matches(matched: Tensor, iou: Tensor, bg_iou: float, min_pos_iou: float) -> Tensor:
    """``nasx.ops.match_anchors`` labels with low-quality matches below ``min_pos_iou`` undone, as
    mmdet's ``MaxIoUAssigner(min_pos_iou=...)``: such an anchor is negative below ``bg_iou``, else
    ignored. (torchvision's rule keeps every GT's best anchor however poor.)"""
    weak = (matched >= 0) & (iou < min_pos_iou)
    return torch.where(weak, torch.where(iou < bg_iou, -1, -2), matched)


def approx_shape_assign(approxs: Tensor, gt_boxes: Tensor, fg_iou: float = 0.7, bg_iou: float = 0.3,
                        min_pos_iou: float = 0.3) -> Tensor:
    """GT of each location for the shape branch (GA paper §3.3, "anchor shape targets"; mmdet's
    ``ApproxMaxIoUAssigner``): a location's IoU with a GT is the best over its A approximate
    anchors (3 scales x 3 ratios), standing in for the best anchor shape at that location.

    The A x N approximates are matched by ``nasx.ops.match_anchors`` (fg / bg thresholds, every GT's
    best ones kept if at least ``min_pos_iou``); a location takes the label of its best approximate,
    positives before the rest: a GT index, -1 negative or -2 ignored.

    Args:
        approxs: Tensor[N, A, 4]; gt_boxes: Tensor[G, 4].

    Returns:
        Tensor[N] int64.
    """
    n, a, _ = approxs.shape
    matched, iou = match_anchors(approxs.reshape(-1, 4), gt_boxes, fg_iou, bg_iou, True)  # (N * A,)
    matched = demote_weak_matches(matched, iou, bg_iou, min_pos_iou).view(n, a)
    # IoU is in [0, 1]: +2 ranks any positive approximate above every non-positive one.
    key = iou.view(n, a) + 2.0 * (matched >= 0)
    return matched.gather(1, key.argmax(dim=1, keepdim=True)).squeeze(1)


def bounded_iou_shape_loss(pred_wh: Tensor, gt_wh: Tensor, beta: float = 0.2, eps: float = 1e-3) -> Tensor:
    """The GA paper's shape loss (eq. 5, the bounded IoU loss of Tychsen-Smith & Petersson 2018 on
    width and height): ``smooth_l1(1 - min(w / w_g, w_g / w)) + (the same for h)``, smooth L1 with
    ``beta``. pred_wh, gt_wh: Tensor[M, 2] -> Tensor[M].

    mmdet's ``BoundedIoULoss`` also has centre terms; a guided anchor keeps its cell's centre, so
    they are constants without gradient and are left out. ``eps`` (mmdet's) keeps a zero size finite.
    """
    ratio = torch.minimum(gt_wh / (pred_wh + eps), pred_wh / (gt_wh + eps))
    d = 1 - ratio                                                                   # (M, 2)
    loss = torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    return loss.sum(dim=1)
