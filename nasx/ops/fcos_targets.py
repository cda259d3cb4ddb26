"""FCOS training targets: each point's GT, box distances and centerness, one image or a padded batch.

Letters: P points, G GT boxes, B images. Boxes are (x1, y1, x2, y2) in pixels. No P x G
tensor is built: memory is O(P + G), so images with thousands of GTs work.
"""
from typing import List, Optional

import torch
from torch import Tensor

from nasx.ops._checks import check_boxes, check_fcos_batched_gts, check_fcos_points

__all__ = ["fcos_targets", "fcos_targets_batched"]


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
    return torch.ops.nasx.fcos_targets(points, strides, size_ranges, gt_boxes, _radius(center_radius))


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
    return torch.ops.nasx.fcos_targets_batched(
        points, strides, size_ranges, gt_boxes, gt_valid, _radius(center_radius)
    )


def _radius(center_radius: Optional[float]) -> Optional[float]:
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
    if counts.numel() > 0 and _checking_values() and bool(((counts < 0) | (counts > g)).any()):
        values: List[int] = counts.tolist()
        raise ValueError(f"{op}: expected counts in [0, G = {g}], got {values}")
    return torch.arange(g, device=counts.device) < counts[:, None].to(counts.device)


def _checking_values() -> bool:
    """Whether a check may read tensor values: not while torch.compile traces (no host sync in a graph)."""
    if torch.jit.is_scripting():
        return True
    else:
        return not torch.compiler.is_compiling()


# Fake kernels: shapes and dtypes, for torch.compile.
@torch.library.register_fake("nasx::fcos_targets")
def _fcos_targets_fake(points, strides, size_ranges, gt_boxes, center_radius):
    check_fcos_points(points, strides, size_ranges, "fcos_targets")
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
    check_fcos_points(points, strides, size_ranges, op)
    check_fcos_batched_gts(gt_boxes, gt_valid, op)
    dtype = torch.promote_types(points.dtype, gt_boxes.dtype)
    b, p = gt_boxes.shape[0], points.shape[0]
    return (
        points.new_empty((b, p), dtype=torch.int64),
        points.new_empty((b, p, 4), dtype=dtype),
        points.new_empty((b, p), dtype=dtype),
    )
