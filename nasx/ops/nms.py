"""Non-maximum suppression: greedy, per category, and soft.

NaN policy (all three ops, both devices): a box whose score is NaN is never kept
and never suppresses another box. A box with a NaN or infinite coordinate has an
undefined IoU with every other box, which counts as no overlap: it is kept or
dropped on its score alone. ``iou_threshold`` itself must not be NaN.
"""
import torch
from torch import Tensor

from nasx.ops._checks import check_boxes, check_scores, dynamic_length
from nasx.ops._quantized import nms_operand, reject_quantized

__all__ = ["nms", "batched_nms", "soft_nms"]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, identical to ``torchvision.ops.nms``.

    Repeatedly keeps the highest-scoring remaining box and discards every
    remaining box whose IoU with it is greater than ``iou_threshold``.

    Args:
        boxes (Tensor[N, 4]): boxes as (x1, y1, x2, y2), floating point.
        scores (Tensor[N]): one score per box, floating point, same device.
        iou_threshold (float): boxes overlapping a kept box by IoU > this are discarded.

    Quantized boxes and scores (``torch.quantize_per_tensor``) are read as torchvision's
    quantized NMS reads them: by their integer values (IoU and the score order do not
    depend on the scale and zero point), the IoUs in float32 as there.

    Returns:
        Tensor[K] int64: indices of the kept boxes in decreasing score order;
        equal scores keep the lower index first.
    """
    return torch.ops.nasx.nms(nms_operand(boxes), nms_operand(scores), float(iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category, identical to ``torchvision.ops.batched_nms``.

    Boxes of different categories never suppress each other. Unlike torchvision's
    coordinate-offset trick, categories are compared exactly, so large coordinates
    and many categories lose no precision.

    Args:
        boxes (Tensor[N, 4]): boxes as (x1, y1, x2, y2), floating point.
        scores (Tensor[N]): one score per box.
        idxs (Tensor[N]): integer category of each box.
        iou_threshold (float): IoU above which a lower-scoring box of the same category is discarded.

    Quantized boxes and scores are read as :func:`nms` reads them. With no boxes the
    result is an empty int64 tensor whatever ``scores`` and ``idxs`` are (``None``
    included), as torchvision's.

    Returns:
        Tensor[K] int64: kept indices in decreasing score order (ties: lower index first).
    """
    if boxes.numel() == 0:  # torchvision returns here without reading scores or idxs
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    return torch.ops.nasx.batched_nms(nms_operand(boxes), nms_operand(scores), idxs, float(iou_threshold))


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "gaussian",
) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al. 2017): decay overlapping scores instead of discarding.

    Repeatedly selects the remaining box with the highest current score (ties:
    lower index), then multiplies every remaining score by ``exp(-iou**2 / sigma)``
    (``method="gaussian"``; ``iou_threshold`` is unused) or by ``1 - iou`` where
    ``iou > iou_threshold`` (``method="linear"``), and drops boxes whose score falls
    below ``score_threshold``. Boxes that start below it are dropped too.

    Args:
        boxes (Tensor[N, 4]): boxes as (x1, y1, x2, y2), floating point.
        scores (Tensor[N]): one score per box.
        iou_threshold (float): overlap above which ``linear`` decays.
        sigma (float): width of the gaussian penalty, > 0.
        score_threshold (float): scores below this are dropped.
        method (str): ``"gaussian"`` or ``"linear"``.

    Returns:
        (Tensor[K] int64, Tensor[K]): kept indices in selection order, and each kept
        box's decayed score at the time it was selected (non-increasing).
    """
    reject_quantized("soft_nms", "boxes", boxes)
    reject_quantized("soft_nms", "scores", scores)
    return torch.ops.nasx.soft_nms(
        boxes, scores, float(iou_threshold), float(sigma), float(score_threshold), str(method)
    )


# Fake kernels: the number of kept boxes depends on the data.
@torch.library.register_fake("nasx::nms")
def _nms_fake(boxes, scores, iou_threshold):
    check_boxes(boxes, "nms", "boxes")
    check_scores(scores, boxes, "nms")
    return boxes.new_empty((dynamic_length(),), dtype=torch.int64)


@torch.library.register_fake("nasx::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    check_boxes(boxes, "batched_nms", "boxes")
    check_scores(scores, boxes, "batched_nms")
    return boxes.new_empty((dynamic_length(),), dtype=torch.int64)


@torch.library.register_fake("nasx::soft_nms")
def _soft_nms_fake(boxes, scores, iou_threshold, sigma, score_threshold, method):
    check_boxes(boxes, "soft_nms", "boxes")
    check_scores(scores, boxes, "soft_nms")
    n = dynamic_length()
    return boxes.new_empty((n,), dtype=torch.int64), scores.new_empty((n,))
