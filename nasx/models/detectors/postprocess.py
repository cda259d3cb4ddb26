"""Inference post-processing shared by the dense detectors: per-level top-k candidates,
box decoding, clipping, class-aware NMS (``nasx.ops.batched_nms``), the best N per image;
and :func:`anchor_detections`, the per-image loop of the anchor-based detectors around it."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from nasx.models.detectors.anchors import flatten_anchor_outputs
from nasx.ops import batched_nms

__all__ = ["anchor_detections", "postprocess_detections"]


def postprocess_detections(
    scores: list[Tensor],
    decode: Callable[[int, Tensor], Tensor],
    image_size: tuple[int, int],
    *,
    score_thresh: float = 0.05,
    topk_candidates: int = 1000,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
    min_size: float = 0.0,
) -> dict[str, Tensor]:
    """Detections of one image.

    Args:
        scores: per level, Tensor[N_l, K] of class probabilities for the N_l locations (or anchors).
        decode: ``decode(level, location_index Tensor[M]) -> boxes Tensor[M, 4]`` (x1, y1, x2, y2),
            called only on the candidates that survive the threshold and the top-k.
        image_size: (h, w) of the image before padding; boxes are clipped to it.
        score_thresh: candidates below it are dropped before the top-k.
        topk_candidates: at most this many (location, class) candidates per level.
        nms_thresh: IoU threshold of the class-aware NMS.
        detections_per_img: the number of detections kept, by score.
        min_size: boxes with a side shorter than this (pixels) are dropped.

    Returns:
        {"boxes": Tensor[D, 4], "scores": Tensor[D], "labels": Tensor[D] int64 0..K-1}.
    """
    all_boxes, all_scores, all_labels = [], [], []
    h, w = image_size
    for level, s in enumerate(scores):
        num_classes = s.shape[1]
        flat = s.flatten()
        keep = torch.nonzero(flat > score_thresh).squeeze(1)
        cand = flat[keep]
        if cand.numel() > topk_candidates:
            cand, order = cand.topk(topk_candidates)
            keep = keep[order]
        loc = torch.div(keep, num_classes, rounding_mode="floor")
        boxes = decode(level, loc)
        boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                             boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], dim=1)
        all_boxes.append(boxes)
        all_scores.append(cand)
        all_labels.append(keep % num_classes)
    boxes, scores_, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
    if min_size > 0:
        big = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
        boxes, scores_, labels = boxes[big], scores_[big], labels[big]
    keep = batched_nms(boxes.float(), scores_.float(), labels, nms_thresh)[:detections_per_img]
    return {"boxes": boxes[keep], "scores": scores_[keep], "labels": labels[keep]}


def anchor_detections(
    logits: list[Tensor],
    deltas: list[Tensor],
    anchors: list[Tensor],
    image_sizes: list,
    num_logits: int,
    scores_from_logits: Callable[[Tensor], Tensor],
    decode_deltas: Callable[[Tensor, Tensor], Tensor],
    **settings,
) -> list[dict[str, Tensor]]:
    """Detections of a batch from an anchor-based head (RetinaNet, SSDLite): per image, the
    scores and deltas of every level in the anchors' order, then :func:`postprocess_detections`.

    Args:
        logits: per level, Tensor[B, A * num_logits, H_l, W_l].
        deltas: per level, Tensor[B, A * 4, H_l, W_l].
        anchors: per level, Tensor[N_l, 4] (x1, y1, x2, y2), N_l = H_l * W_l * A, in the order of
            :func:`flatten_anchor_outputs`.
        image_sizes: (h, w) of each image before padding.
        num_logits: logits per anchor (K for sigmoid scores, K + 1 with a background class).
        scores_from_logits: Tensor[N_l, num_logits] float32 logits -> Tensor[N_l, K] class probabilities.
        decode_deltas: ``(deltas Tensor[M, 4], anchors Tensor[M, 4]) -> boxes Tensor[M, 4]``
            (e.g. :meth:`BoxCoder.decode`).
        settings: keyword arguments of :func:`postprocess_detections` (``score_thresh``, ...).

    Returns:
        one ``{"boxes", "scores", "labels"}`` dict per image.
    """
    results = []
    for i, image_size in enumerate(image_sizes):
        scores = [scores_from_logits(flatten_anchor_outputs([lg[i : i + 1]], num_logits)[0].float())
                  for lg in logits]                                                          # per level (N_l, K)
        level_deltas = [flatten_anchor_outputs([d[i : i + 1]], 4)[0].float() for d in deltas]  # per level (N_l, 4)

        def decode(level, idx, level_deltas=level_deltas):
            return decode_deltas(level_deltas[level][idx], anchors[level][idx])

        results.append(postprocess_detections(scores, decode, image_size, **settings))
    return results
