"""Adaptive training sample selection (ATSS): per-GT IoU thresholds from the closest anchors.

Letters: N anchors, G GT boxes. Boxes are (x1, y1, x2, y2) in pixels; memory is O(N + G).
"""
from typing import List

import torch
from torch import Tensor

from nasx.ops._checks import check_boxes

__all__ = ["atss_assign"]


def atss_assign(
    anchors: Tensor, num_anchors_per_level: List[int], gt_boxes: Tensor, topk: int = 9
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
        num_anchors_per_level (list[int]): anchors per level, summing to N (any sequence of ints
            outside TorchScript).
        gt_boxes (Tensor[G, 4]): GT boxes, same device.
        topk (int): candidates per level and GT (9 in the paper, times anchors per location).

    Returns:
        (matched Tensor[N] int64, iou Tensor[N]): the assigned GT (-1 for background)
        and the IoU with it (0 for background).
    """
    counts: List[int] = [int(c) for c in num_anchors_per_level]  # any sequence of ints, eagerly
    return torch.ops.nasx.atss_assign(anchors, counts, gt_boxes, int(topk))


# Fake kernel: shapes and dtypes, for torch.compile.
@torch.library.register_fake("nasx::atss_assign")
def _atss_assign_fake(anchors, num_anchors_per_level, gt_boxes, topk):
    check_boxes(anchors, "atss_assign", "anchors")
    check_boxes(gt_boxes, "atss_assign", "gt_boxes")
    n = anchors.shape[0]
    dtype = torch.promote_types(anchors.dtype, gt_boxes.dtype)
    return anchors.new_empty((n,), dtype=torch.int64), anchors.new_empty((n,), dtype=dtype)
