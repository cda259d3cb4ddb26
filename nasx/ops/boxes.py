"""Pairwise overlap of box sets."""
import torch
from torch import Tensor

from nasx.ops._checks import check_boxes

__all__ = ["box_iou", "generalized_box_iou"]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair of boxes, as ``torchvision.ops.box_iou``.

    Args:
        boxes1 (Tensor[N, 4]): boxes as (x1, y1, x2, y2), floating point.
        boxes2 (Tensor[M, 4]): boxes as (x1, y1, x2, y2), on the same device.

    Returns:
        Tensor[N, M]: ``out[i, j]`` is the IoU of ``boxes1[i]`` and ``boxes2[j]``, in
        the promoted dtype of the inputs (float16/bfloat16 inputs are computed in
        float32; under autocast the result is float32). Pairs of zero-area boxes give
        0/0 = NaN and NaN coordinates give NaN, exactly as torchvision.
    """
    return torch.ops.nasx.box_iou.default(boxes1, boxes2)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU (Rezatofighi et al. 2019) of every pair, as torchvision's.

    Args:
        boxes1 (Tensor[N, 4]): boxes as (x1, y1, x2, y2) with x1 <= x2, y1 <= y2.
        boxes2 (Tensor[M, 4]): boxes as (x1, y1, x2, y2), on the same device.

    Returns:
        Tensor[N, M]: IoU minus the fraction of the smallest enclosing box not
        covered by the union, in [-1, 1]; dtype as :func:`box_iou`.
    """
    return torch.ops.nasx.generalized_box_iou.default(boxes1, boxes2)


# Fake kernels: output shape and dtype only, for torch.compile.
def _pairwise_fake(op):
    def fake(boxes1, boxes2):
        check_boxes(boxes1, op, "boxes1")
        check_boxes(boxes2, op, "boxes2")
        dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
        return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]), dtype=dtype)

    return fake


torch.library.register_fake("nasx::box_iou")(_pairwise_fake("box_iou"))
torch.library.register_fake("nasx::generalized_box_iou")(_pairwise_fake("generalized_box_iou"))
