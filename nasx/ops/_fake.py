"""Fake (meta) kernels: output shapes and dtypes without computing, for torch.compile.

Shape checks mirror the C++ ones (csrc/ops/box_checks.h) so that a traced graph
fails on the same inputs the eager op rejects.
"""
import torch

_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_boxes(t, op, name):
    torch._check(t.dtype in _FLOAT, lambda: f"{op}: expected {name} to be a floating-point tensor, got {t.dtype}")
    torch._check(
        t.dim() == 2 and t.shape[1] == 4,
        lambda: f"{op}: expected {name} of shape [N, 4] (x1, y1, x2, y2), got shape {list(t.shape)}",
    )


def _check_scores(scores, boxes, op):
    torch._check(
        scores.dim() == 1 and scores.shape[0] == boxes.shape[0],
        lambda: f"{op}: expected scores of shape [N] with N = boxes.size(0) = {boxes.shape[0]}, "
        f"got shape {list(scores.shape)}",
    )


def _pairwise(boxes1, boxes2, op):
    _check_boxes(boxes1, op, "boxes1")
    _check_boxes(boxes2, op, "boxes2")
    dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]), dtype=dtype)


@torch.library.register_fake("nasx::box_iou")
def _box_iou_fake(boxes1, boxes2):
    return _pairwise(boxes1, boxes2, "box_iou")


@torch.library.register_fake("nasx::generalized_box_iou")
def _generalized_box_iou_fake(boxes1, boxes2):
    return _pairwise(boxes1, boxes2, "generalized_box_iou")


def _kept(boxes):
    # The number of kept boxes depends on the data: an unbacked symbolic size.
    n = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((n,), dtype=torch.int64), n


@torch.library.register_fake("nasx::nms")
def _nms_fake(boxes, scores, iou_threshold):
    _check_boxes(boxes, "nms", "boxes")
    _check_scores(scores, boxes, "nms")
    return _kept(boxes)[0]


@torch.library.register_fake("nasx::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    _check_boxes(boxes, "batched_nms", "boxes")
    _check_scores(scores, boxes, "batched_nms")
    return _kept(boxes)[0]


@torch.library.register_fake("nasx::soft_nms")
def _soft_nms_fake(boxes, scores, iou_threshold, sigma, score_threshold, method):
    _check_boxes(boxes, "soft_nms", "boxes")
    _check_scores(scores, boxes, "soft_nms")
    keep, n = _kept(boxes)
    return keep, scores.new_empty((n,))
