"""Detection and proposal selection written for export: the detections of
:func:`nasx.models.detectors.postprocess.postprocess_detections` and the proposals of
:func:`nasx.models.detectors.rpn.select_proposals`, for a whole batch at once and without
branching on a data-dependent count, so ``torch.export`` traces them at any input size and batch.

What differs from the detectors' code, and why the result is the same:

* "more candidates than top-k?" has no answer while tracing. Every level takes its top
  ``min(k, N_l x K)`` first and then drops those at or below the score threshold: the same set
  (the top-k of the candidates above the threshold), put back in the detectors' order with a
  tensor condition instead of a Python branch (see :func:`top_candidates`).
* The images of a batch are not looped over: candidates carry their image index, NMS runs once
  with one category per (image, class) — boxes of two images never suppress each other, as in a
  per-image NMS — and :func:`first_per_image` keeps each image's best ``n``.

Letters: B images, N_l locations (or anchors) of level l, K classes, M candidates, D detections.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["COUNT_BOUND", "batched_nms", "clip_to_image", "first_per_image", "nonzero", "select_detections",
           "select_proposals", "top_candidates"]

# An upper bound stated for every data-dependent count (nonzero, NMS). torch.export bounds such counts by
# int64's max, and any size computed from one (count x classes) then overflows int64 in the range checks
# it writes into the graph, which ONNX cannot hold. 2^40 exceeds any real count with room for the factors.
COUNT_BOUND = 2 ** 40


def _bounded(t: Tensor) -> Tensor:
    torch._check(t.shape[0] <= COUNT_BOUND)
    return t


def nonzero(mask: Tensor) -> Tensor:
    """``torch.nonzero(mask)`` -> Tensor[M, mask.dim()], its count M bounded by :data:`COUNT_BOUND`."""
    return _bounded(torch.nonzero(mask))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """``torch.ops.nasx.batched_nms`` called directly: the op takes zero boxes, and calling it without
    the Python wrapper's early return for them keeps the graph free of a branch on the box count.
    The kept count is bounded by :data:`COUNT_BOUND`."""
    return _bounded(torch.ops.nasx.batched_nms.default(boxes, scores, idxs, float(iou_threshold)))


def top_candidates(scores: Tensor, k: int, score_thresh: float) -> tuple[Tensor, Tensor, Tensor]:
    """Scores Tensor[B, N] -> the best ``k`` of each image that are above ``score_thresh``, as
    (image Tensor[M], index into N Tensor[M], score Tensor[M]), image after image, in the detectors'
    order: by index when at most ``k`` are above the threshold (their ``nonzero``), else by decreasing
    score (their top-k), so that NMS breaks ties between exactly equal scores as theirs does."""
    top, index = scores.topk(torch.sym_min(k, scores.shape[1]), dim=1)                  # (B, k)
    fits = (scores > score_thresh).sum(dim=1, keepdim=True) <= k                         # (B, 1)
    position = torch.arange(top.shape[1], device=scores.device).expand_as(index)
    order = torch.where(fits, index, position).argsort(dim=1)                            # keys unique per row
    top, index = top.gather(1, order), index.gather(1, order)
    image, j = nonzero(top > score_thresh).unbind(1)
    return image, index[image, j], top[image, j]


def clip_to_image(boxes: Tensor, image_size) -> Tensor:
    """Boxes Tensor[..., 4] clamped to an (h, w) image (ints or symbolic ints)."""
    h, w = image_size
    x = boxes[..., 0::2].clamp(min=0, max=w)
    y = boxes[..., 1::2].clamp(min=0, max=h)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def first_per_image(image: Tensor, n: int, num_images) -> Tensor:
    """Positions, in a list sorted by decreasing score whose entries belong to images ``image``
    (Tensor[S] int64), of each image's first ``n``: Tensor[<= B n], image after image, each by
    decreasing score. The sort key image x S + position has no ties, so no sort stability is assumed."""
    s = image.shape[0]
    pos = torch.arange(s, device=image.device)
    order = torch.argsort(image * s + pos)                                              # grouped by image
    grouped = image[order]
    first = torch.full((num_images,), s, dtype=torch.int64, device=image.device).scatter_reduce(
        0, grouped, pos, reduce="amin")                                                  # (B,) start of each group
    return order[nonzero(pos - first[grouped] < n).squeeze(1)]


def select_detections(scores: list[Tensor], decode: Callable[[Tensor, Tensor], Tensor], image_size, *,
                      score_thresh: float, topk_candidates: int, nms_thresh: float,
                      detections_per_img: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The detections of a batch, each image's as ``postprocess_detections`` (``min_size`` 0) gives them.

    Args:
        scores: per level, Tensor[B, N_l, K] class probabilities.
        decode: ``decode(image Tensor[M], location Tensor[M]) -> boxes Tensor[M, 4]``, locations numbered
            over the levels in order (level l's first is N_0 + ... + N_{l-1}): every candidate is decoded
            in one go, the per-level decoding's values with 1/L of the graph.
        image_size: (h, w) the boxes are clipped to.

    Returns:
        (boxes Tensor[D, 4], scores Tensor[D], labels Tensor[D] int64, image Tensor[D] int64): image after
        image, each by decreasing score.
    """
    num_images, num_classes = scores[0].shape[0], scores[0].shape[2]
    images, locs, labels, cands, start = [], [], [], [], 0
    for s in scores:
        image, index, cand = top_candidates(s.flatten(1), topk_candidates, score_thresh)
        images.append(image)
        locs.append(torch.div(index, num_classes, rounding_mode="floor") + start)
        labels.append(index % num_classes)
        cands.append(cand)
        start = start + s.shape[1]
    image, loc, label, cand = torch.cat(images), torch.cat(locs), torch.cat(labels), torch.cat(cands)
    boxes = clip_to_image(decode(image, loc), image_size)
    keep = batched_nms(boxes.float(), cand.float(), image * num_classes + label, nms_thresh)
    keep = keep[first_per_image(image[keep], detections_per_img, num_images)]
    return boxes[keep], cand[keep], label[keep], image[keep]


def select_proposals(boxes: Tensor, scores: Tensor, levels: Tensor, image: Tensor, image_size, *, num_images,
                     num_levels: int, nms_thresh: float, post_nms_top_n: int, min_size: float,
                     score_thresh: float = 0.0) -> tuple[Tensor, Tensor]:
    """The proposals of a batch, each image's as :func:`nasx.models.detectors.rpn.select_proposals`
    gives them: clip, drop boxes with a side below ``min_size`` or a score below ``score_thresh``, NMS
    within each level, the best ``post_nms_top_n``.

    Args:
        boxes: Tensor[M, 4] decoded candidates; scores, levels (< num_levels), image (< num_images):
            Tensor[M] each, the candidates of an image in the order the detector lists them.

    Returns:
        (boxes Tensor[R, 4], image Tensor[R] int64): image after image, each by decreasing score.
    """
    boxes = clip_to_image(boxes, image_size)
    ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = nonzero((ws >= min_size) & (hs >= min_size) & (scores >= score_thresh)).squeeze(1)
    boxes, scores, levels, image = boxes[keep], scores[keep], levels[keep], image[keep]
    keep = batched_nms(boxes, scores, image * num_levels + levels, nms_thresh)
    keep = keep[first_per_image(image[keep], post_nms_top_n, num_images)]
    return boxes[keep], image[keep]
