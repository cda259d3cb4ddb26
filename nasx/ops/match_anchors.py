"""IoU anchor matching (torchvision's detection Matcher) without the G x N IoU matrix.

Letters: N anchors, G GT boxes. Boxes are (x1, y1, x2, y2) in pixels; memory is O(N + G).
"""
import torch
from torch import Tensor

from nasx.ops._checks import check_boxes
from nasx.ops._quantized import reject_quantized

__all__ = ["match_anchors"]


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
    reject_quantized("match_anchors", "anchors", anchors)
    reject_quantized("match_anchors", "gt_boxes", gt_boxes)
    return torch.ops.nasx.match_anchors(
        anchors, gt_boxes, float(high_threshold), float(low_threshold), bool(allow_low_quality_matches)
    )


# Fake kernel: shapes and dtypes, for torch.compile.
@torch.library.register_fake("nasx::match_anchors")
def _match_anchors_fake(anchors, gt_boxes, high_threshold, low_threshold, allow_low_quality_matches):
    check_boxes(anchors, "match_anchors", "anchors")
    check_boxes(gt_boxes, "match_anchors", "gt_boxes")
    n = anchors.shape[0]
    dtype = torch.promote_types(anchors.dtype, gt_boxes.dtype)
    return anchors.new_empty((n,), dtype=torch.int64), anchors.new_empty((n,), dtype=dtype)
