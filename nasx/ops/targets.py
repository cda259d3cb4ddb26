"""Training-target assignment: FCOS points, IoU anchor matching (Matcher) and ATSS.

Letters: P points, N anchors, G GT boxes, B images. Boxes are (x1, y1, x2, y2) in
pixels. No op builds a P x G or N x G tensor: memory is O(P + G), so images with
thousands of GTs work.
"""
from typing import Optional, Sequence

import torch
from torch import Tensor

from nasx.ops._checks import FLOAT_DTYPES, check_boxes

__all__ = ["fcos_targets", "fcos_targets_batched", "match_anchors", "atss_assign"]


def fcos_targets(
    points: Tensor,
    strides: Tensor,
    size_ranges: Tensor,
    gt_boxes: Tensor,
    center_radius: Optional[float] = 1.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """FCOS target assignment (Tian et al. 2019), with the rules of the authors' code.

    A point is a candidate for a GT if it lies strictly inside the box -- or, with
    center sampling (``center_radius`` not None), strictly inside the square of
    half-size ``center_radius * stride`` around the box centre, clipped to the box --
    and ``max(l, t, r, b)`` lies within ``[lo, hi]`` of its level (both inclusive).
    Among candidates the GT of smallest area ``(x2 - x1) * (y2 - y1)`` wins; equal
    areas go to the lower GT index.

    Args:
        points (Tensor[P, 2]): point locations (x, y), all levels concatenated, floating point.
        strides (Tensor[P]): each point's level stride (for center sampling).
        size_ranges (Tensor[P, 2]): each point's (lo, hi) regression range; ``inf`` allowed.
        gt_boxes (Tensor[G, 4]): GT boxes, floating point, same device.
        center_radius (float or None): center-sampling radius in strides; None for plain FCOS.

    Returns:
        (gt_index Tensor[P] int64, reg_targets Tensor[P, 4], centerness Tensor[P]):
        the assigned GT (-1 for background), the (l, t, r, b) distances to its sides
        (0 for background) and ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``
        (0 for background), in the promoted dtype of points and gt_boxes.
    """
    return torch.ops.nasx.fcos_targets.default(points, strides, size_ranges, gt_boxes, _radius(center_radius))


def fcos_targets_batched(
    points: Tensor,
    strides: Tensor,
    size_ranges: Tensor,
    gt_boxes: Tensor,
    gt_valid: Tensor,
    center_radius: Optional[float] = 1.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`fcos_targets` for a batch of images with padded GT tensors, in one call.

    Args:
        points, strides, size_ranges: as :func:`fcos_targets`, shared by all images.
        gt_boxes (Tensor[B, G, 4]): each image's GTs, padded to G.
        gt_valid (Tensor[B, G] bool or Tensor[B] integer): which GTs are real: a mask,
            or per-image counts (the first ``count`` GTs of an image are real).
        center_radius (float or None): as :func:`fcos_targets`.

    Returns:
        (Tensor[B, P] int64, Tensor[B, P, 4], Tensor[B, P]): per image as
        :func:`fcos_targets`; gt indices point into the padded G dimension.
    """
    if gt_valid.dtype != torch.bool:
        gt_valid = _counts_to_mask(gt_valid, gt_boxes)
    return torch.ops.nasx.fcos_targets_batched.default(
        points, strides, size_ranges, gt_boxes, gt_valid, _radius(center_radius)
    )


def match_anchors(
    anchors: Tensor,
    gt_boxes: Tensor,
    high_threshold: float,
    low_threshold: float,
    allow_low_quality_matches: bool = False,
) -> tuple[Tensor, Tensor]:
    """IoU matching, exactly torchvision's detection ``Matcher`` on ``box_iou(gt_boxes, anchors)``.

    Each anchor takes the GT of highest IoU (the first on ties; a NaN IoU wins, as
    torch.max), then is labelled -1 if that IoU < ``low_threshold`` and -2 if it is in
    ``[low_threshold, high_threshold)``. With ``allow_low_quality_matches``, every
    anchor on which some GT reaches that GT's own highest IoU (ties included) keeps
    its best GT whatever the thresholds. Thresholds are compared in the IoU's dtype,
    as torch does with Python floats.

    Args:
        anchors (Tensor[N, 4]): anchor boxes, floating point.
        gt_boxes (Tensor[G, 4]): GT boxes, same device.
        high_threshold (float): IoU at or above which an anchor is foreground.
        low_threshold (float): IoU below which an anchor is background; <= high_threshold.
        allow_low_quality_matches (bool): Faster R-CNN's rule that every GT gets its best anchors.

    Returns:
        (matched Tensor[N] int64, max_iou Tensor[N]): the GT index, -1 or -2, and the
        anchor's highest IoU over the GTs. With G = 0 every anchor is -1 with IoU 0
        (torchvision raises).
    """
    return torch.ops.nasx.match_anchors.default(
        anchors, gt_boxes, float(high_threshold), float(low_threshold), bool(allow_low_quality_matches)
    )


def atss_assign(
    anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor, topk: int = 9
) -> tuple[Tensor, Tensor]:
    """Adaptive training sample selection (Zhang et al. 2020), as the authors' code.

    For each GT: on every pyramid level the ``topk`` anchors whose centres are
    closest to the GT centre (distance ``sqrt(dx^2 + dy^2)``; equal distances by
    anchor index, NaN last) are candidates; the GT's IoU threshold is the mean plus
    the unbiased standard deviation of the candidates' IoUs (computed in float64;
    with a single candidate the std is NaN and nothing is positive, as torch.std);
    candidates with IoU >= threshold whose centre lies inside the GT by more than
    0.01 px on every side (the authors' epsilon) are positives. An anchor positive
    for several GTs takes the one with the highest IoU, the lower index on ties.

    Args:
        anchors (Tensor[N, 4]): anchor boxes of all levels, concatenated level by level.
        num_anchors_per_level (list[int]): anchors per level, summing to N.
        gt_boxes (Tensor[G, 4]): GT boxes, same device.
        topk (int): candidates per level and GT (9 in the paper, times anchors per location).

    Returns:
        (matched Tensor[N] int64, iou Tensor[N]): the assigned GT (-1 for background)
        and the IoU with it (0 for background).
    """
    return torch.ops.nasx.atss_assign.default(anchors, [int(c) for c in num_anchors_per_level], gt_boxes, int(topk))


def _radius(center_radius):
    return None if center_radius is None else float(center_radius)


def _counts_to_mask(counts: Tensor, gt_boxes: Tensor) -> Tensor:
    op = "fcos_targets_batched"
    if counts.is_floating_point() or counts.is_complex() or counts.dim() != 1 or gt_boxes.dim() != 3:
        raise TypeError(
            f"{op}: expected gt_valid to be a bool mask [B, G] or integer counts [B], "
            f"got {counts.dtype} of shape {list(counts.shape)}"
        )
    if counts.shape[0] != gt_boxes.shape[0]:
        raise ValueError(f"{op}: expected one count per image (B = {gt_boxes.shape[0]}), got shape {list(counts.shape)}")
    g = gt_boxes.shape[1]
    if not torch.compiler.is_compiling() and counts.numel() and bool(((counts < 0) | (counts > g)).any()):
        raise ValueError(f"{op}: expected counts in [0, G = {g}], got {counts.tolist()}")
    return torch.arange(g, device=counts.device) < counts[:, None].to(counts.device)


# Fake kernels: shapes and dtypes, for torch.compile.
def _check_points(points, strides, size_ranges, op):
    torch._check(points.dtype in FLOAT_DTYPES, lambda: f"{op}: expected points to be a floating-point tensor, got {points.dtype}")
    torch._check(
        points.dim() == 2 and points.shape[1] == 2,
        lambda: f"{op}: expected points of shape [P, 2] (x, y), got shape {list(points.shape)}",
    )
    p = points.shape[0]
    torch._check(
        strides.dim() == 1 and strides.shape[0] == p,
        lambda: f"{op}: expected strides of shape [P] with P = points.size(0) = {p}, got shape {list(strides.shape)}",
    )
    torch._check(
        size_ranges.dim() == 2 and size_ranges.shape[0] == p and size_ranges.shape[1] == 2,
        lambda: f"{op}: expected size_ranges of shape [P, 2] (lo, hi) with P = points.size(0) = {p}, "
        f"got shape {list(size_ranges.shape)}",
    )


@torch.library.register_fake("nasx::fcos_targets")
def _fcos_targets_fake(points, strides, size_ranges, gt_boxes, center_radius):
    _check_points(points, strides, size_ranges, "fcos_targets")
    check_boxes(gt_boxes, "fcos_targets", "gt_boxes")
    dtype = torch.promote_types(points.dtype, gt_boxes.dtype)
    p = points.shape[0]
    return (
        points.new_empty((p,), dtype=torch.int64),
        points.new_empty((p, 4), dtype=dtype),
        points.new_empty((p,), dtype=dtype),
    )


@torch.library.register_fake("nasx::fcos_targets_batched")
def _fcos_targets_batched_fake(points, strides, size_ranges, gt_boxes, gt_valid, center_radius):
    op = "fcos_targets_batched"
    _check_points(points, strides, size_ranges, op)
    torch._check(
        gt_boxes.dim() == 3 and gt_boxes.shape[2] == 4,
        lambda: f"{op}: expected gt_boxes of shape [B, G, 4] (x1, y1, x2, y2), got shape {list(gt_boxes.shape)}",
    )
    torch._check(gt_valid.dtype == torch.bool, lambda: f"{op}: expected gt_valid to be a bool tensor, got {gt_valid.dtype}")
    dtype = torch.promote_types(points.dtype, gt_boxes.dtype)
    b, p = gt_boxes.shape[0], points.shape[0]
    return (
        points.new_empty((b, p), dtype=torch.int64),
        points.new_empty((b, p, 4), dtype=dtype),
        points.new_empty((b, p), dtype=dtype),
    )


@torch.library.register_fake("nasx::match_anchors")
def _match_anchors_fake(anchors, gt_boxes, high_threshold, low_threshold, allow_low_quality_matches):
    check_boxes(anchors, "match_anchors", "anchors")
    check_boxes(gt_boxes, "match_anchors", "gt_boxes")
    n = anchors.shape[0]
    dtype = torch.promote_types(anchors.dtype, gt_boxes.dtype)
    return anchors.new_empty((n,), dtype=torch.int64), anchors.new_empty((n,), dtype=dtype)


@torch.library.register_fake("nasx::atss_assign")
def _atss_assign_fake(anchors, num_anchors_per_level, gt_boxes, topk):
    check_boxes(anchors, "atss_assign", "anchors")
    check_boxes(gt_boxes, "atss_assign", "gt_boxes")
    n = anchors.shape[0]
    dtype = torch.promote_types(anchors.dtype, gt_boxes.dtype)
    return anchors.new_empty((n,), dtype=torch.int64), anchors.new_empty((n,), dtype=dtype)
