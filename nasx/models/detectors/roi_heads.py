"""The R-CNN stages after the RPN: RoI sampling, pooling, box heads, losses and detections.
One stage with class-specific regression is Faster R-CNN's; two or more stages with class-agnostic
regression, each refining the boxes of the one before, are Cascade R-CNN's (Cai & Vasconcelos 2018).

Letters: B images, R RoIs (of an image, or over the batch), K classes (+1 background at index 0),
G GT boxes, L levels. Boxes are (x1, y1, x2, y2) in pixels of the unpadded input image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasx.models.detectors.anchors import BoxCoder
from nasx.models.detectors.roi_pool import MultiLevelRoIAlign
from nasx.models.detectors.rpn import clip_boxes
from nasx.models.detectors.sampling import balanced_sample
from nasx.ops import batched_nms, match_anchors

__all__ = ["CASCADE_DEFAULTS", "RoIHeads", "RoIStage", "cascade_settings"]


@dataclass(frozen=True)
class RoIStage:
    """Training settings of one R-CNN stage: RoIs at IoU >= ``iou`` with a GT are foreground (the
    rest background), deltas are encoded with ``box_weights`` (the inverse of mmdet's target stds)
    and the stage's losses are multiplied by ``loss_weight``."""

    iou: float = 0.5
    loss_weight: float = 1.0
    box_weights: tuple = (10.0, 10.0, 5.0, 5.0)


# Cascade R-CNN's three stages (the paper and mmdet): IoU 0.5 / 0.6 / 0.7, loss weights 1 / 0.5 / 0.25,
# target stds 0.1/0.2, 0.05/0.1, 0.033/0.067. Two stages take the first two; four add
# IoU 0.75, weight 0.125 and stds 0.025/0.05 (nasx's choice: the pattern continued, as HTC-style
# configs do; the paper only trains 3 stages on COCO).
CASCADE_DEFAULTS = (
    RoIStage(0.5, 1.0, (10.0, 10.0, 5.0, 5.0)),
    RoIStage(0.6, 0.5, (20.0, 20.0, 10.0, 10.0)),
    RoIStage(0.7, 0.25, (30.0, 30.0, 15.0, 15.0)),
    RoIStage(0.75, 0.125, (40.0, 40.0, 20.0, 20.0)),
)


def cascade_settings(num_stages: int) -> tuple[RoIStage, ...]:
    """The settings of a Cascade R-CNN of 2, 3 or 4 stages (see :data:`CASCADE_DEFAULTS`)."""
    if not 2 <= num_stages <= len(CASCADE_DEFAULTS):
        raise ValueError(f"Cascade R-CNN has 2 to {len(CASCADE_DEFAULTS)} stages, got {num_stages}")
    return CASCADE_DEFAULTS[:num_stages]


class RoIHeads(nn.Module):
    """Args:
        box_pool: :class:`MultiLevelRoIAlign`.
        box_heads: one head per stage (``TwoFCHead``): Tensor[R, C, S, S] -> Tensor[R, F].
        box_predictors: one ``BoxPredictor`` per stage; class-agnostic when there are several stages.
        stages: one :class:`RoIStage` per stage (default: Faster R-CNN's for one stage,
            :func:`cascade_settings` for more).
        num_classes: K.
        batch_size_per_image, positive_fraction: RoIs sampled per image per stage (512, 25 %).
        score_thresh, nms_thresh, detections_per_img, min_size: inference (0.05, 0.5, 100, 0.01).
        smooth_l1_beta: the box loss's beta (1/9, torchvision's).
        generator: a CPU ``torch.Generator`` for the sampling.

    Training, per stage: the GT boxes join the proposals, RoIs are matched to the GTs (``nasx.ops.
    match_anchors`` at the stage's IoU) and sampled; losses: cross-entropy over the sampled RoIs
    (mean) and smooth L1 on the foreground's deltas (of its class, or the one class-agnostic box),
    summed and divided by the number sampled, times the stage's weight. The next stage trains on
    this stage's regressed boxes of the sampled RoIs (without the GTs, which join again), detached.

    Inference: each stage classifies and regresses the boxes of the stage before; the score is the
    mean of the stages' class probabilities (the Cascade R-CNN paper's ensemble; mmdet averages the
    logits), the boxes the last stage's; then per class: score threshold, NMS, the best
    ``detections_per_img`` over the classes, as torchvision's ``RoIHeads``.

    ``forward(levels, strides, proposals, image_sizes, targets=None)`` returns the losses
    (``{"roi_cls", "roi_reg"}``, or ``{"roi_cls_1", "roi_reg_1", ...}`` per cascade stage) in training
    mode and one ``{"boxes", "scores", "labels"}`` dict per image (labels 0..K-1) otherwise.
    """

    def __init__(self, *, box_pool: MultiLevelRoIAlign, box_heads: Sequence[nn.Module],
                 box_predictors: Sequence[nn.Module], num_classes: int,
                 stages: Optional[Sequence[RoIStage]] = None, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                 detections_per_img: int = 100, min_size: float = 1e-2, smooth_l1_beta: float = 1 / 9,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        n = len(box_heads)
        if n < 1 or len(box_predictors) != n:
            raise ValueError(f"RoIHeads: need one box head and one predictor per stage, got {n} and "
                             f"{len(box_predictors)}")
        stages = ((RoIStage(),) if n == 1 else cascade_settings(n)) if stages is None else tuple(stages)
        if len(stages) != n:
            raise ValueError(f"RoIHeads: {n} stages of heads but {len(stages)} stage settings")
        if n > 1 and not all(getattr(p, "class_agnostic", True) for p in box_predictors):
            raise ValueError("RoIHeads: the stages of a cascade regress class-agnostic boxes "
                             "(BoxPredictor(class_agnostic=True))")
        self.box_pool = box_pool
        self.box_heads, self.box_predictors = nn.ModuleList(box_heads), nn.ModuleList(box_predictors)
        self.stages = stages
        self.coders = [BoxCoder(s.box_weights) for s in stages]
        self.num_classes = num_classes
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.min_size = detections_per_img, min_size
        self.smooth_l1_beta = smooth_l1_beta
        self.generator = generator

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def forward_dense(self, roi_features: Tensor):
        """Every stage's head on the same pooled features (what ``count_detector_macs`` counts)."""
        return [p(h(roi_features)) for h, p in zip(self.box_heads, self.box_predictors)]

    def forward(self, levels: list[Tensor], strides: Sequence[int], proposals: list[Tensor], image_sizes: list,
                targets: Optional[list] = None):
        if self.training:
            if targets is None:
                raise ValueError("RoIHeads: targets are required in training mode")
            return self.losses(levels, strides, proposals, image_sizes, targets)
        return self.detections(levels, strides, proposals, image_sizes)

    def _run(self, t: int, levels, strides, boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        x = self.box_pool(levels, strides, boxes)                           # (R, C, S, S)
        logits, deltas = self.box_predictors[t](self.box_heads[t](x))        # (R, K + 1), (R, 4 or (K + 1) * 4)
        return logits.float(), deltas.float()

    def _decode(self, t: int, deltas: Tensor, rois: Tensor) -> Tensor:
        """Tensor[R, 4 * M] deltas on Tensor[R, 4] RoIs -> boxes Tensor[R, M, 4]."""
        m = deltas.shape[1] // 4
        boxes = self.coders[t].decode(deltas.reshape(-1, 4), rois.repeat_interleave(m, dim=0))
        return boxes.reshape(-1, m, 4)

    def _sample(self, t: int, proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor):
        """(RoIs Tensor[R, 4], labels Tensor[R] with 0 = background, matched GT Tensor[R] (-1 for
        background), is_gt Tensor[R] bool) of one image at stage t."""
        candidates = torch.cat([proposals, gt_boxes])
        matched, _ = match_anchors(candidates, gt_boxes, self.stages[t].iou, self.stages[t].iou, False)
        pos, neg = balanced_sample(matched, self.batch_size_per_image, self.positive_fraction, self.generator)
        idx = torch.cat([pos, neg])
        labels = torch.zeros(idx.numel(), dtype=torch.int64, device=proposals.device)
        labels[: pos.numel()] = gt_labels[matched[pos]] + 1
        gt_index = torch.full_like(labels, -1)
        gt_index[: pos.numel()] = matched[pos]
        return candidates[idx], labels, gt_index, idx >= proposals.shape[0]

    def losses(self, levels, strides, proposals: list[Tensor], image_sizes: list, targets: list) -> dict:
        device = levels[0].device
        gts = [(t["boxes"].to(device=device, dtype=torch.float32), t["labels"].to(device=device, dtype=torch.int64))
               for t in targets]
        out, suffix = {}, len(self.stages) > 1
        for t, stage in enumerate(self.stages):
            with torch.no_grad():
                samples = [self._sample(t, p.detach(), b, lab) for p, (b, lab) in zip(proposals, gts)]
            rois = [s[0] for s in samples]
            logits, deltas = self._run(t, levels, strides, rois)
            labels = torch.cat([s[1] for s in samples])
            pos = torch.nonzero(labels > 0).squeeze(1)
            cls = F.cross_entropy(logits, labels)
            if pos.numel():
                targets_ = torch.cat([self.coders[t].encode(b[s[2][s[1] > 0]], s[0][s[1] > 0])
                                      for s, (b, _) in zip(samples, gts)])
                per_roi = deltas.reshape(deltas.shape[0], -1, 4)
                column = labels[pos] if per_roi.shape[1] > 1 else torch.zeros_like(pos)
                reg = F.smooth_l1_loss(per_roi[pos, column], targets_, beta=self.smooth_l1_beta,
                                       reduction="sum") / max(labels.numel(), 1)
            else:
                reg = deltas.sum() * 0.0  # reaches every box parameter
            name = f"_{t + 1}" if suffix else ""
            out[f"roi_cls{name}"] = stage.loss_weight * cls
            out[f"roi_reg{name}"] = stage.loss_weight * reg
            if t + 1 < len(self.stages):
                with torch.no_grad():
                    refined = self._decode(t, deltas.detach(), torch.cat(rois))[:, 0]
                    proposals, start = [], 0
                    for (r, _, _, is_gt), size in zip(samples, image_sizes):
                        proposals.append(clip_boxes(refined[start : start + r.shape[0]][~is_gt], size))
                        start += r.shape[0]
        return out

    @torch.no_grad()
    def detections(self, levels, strides, proposals: list[Tensor], image_sizes: list) -> list[dict]:
        counts = [p.shape[0] for p in proposals]
        rois, probs = proposals, []
        for t in range(len(self.stages)):
            logits, deltas = self._run(t, levels, strides, rois)
            probs.append(F.softmax(logits, dim=-1))
            boxes = self._decode(t, deltas, torch.cat(rois))                 # (R, 1 or K + 1, 4)
            if t + 1 < len(self.stages):
                rois = [clip_boxes(b[:, 0], size) for b, size in zip(boxes.split(counts), image_sizes)]
        scores = torch.stack(probs).mean(dim=0) if len(probs) > 1 else probs[0]  # (R, K + 1)
        boxes = boxes.expand(-1, self.num_classes + 1, 4)
        return [self._postprocess(b, s, size)
                for b, s, size in zip(boxes.split(counts), scores.split(counts), image_sizes)]

    def _postprocess(self, boxes: Tensor, scores: Tensor, size) -> dict:
        """One image: boxes Tensor[R, K + 1, 4], scores Tensor[R, K + 1] -> detections."""
        boxes = clip_boxes(boxes, size)[:, 1:].reshape(-1, 4)                # the background column goes
        labels = torch.arange(self.num_classes, device=scores.device).expand(scores.shape[0], -1).reshape(-1)
        scores = scores[:, 1:].reshape(-1)
        keep = torch.nonzero(scores > self.score_thresh).squeeze(1)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = torch.nonzero((ws >= self.min_size) & (hs >= self.min_size)).squeeze(1)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
