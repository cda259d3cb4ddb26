"""ONNX translations of nasx's ops, for ``torch.onnx.export(..., custom_translation_table=...)``.

Each function receives the op's arguments as ONNX values (tensors) and Python constants
(floats, ints, bools) and builds standard ONNX ops, so an exported detector runs in any ONNX
runtime without nasx:

==========================  ==============================================================
``nasx::nms``               ``NonMaxSuppression`` (one class) on the boxes' ranks, then the kept
                            indices by decreasing score, ties lower index first (nasx's order)
``nasx::batched_nms``       ``NonMaxSuppression`` with one class per category (the scores
                            spread over a categories x boxes matrix): categories compared
                            exactly, as nasx does, not by torchvision's coordinate offsets
``nasx::roi_align``         ``RoiAlign`` (avg), ``aligned`` as ``coordinate_transformation_mode``
                            ``half_pixel`` (else ``output_half_pixel``), adaptive sampling as 0
``nasx::deform_conv2d``     ``DeformConv`` (opset 19): offsets (dy, dx) per tap, v2 mask, groups
==========================  ==============================================================

Not translated, because ONNX has no counterpart and they are not inference ops of the
detectors nasx builds: ``soft_nms`` (score decay in a data-dependent loop), the target
assignment ops (``fcos_targets``, ``match_anchors``, ``atss_assign``), ``sigmoid_focal_loss``,
and the Pareto ops; :data:`UNTRANSLATED` says why for each, and the exporter names it in its error.

NonMaxSuppression runs on each box's rank (by decreasing score, equal scores lower index first) in
place of its score, so every runtime visits the boxes in nasx's order and equal scores suppress the
same boxes; NaN scores are never kept, as in nasx. At the edge: ONNX reads a box with x2 < x1 corner-
agnostic (nasx computes a negative area), and compares the IoU with the threshold in float32 (nasx in float64).
"""
from __future__ import annotations

import math

import torch
from onnxscript import opset18 as op
from onnxscript import opset19

__all__ = ["DEFORM_CONV_OPSET", "UNTRANSLATED", "nasx_batched_nms", "nasx_deform_conv2d", "nasx_nms",
           "nasx_roi_align", "translation_table"]

# DeformConv entered the default ONNX domain in opset 19.
DEFORM_CONV_OPSET = 19

UNTRANSLATED = {
    "soft_nms": "Soft-NMS decays scores in a data-dependent loop and ONNX has no such op; use nms / batched_nms "
                "at inference",
    "fcos_targets": "FCOS target assignment is a training op",
    "fcos_targets_batched": "FCOS target assignment is a training op",
    "match_anchors": "anchor matching is a training op",
    "atss_assign": "ATSS assignment is a training op",
    "sigmoid_focal_loss": "the focal loss is a training op",
    "box_iou": "not used by nasx's inference graphs; ONNX has no pairwise-IoU op",
    "generalized_box_iou": "not used by nasx's inference graphs; ONNX has no pairwise-IoU op",
    "non_dominated_sort": "a search op, not part of a detector",
    "crowding_distance": "a search op, not part of a detector",
    "hypervolume": "a search op, not part of a detector",
    "partial_order_prune": "a search op, not part of a detector",
}


def _priority(scores):
    """Scores Tensor[N] -> the order NMS visits the boxes in, as distinct float keys Tensor[N]: -(rank by
    decreasing score, equal scores lower index first), and -inf for NaN scores, never kept. ONNX leaves
    the order of equal scores to the runtime; with the rank as the score every runtime visits the boxes
    in nasx's order, so ties suppress the same boxes (and a -inf score is kept, as nasx keeps it)."""
    n = op.Shape(scores, start=0, end=1)
    _, order = op.TopK(scores, n, largest=1, sorted=1)                      # ties: lower index first
    positions = op.Range(op.Constant(value_int=0), op.Squeeze(n), op.Constant(value_int=1))
    rank = op.ScatterElements(positions, order, positions)                  # rank[order[i]] = i: a permutation
    key = op.Neg(op.Cast(rank, to=1))                                         # float32: exact below 2^24 boxes
    return op.Where(op.IsNaN(scores), op.Constant(value_float=-math.inf), key)


