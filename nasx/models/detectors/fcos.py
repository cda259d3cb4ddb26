"""FCOS: Fully Convolutional One-Stage object detection (Tian et al. 2019).

Letters: B images, P locations over all levels, G GT boxes (padded per batch), K classes,
L levels. Boxes are (x1, y1, x2, y2) in pixels of the (resized, unpadded) input image.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasx.models.detectors.postprocess import postprocess_detections
from nasx.models.detectors.targets import check_detector_inputs, pad_targets
from nasx.ops import fcos_targets_batched, sigmoid_focal_loss

__all__ = ["FCOS", "FCOS_SIZE_RANGES", "ltrb_giou_loss"]

# The regression range of each level P3-P7 (FCOS §3.2): max(l, t, r, b) of a location's target.
FCOS_SIZE_RANGES = ((0.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, math.inf))


def ltrb_giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """1 - GIoU of boxes given as (l, t, r, b) distances from the same point. pred, target: [N, 4] -> [N]."""
    pl, pt, pr, pb = pred.unbind(1)
    tl, tt, tr, tb = target.unbind(1)
    pred_area = (pl + pr) * (pt + pb)
    target_area = (tl + tr) * (tt + tb)
    inter = (torch.min(pl, tl) + torch.min(pr, tr)).clamp(min=0) * (torch.min(pt, tt) + torch.min(pb, tb)).clamp(min=0)
    union = pred_area + target_area - inter
    iou = inter / (union + eps)
    hull = (torch.max(pl, tl) + torch.max(pr, tr)) * (torch.max(pt, tt) + torch.max(pb, tb))
    return 1 - (iou - (hull - union) / (hull + eps))


class FCOS(nn.Module):
    """Backbone -> neck -> FCOS head, with the FCOS losses and inference.

    Args:
        backbone: images [B, 3, H, W] -> dict of features (e.g. ``c3``-``c5``).
        neck: that dict -> dict of L pyramid levels (e.g. ``p3``-``p7``), in order fine to coarse.
        head: list of L level features -> (cls_logits, box_reg, centerness) lists
            (see :class:`nasx.models.heads.fcos_head.FCOSPredictor`).
        num_classes: K.
        strides: the stride of each level.
        size_ranges: per level, the (lo, hi) range of max(l, t, r, b) it regresses.
        center_radius: center-sampling radius in strides (None: any location inside the box).
        score_thresh, nms_thresh, topk_candidates, detections_per_img: inference settings
            (see :func:`postprocess_detections`).

    ``forward(images, image_sizes, targets=None)``: in training mode returns
    ``{"cls": focal loss, "reg": GIoU loss, "ctr": centerness BCE}``; in eval mode one dict
    ``{"boxes", "scores", "labels"}`` per image. :meth:`forward_features` does the same from
    backbone features, which is how a decoder is trained on cached features.
    """

    def __init__(self, *, backbone: nn.Module, neck: nn.Module, head: nn.Module, num_classes: int,
                 strides: Sequence[int] = (8, 16, 32, 64, 128),
                 size_ranges: Sequence[tuple[float, float]] = FCOS_SIZE_RANGES,
                 center_radius: Optional[float] = 1.5, score_thresh: float = 0.05, nms_thresh: float = 0.6,
                 topk_candidates: int = 1000, detections_per_img: int = 100):
        super().__init__()
        if len(strides) != len(size_ranges):
            raise ValueError(f"FCOS: {len(strides)} strides but {len(size_ranges)} size ranges")
        self.backbone, self.neck, self.head = backbone, neck, head
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)
        self.size_ranges = tuple((float(lo), float(hi)) for lo, hi in size_ranges)
        self.center_radius = center_radius
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.topk_candidates, self.detections_per_img = topk_candidates, detections_per_img

    def forward(self, images: Tensor, image_sizes: Optional[list] = None, targets: Optional[list] = None):
        image_sizes = check_detector_inputs(images, image_sizes, targets, self.training, "FCOS")
        return self.forward_features(self.backbone(images), images.shape[-2:], image_sizes, targets)

    def forward_features(self, features: dict[str, Tensor], batch_shape, image_sizes: list,
                         targets: Optional[list] = None):
        """The detector after the backbone. ``batch_shape`` is the padded (H, W) of the images."""
        levels = list(self.neck(features).values())
        if len(levels) != len(self.strides):
            raise ValueError(f"FCOS: the neck returned {len(levels)} levels, expected {len(self.strides)}")
        logits, box_reg, ctr = self.head(levels)
        if self.training:
            if targets is None:
                raise ValueError("FCOS: targets are required in training mode")
            return self.losses(logits, box_reg, ctr, targets)
        return self.detections(logits, box_reg, ctr, image_sizes)

    # -- locations ---------------------------------------------------------------------------
    def locations(self, sizes: list[tuple[int, int]], device, dtype=torch.float32):
        """Centres of the feature-map cells of every level: (points [P, 2], strides [P], ranges [P, 2])."""
        points, strides, ranges = [], [], []
        for (h, w), s, (lo, hi) in zip(sizes, self.strides, self.size_ranges):
            ys = torch.arange(h, device=device, dtype=dtype) * s + s // 2
            xs = torch.arange(w, device=device, dtype=dtype) * s + s // 2
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack([xx.flatten(), yy.flatten()], dim=1))
            strides.append(torch.full((h * w,), float(s), device=device, dtype=dtype))
            ranges.append(torch.tensor([lo, hi], device=device, dtype=dtype).expand(h * w, 2))
        return torch.cat(points), torch.cat(strides), torch.cat(ranges)

    # -- training ----------------------------------------------------------------------------
    def losses(self, logits: list[Tensor], box_reg: list[Tensor], ctr: list[Tensor], targets: list) -> dict:
        b = logits[0].shape[0]
        device = logits[0].device
        sizes = [tuple(x.shape[-2:]) for x in logits]
        points, strides, ranges = self.locations(sizes, device)
        gt_boxes, gt_labels, counts = pad_targets(targets, device)              # (B, G, 4), (B, G), (B,)
        with torch.no_grad():
            gt_index, reg_target, ctr_target = fcos_targets_batched(
                points, strides, ranges, gt_boxes, counts, self.center_radius)    # (B, P), (B, P, 4), (B, P)
        flat_logits = torch.cat([x.flatten(2) for x in logits], dim=2).transpose(1, 2)   # (B, P, K)
        flat_reg = torch.cat([x.flatten(2) for x in box_reg], dim=2).transpose(1, 2)     # (B, P, 4)
        flat_ctr = torch.cat([x.flatten(2) for x in ctr], dim=2).transpose(1, 2)[..., 0]  # (B, P)

        pos = gt_index >= 0                                                     # (B, P)
        num_pos = max(int(pos.sum()), 1)
        labels = torch.gather(gt_labels, 1, gt_index.clamp(min=0))              # (B, P)
        cls_target = torch.zeros_like(flat_logits)
        cls_target[pos, labels[pos]] = 1.0
        cls_loss = sigmoid_focal_loss(flat_logits.float(), cls_target.float(), reduction="sum") / num_pos

        if pos.any():
            stride_pos = strides.expand(b, -1)[pos].unsqueeze(1)
            pred = flat_reg[pos].float() * stride_pos                           # distances in pixels
            weight = ctr_target[pos]
            reg_loss = (ltrb_giou_loss(pred, reg_target[pos].float()) * weight).sum() / weight.sum().clamp(min=1e-6)
            ctr_loss = F.binary_cross_entropy_with_logits(flat_ctr[pos].float(), weight.float(), reduction="sum") / num_pos
        else:  # keep the graph connected so every parameter gets a (zero) gradient
            reg_loss = flat_reg.sum() * 0.0
            ctr_loss = flat_ctr.sum() * 0.0
        return {"cls": cls_loss, "reg": reg_loss, "ctr": ctr_loss}

    # -- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def detections(self, logits: list[Tensor], box_reg: list[Tensor], ctr: list[Tensor], image_sizes: list) -> list:
        sizes = [tuple(x.shape[-2:]) for x in logits]
        points, _, _ = self.locations(sizes, logits[0].device)
        splits = [h * w for h, w in sizes]
        level_points = points.split(splits)
        results = []
        for i, image_size in enumerate(image_sizes):
            scores = [torch.sqrt(torch.sigmoid(lg[i].flatten(1).t().float()) * torch.sigmoid(c[i].flatten(1).t().float()))
                      for lg, c in zip(logits, ctr)]                             # per level (N_l, K)
            regs = [r[i].flatten(1).t().float() * s for r, s in zip(box_reg, self.strides)]  # (N_l, 4) pixels

            def decode(level, loc, regs=regs):
                p, d = level_points[level][loc], regs[level][loc]
                return torch.cat([p - d[:, :2], p + d[:, 2:]], dim=1)

            results.append(postprocess_detections(
                scores, decode, image_size, score_thresh=self.score_thresh, topk_candidates=self.topk_candidates,
                nms_thresh=self.nms_thresh, detections_per_img=self.detections_per_img))
        return results
