"""RetinaNet (Lin et al. 2017): anchors on an FPN, focal loss, box deltas.

Letters: B images, N anchors over all levels, A anchors per location, K classes, G GT boxes,
L levels. Boxes are (x1, y1, x2, y2) in pixels of the (resized, unpadded) input image.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasx.models.detectors.anchors import AnchorGenerator, BoxCoder, flatten_anchor_outputs
from nasx.models.detectors.postprocess import anchor_detections
from nasx.models.detectors.targets import check_detector_inputs
from nasx.ops import match_anchors, sigmoid_focal_loss

__all__ = ["RetinaNet", "flatten_anchor_outputs", "paired_giou_loss"]

REG_LOSSES = ("smooth_l1", "giou")


def paired_giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """1 - GIoU of matching rows: pred, target Tensor[M, 4] (x1, y1, x2, y2) -> Tensor[M]."""
    area_p = (pred[:, 2] - pred[:, 0]).clamp(min=0) * (pred[:, 3] - pred[:, 1]).clamp(min=0)
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    lt, rb = torch.max(pred[:, :2], target[:, :2]), torch.min(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    union = area_p + area_t - inter
    hull = (torch.max(pred[:, 2:], target[:, 2:]) - torch.min(pred[:, :2], target[:, :2])).clamp(min=0).prod(dim=1)
    return 1 - (inter / (union + eps) - (hull - union) / (hull + eps))


class RetinaNet(nn.Module):
    """Backbone -> FPN (P3-P7) -> :class:`nasx.models.heads.retina_head.RetinaHead`, with the
    RetinaNet losses and inference.

    Training: every anchor takes the GT of highest IoU (``nasx.ops.match_anchors``): foreground
    at IoU >= ``fg_iou`` (0.5), background below ``bg_iou`` (0.4), ignored in between, and each
    GT also keeps its best anchors whatever their IoU (low-quality matches). The classification
    loss is the sigmoid focal loss over foreground and background anchors; the box loss is smooth
    L1 (``beta`` 1/9) on deltas encoded with ``box_weights`` or GIoU on the decoded boxes; both
    are summed and divided by the number of foreground anchors in the batch.

    Args:
        backbone: images [B, 3, H, W] -> dict of features.
        neck: that dict -> dict of L levels, fine to coarse.
        head: L level features -> (L x [B, A * K, H_l, W_l], L x [B, A * 4, H_l, W_l]).
        anchor_generator: :class:`AnchorGenerator` with L levels and ``head.num_anchors`` shapes.
        num_classes: K.
        reg_loss: ``"smooth_l1"`` or ``"giou"``.
        box_weights: deltas' weights (1, 1, 1, 1 in RetinaNet).
        fg_iou, bg_iou, focal_alpha, focal_gamma, smooth_l1_beta: loss settings.
        score_thresh, nms_thresh, topk_candidates, detections_per_img: inference settings
            (see :func:`postprocess_detections`).

    ``forward(images, image_sizes, targets=None)``: in training mode ``{"cls", "reg"}`` losses;
    in eval mode one ``{"boxes", "scores", "labels"}`` dict per image.
    """

    def __init__(self, *, backbone: nn.Module, neck: nn.Module, head: nn.Module, anchor_generator: AnchorGenerator,
                 num_classes: int, reg_loss: str = "smooth_l1", box_weights=(1.0, 1.0, 1.0, 1.0),
                 fg_iou: float = 0.5, bg_iou: float = 0.4, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 smooth_l1_beta: float = 1 / 9, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                 topk_candidates: int = 1000, detections_per_img: int = 100):
        super().__init__()
        if reg_loss not in REG_LOSSES:
            raise ValueError(f"RetinaNet: reg_loss must be one of {REG_LOSSES}, got {reg_loss!r}")
        if getattr(head, "num_anchors", anchor_generator.num_anchors) != anchor_generator.num_anchors:
            raise ValueError(f"RetinaNet: the head predicts {head.num_anchors} anchors per location but the anchor "
                             f"generator makes {anchor_generator.num_anchors}")
        self.backbone, self.neck, self.head = backbone, neck, head
        self.anchor_generator = anchor_generator
        self.box_coder = BoxCoder(box_weights)
        self.num_classes = num_classes
        self.reg_loss = reg_loss
        self.fg_iou, self.bg_iou = fg_iou, bg_iou
        self.focal_alpha, self.focal_gamma, self.smooth_l1_beta = focal_alpha, focal_gamma, smooth_l1_beta
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.topk_candidates, self.detections_per_img = topk_candidates, detections_per_img

    def forward(self, images: Tensor, image_sizes: Optional[list] = None, targets: Optional[list] = None):
        image_sizes = check_detector_inputs(images, image_sizes, targets, self.training, "RetinaNet")
        return self.forward_features(self.backbone(images), images.shape[-2:], image_sizes, targets)

    def forward_features(self, features: dict[str, Tensor], batch_shape, image_sizes: list,
                         targets: Optional[list] = None):
        """The detector after the backbone. ``batch_shape`` is the padded (H, W) of the images."""
        levels = list(self.neck(features).values())
        if len(levels) != len(self.anchor_generator.strides):
            raise ValueError(f"RetinaNet: the neck returned {len(levels)} levels, the anchors expect "
                             f"{len(self.anchor_generator.strides)}")
        logits, deltas = self.head(levels)
        anchors = self.anchor_generator([tuple(x.shape[-2:]) for x in levels], levels[0].device)
        if self.training:
            if targets is None:
                raise ValueError("RetinaNet: targets are required in training mode")
            return self.losses(logits, deltas, anchors, targets)
        return self.detections(logits, deltas, anchors, image_sizes)

    def losses(self, logits: list[Tensor], deltas: list[Tensor], anchors: list[Tensor], targets: list) -> dict:
        flat_logits = flatten_anchor_outputs(logits, self.num_classes).float()  # (B, N, K)
        flat_deltas = flatten_anchor_outputs(deltas, 4).float()                 # (B, N, 4)
        all_anchors = torch.cat(anchors)                                         # (N, 4)
        device = flat_logits.device
        cls_losses, reg_losses, num_pos = [], [], 0
        for i, t in enumerate(targets):
            gt_boxes = t["boxes"].to(device=device, dtype=torch.float32)        # (G, 4)
            gt_labels = t["labels"].to(device=device, dtype=torch.int64)        # (G,)
            with torch.no_grad():
                matched, _ = match_anchors(all_anchors, gt_boxes, self.fg_iou, self.bg_iou, True)  # (N,)
            fg = matched >= 0
            valid = matched != -2                                                # ignored anchors drop out
            cls_target = torch.zeros_like(flat_logits[i])
            cls_target[fg, gt_labels[matched[fg]]] = 1.0
            cls_losses.append(sigmoid_focal_loss(flat_logits[i][valid], cls_target[valid], self.focal_alpha,
                                                 self.focal_gamma, reduction="sum"))
            num_pos += int(fg.sum())
            if fg.any():
                anchors_fg, boxes_fg = all_anchors[fg], gt_boxes[matched[fg]]
                if self.reg_loss == "smooth_l1":
                    target = self.box_coder.encode(boxes_fg, anchors_fg)
                    reg_losses.append(F.smooth_l1_loss(flat_deltas[i][fg], target, beta=self.smooth_l1_beta,
                                                       reduction="sum"))
                else:
                    pred = self.box_coder.decode(flat_deltas[i][fg], anchors_fg)
                    reg_losses.append(paired_giou_loss(pred, boxes_fg).sum())
        norm = max(num_pos, 1)
        # No foreground anywhere: a zero that still reaches every box parameter.
        reg = sum(reg_losses) if reg_losses else flat_deltas.sum() * 0.0
        return {"cls": sum(cls_losses) / norm, "reg": reg / norm}

    @torch.no_grad()
    def detections(self, logits: list[Tensor], deltas: list[Tensor], anchors: list[Tensor], image_sizes: list) -> list:
        return anchor_detections(
            logits, deltas, anchors, image_sizes, self.num_classes, torch.sigmoid, self.box_coder.decode,
            score_thresh=self.score_thresh, topk_candidates=self.topk_candidates, nms_thresh=self.nms_thresh,
            detections_per_img=self.detections_per_img)
