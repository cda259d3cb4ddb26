"""Inference post-processing shared by the dense detectors: per-level top-k candidates,
box decoding, clipping, class-aware NMS (``nasx.ops.batched_nms``), the best N per image."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from nasx.ops import batched_nms

__all__ = ["postprocess_detections"]


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