def _suppress_at(boxes, class_keys, keys, iou_threshold: float):
    """NonMaxSuppression of boxes Tensor[N, 4] under class_keys Tensor[C, N] (-inf: not in that class;
    every box may be kept) -> kept box indices Tensor[S], in nasx's order (by key: by score, then index)."""
    n = op.Shape(boxes, start=0, end=1)
    selected = op.NonMaxSuppression(op.Unsqueeze(op.Cast(boxes, to=1), [0]), op.Unsqueeze(class_keys, [0]), n,
                                    op.Constant(value_floats=[float(iou_threshold)]),
                                    op.Constant(value_floats=[-math.inf]))
    keep = op.Reshape(op.Slice(selected, [2], [3], [1]), [-1])             # (S,): column 2 is the box
    _, order = op.TopK(op.Gather(keys, keep, axis=0), op.Shape(keep, start=0, end=1), largest=1, sorted=1)
    return op.Gather(keep, order, axis=0)


def nasx_nms(boxes, scores, iou_threshold: float):
    """``nasx::nms(boxes[N, 4], scores[N], iou_threshold) -> keep[K]``."""
    keys = _priority(scores)
    return _suppress_at(boxes, op.Unsqueeze(keys, [0]), keys, iou_threshold)


def nasx_batched_nms(boxes, scores, idxs, iou_threshold: float):
    """``nasx::batched_nms(boxes[N, 4], scores[N], idxs[N], iou_threshold) -> keep[K]``: category c of
    box n holds its key in row c - min(idxs) of a C x N matrix, -inf elsewhere, so NonMaxSuppression
    compares only boxes of one category (C = the span of the categories present)."""
    idxs = op.Cast(idxs, to=7)  # int64
    padded = op.Concat(idxs, op.Constant(value_ints=[0]), axis=0)   # never empty: ReduceMin/Max of [] is ±inf
    low = op.ReduceMin(padded, keepdims=1)
    span = op.Add(op.Sub(op.ReduceMax(padded, keepdims=0), op.Squeeze(low)), op.Constant(value_int=1))
    rows = op.Range(op.Constant(value_int=0), span, op.Constant(value_int=1))          # (C,)
    member = op.Equal(op.Unsqueeze(rows, [1]), op.Unsqueeze(op.Sub(idxs, low), [0]))   # (C, N)
    keys = _priority(scores)
    class_keys = op.Where(member, op.Unsqueeze(keys, [0]), op.Constant(value_float=-math.inf))  # (C, N)
    return _suppress_at(boxes, class_keys, keys, iou_threshold)


def nasx_roi_align(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int,
                   sampling_ratio: int, aligned: bool):
    """``nasx::roi_align(input[N, C, H, W], rois[K, 5], ...) -> [K, C, ph, pw]``; rois rows are
    (batch index, x1, y1, x2, y2). ONNX's sampling_ratio 0 is nasx's adaptive ``<= 0``."""
    batch_index = op.Cast(op.Squeeze(op.Slice(rois, [0], [1], [1]), [1]), to=7)
    return op.RoiAlign(input, op.Slice(rois, [1], [5], [1]), batch_index,
                       coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
                       mode="avg", output_height=int(pooled_height), output_width=int(pooled_width),
                       sampling_ratio=max(int(sampling_ratio), 0), spatial_scale=float(spatial_scale))


def _static(value, axis: int, what: str) -> int:
    dim = value.shape[axis] if value.shape is not None else None
    if not isinstance(dim, int):
        raise ValueError(f"nasx::deform_conv2d: ONNX DeformConv needs a static {what} (dimension {axis} of "
                         f"{value.name}), got {dim!r}")
    return dim


def nasx_deform_conv2d(input, weight, offset, mask, bias, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                       dilation_h: int, dilation_w: int):
    """``nasx::deform_conv2d(input, weight, offset, mask?, bias?, stride, padding, dilation)``. The weight
    groups (C_in / weight.size(1)) and offset groups (offset.size(1) / (2 kH kW)) are read from the
    static channel counts, as the op itself infers them."""
    c_in, per_group = _static(input, 1, "input channel count"), _static(weight, 1, "weight's input channels")
    kh, kw = _static(weight, 2, "kernel height"), _static(weight, 3, "kernel width")
    offset_channels = _static(offset, 1, "offset channel count")
    return opset19.DeformConv(input, weight, offset, bias, mask, dilations=(int(dilation_h), int(dilation_w)),
                              group=c_in // per_group, offset_group=offset_channels // (2 * kh * kw),
                              kernel_shape=(kh, kw), pads=(int(pad_h), int(pad_w), int(pad_h), int(pad_w)),
                              strides=(int(stride_h), int(stride_w)))


def translation_table() -> dict:
    """``{torch.ops.nasx.<op>.default: translation}`` for ``torch.onnx.export``."""
    ops = torch.ops.nasx
    return {ops.nms.default: nasx_nms, ops.batched_nms.default: nasx_batched_nms,
            ops.roi_align.default: nasx_roi_align, ops.deform_conv2d.default: nasx_deform_conv2d}
