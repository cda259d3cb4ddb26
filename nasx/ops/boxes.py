"""Pairwise overlap of box sets.

Letters: N boxes in ``boxes1``, M in ``boxes2``, ``...`` leading (batch) dimensions.
"""
from typing import List, Tuple

import torch
from torch import Tensor

from nasx.ops._checks import check_boxes

__all__ = ["box_iou", "generalized_box_iou", "BOX_FORMATS"]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Intersection over union of every pair of boxes, as ``torchvision.ops.box_iou``.

    Args:
        boxes1 (Tensor[..., N, 4]): boxes in format ``fmt``.
        boxes2 (Tensor[..., M, 4]): boxes in format ``fmt``, on the same device; the
            leading dimensions of the two broadcast, as torchvision's.
        fmt (str): ``"xyxy"`` (x1, y1, x2, y2), ``"xywh"`` (x1, y1, w, h) or ``"cxcywh"``
            (centre x, centre y, w, h). Other formats are converted to corners first
            (``x + w``, ``cx - w / 2``: the corners torchvision's own intersection uses).

    Returns:
        Tensor[..., N, M]: ``out[..., i, j]`` is the IoU of ``boxes1[..., i, :]`` and
        ``boxes2[..., j, :]``. For ``"xyxy"`` bit-identical to torchvision, in the promoted
        dtype of the inputs (float16/bfloat16 are computed in float32 and returned in
        their dtype, where torchvision returns float32; under autocast the result is
        float32). Integer boxes raise ``TypeError`` (torchvision takes them); quantized
        boxes are dequantized. Pairs of zero-area boxes give 0/0 = NaN and NaN
        coordinates give NaN, exactly as torchvision.
    """
    boxes1, boxes2 = _operands(boxes1, boxes2, fmt, "box_iou")
    return _pairwise(boxes1, boxes2, False)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Generalized IoU (Rezatofighi et al. 2019) of every pair, as torchvision's.

    Args:
        boxes1 (Tensor[..., N, 4]): boxes in format ``fmt``, with x1 <= x2, y1 <= y2.
        boxes2 (Tensor[..., M, 4]): boxes in format ``fmt``, on the same device.
        fmt (str): as :func:`box_iou` (torchvision's ``generalized_box_iou`` takes xyxy only).

    Returns:
        Tensor[..., N, M]: IoU minus the fraction of the smallest enclosing box not
        covered by the union, in [-1, 1]; dtype as :func:`box_iou`.
    """
    boxes1, boxes2 = _operands(boxes1, boxes2, fmt, "generalized_box_iou")
    return _pairwise(boxes1, boxes2, True)


def _operands(boxes1: Tensor, boxes2: Tensor, fmt: str, op: str) -> Tuple[Tensor, Tensor]:
    """(boxes1, boxes2) as corners, dequantized."""
    if boxes1.is_quantized:
        boxes1 = boxes1.dequantize()
    if boxes2.is_quantized:
        boxes2 = boxes2.dequantize()
    if fmt != "xyxy":
        boxes1 = _to_xyxy(boxes1, fmt, op, "boxes1")
        boxes2 = _to_xyxy(boxes2, fmt, op, "boxes2")
    return boxes1, boxes2


def _to_xyxy(boxes: Tensor, fmt: str, op: str, name: str) -> Tensor:
    if fmt != "xywh" and fmt != "cxcywh":  # (a literal: TorchScript reads no global tuple)
        raise ValueError(
            f"{op}: expected fmt 'xyxy', 'xywh' or 'cxcywh', got '{fmt}' (rotated boxes: torchvision.ops.box_iou)"
        )
    if not boxes.is_floating_point():
        raise TypeError(f"{op}: expected {name} to be a floating-point tensor, got {boxes.dtype}")
    if boxes.dim() < 2 or boxes.size(-1) != 4:
        raise ValueError(f"{op}: expected {name} of shape [N, 4] ({fmt}), got shape {list(boxes.shape)}")
    xy, wh = boxes[..., :2], boxes[..., 2:]
    if fmt == "xywh":
        return torch.cat([xy, xy + wh], -1)
    return torch.cat([xy - wh / 2, xy + wh / 2], -1)  # cxcywh


def _kernel(boxes1: Tensor, boxes2: Tensor, generalized: bool) -> Tensor:
    if generalized:
        return torch.ops.nasx.generalized_box_iou(boxes1, boxes2)
    return torch.ops.nasx.box_iou(boxes1, boxes2)


def _pairwise(boxes1: Tensor, boxes2: Tensor, generalized: bool) -> Tensor:
    if boxes1.dim() <= 2 and boxes2.dim() <= 2:
        return _kernel(boxes1, boxes2, generalized)
    # torchvision's [..., N, 4] x [..., M, 4] -> [..., N, M]: one kernel call per leading index.
    if boxes1.dim() < 2 or boxes2.dim() < 2:
        raise ValueError(
            f"expected boxes of shape [..., N, 4], got shapes {list(boxes1.shape)} and {list(boxes2.shape)}"
        )
    lead: List[int] = list(torch.broadcast_shapes(boxes1.shape[:-2], boxes2.shape[:-2]))
    n, m, batch = boxes1.size(-2), boxes2.size(-2), 1
    for size in lead:
        batch *= size
    flat1 = boxes1.expand(lead + [n, boxes1.size(-1)]).reshape(batch, n, boxes1.size(-1))
    flat2 = boxes2.expand(lead + [m, boxes2.size(-1)]).reshape(batch, m, boxes2.size(-1))
    outs = [_kernel(flat1[i], flat2[i], generalized) for i in range(flat1.size(0))]
    if len(outs) == 0:  # a zero-size leading dimension
        return flat1.new_empty(lead + [n, m], dtype=torch.promote_types(flat1.dtype, flat2.dtype))
    return torch.stack(outs).reshape(lead + [n, m])


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
