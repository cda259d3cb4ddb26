"""SSDLite (Sandler et al. 2018, MobileNetV2 §6.2): SSD with depthwise-separable extra layers
and prediction convs on a MobileNetV2 trunk.

Letters: B images, N default boxes over all maps, K foreground classes (K + 1 with background),
L feature maps. Boxes are (x1, y1, x2, y2) in pixels of the (resized, unpadded) input image.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasx.models.backbones.mbconv import MBConvBackbone
from nasx.models.detectors.anchors import BoxCoder, DefaultBoxGenerator, flatten_anchor_outputs
from nasx.models.detectors.postprocess import anchor_detections
from nasx.models.detectors.targets import check_detector_inputs
from nasx.ops import match_anchors

__all__ = ["SSDLite", "SSDLiteFeatures"]


class SSDLiteFeatures(nn.Module):
    """The two backbone maps SSDLite predicts from: one at stride 16 and the last at stride 32.

    On an :class:`MBConvBackbone` with ``tap_expansion`` the stride-16 map is, as in the paper's
    MobileNetV2 SSDLite, the expansion (1x1 conv output, 576 channels on MobileNetV2) of the
    first block of the stride-32 stage, before its strided depthwise conv: richer than the
    96-channel stage output. Otherwise (or when that block has no expansion) it is the
    backbone's ``c4`` output. The stride-32 map is ``c5`` (after MobileNetV2's 1x1 to 1280).

    ``forward(images)`` returns ``{"c4": Tensor[B, C16, H/16, W/16], "c5": Tensor[B, C32, H/32, W/32]}``;
    ``channels`` is ``{"c4": C16, "c5": C32}``.
    """

    def __init__(self, *, backbone: nn.Module, tap_expansion: bool = True):
        super().__init__()
        self.backbone = backbone
        channels = getattr(backbone, "channels", {})
        if "c4" not in channels or "c5" not in channels:
            raise ValueError(f"SSDLiteFeatures: the backbone needs features c4 and c5 (strides 16, 32); it has "
                             f"{sorted(channels)}")
        self._tap_stage = None
        if tap_expansion and isinstance(backbone, MBConvBackbone):
            stage = backbone._stage_names.index("c5")
            first = backbone.stages[stage][0].block[0]      # conv_norm_act: the 1x1 expansion, if any
            if first[0].kernel_size == (1, 1) and first[0].groups == 1:
                self._tap_stage = stage
                c16 = first[0].out_channels
        if self._tap_stage is None:
            missing = [n for n in ("c4", "c5") if n not in backbone.out_features]
            if missing:
                raise ValueError(f"SSDLiteFeatures: the backbone must return {missing} (out_features "
                                 f"{backbone.out_features})")
            c16 = channels["c4"]
        self.channels = {"c4": c16, "c5": channels["c5"]}
        self.out_features = ("c4", "c5")

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if self._tap_stage is None:
            feats = self.backbone(images)
            return {"c4": feats["c4"], "c5": feats["c5"]}
        bb = self.backbone
        x = bb.stem(images)
        for i, stage in enumerate(bb.stages):
            if i != self._tap_stage:
                x = stage(x)
                continue
            block = stage[0]
            tap = block.block[0](x)                          # (B, C16, H/16, W/16)
            y = block.block[1:](tap)
            x = stage[1:](x + y if block.use_shortcut else y)
        if bb.head is not None:
            x = bb.head(x)
        return {"c4": tap, "c5": x}


class SSDLite(nn.Module):
    """Backbone maps (strides 16, 32) -> :class:`SSDLiteExtra` (4 more) -> :class:`SSDLiteHead`,
    with the SSD losses and inference.

    Training: default boxes are matched to GTs by IoU (``nasx.ops.match_anchors``): foreground
    at IoU >= ``fg_iou`` (0.5) plus each GT's best box; the rest is background. The classification
    loss is softmax cross-entropy over K + 1 classes on the foreground boxes and on the
    ``neg_pos_ratio`` (3) times as many background boxes with the highest loss (hard negative
    mining, per image); the box loss is smooth L1 on offsets encoded with the variances
    (0.1 for the centre, 0.2 for the log-size). Both are divided by the number of foreground boxes.

    Args:
        backbone: :class:`SSDLiteFeatures`: images -> {"c4": stride-16 map, "c5": stride-32 map}.
        neck: :class:`nasx.models.necks.ssdlite_extra.SSDLiteExtra`: those maps and 4 more (dict).
        head: :class:`nasx.models.heads.ssdlite_head.SSDLiteHead` on the L = 2 + extra maps.
        box_generator: :class:`DefaultBoxGenerator` with L levels and the head's boxes per location.
        num_classes: K.
        fg_iou, neg_pos_ratio, variances: loss settings.
        score_thresh, nms_thresh, topk_candidates, detections_per_img: inference settings.

    ``forward(images, image_sizes, targets=None)``: in training mode ``{"cls", "reg"}``; in eval
    mode one ``{"boxes", "scores", "labels"}`` dict per image (scores are softmax probabilities).
    """

    def __init__(self, *, backbone: nn.Module, neck: nn.Module, head: nn.Module, box_generator: DefaultBoxGenerator,
                 num_classes: int, fg_iou: float = 0.5, neg_pos_ratio: float = 3.0, variances=(0.1, 0.2),
                 score_thresh: float = 0.01, nms_thresh: float = 0.6, topk_candidates: int = 400,
                 detections_per_img: int = 100):
        super().__init__()
        if list(getattr(head, "num_anchors", box_generator.num_anchors)) != box_generator.num_anchors:
            raise ValueError(f"SSDLite: the head predicts {list(head.num_anchors)} boxes per location per map but the "
                             f"box generator makes {box_generator.num_anchors}")
        self.backbone, self.neck, self.head = backbone, neck, head
        self.box_generator = box_generator
        v_centre, v_size = variances
        self.box_coder = BoxCoder((1 / v_centre, 1 / v_centre, 1 / v_size, 1 / v_size))
        self.num_classes = num_classes
        self.fg_iou, self.neg_pos_ratio = fg_iou, neg_pos_ratio
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.topk_candidates, self.detections_per_img = topk_candidates, detections_per_img

    def forward(self, images: Tensor, image_sizes: Optional[list] = None, targets: Optional[list] = None):
        image_sizes = check_detector_inputs(images, image_sizes, targets, self.training, "SSDLite")
        maps = list(self.neck(self.backbone(images)).values())
        if len(maps) != self.box_generator.num_levels:
            raise ValueError(f"SSDLite: backbone and neck give {len(maps)} maps, the default boxes expect "
                             f"{self.box_generator.num_levels}")
        logits, deltas = self.head(maps)
        boxes = self.box_generator([tuple(m.shape[-2:]) for m in maps], images.shape[-2:], images.device)
        if self.training:
            return self.losses(logits, deltas, boxes, targets)
        return self.detections(logits, deltas, boxes, image_sizes)

    def losses(self, logits: list[Tensor], deltas: list[Tensor], boxes: list[Tensor], targets: list) -> dict:
        flat_logits = flatten_anchor_outputs(logits, self.num_classes + 1).float()  # (B, N, K + 1)
        flat_deltas = flatten_anchor_outputs(deltas, 4).float()                     # (B, N, 4)
        defaults = torch.cat(boxes)                                                  # (N, 4)
        device = flat_logits.device
        cls_loss, reg_loss, num_pos = flat_logits.sum() * 0.0, flat_deltas.sum() * 0.0, 0
        for i, t in enumerate(targets):
            gt_boxes = t["boxes"].to(device=device, dtype=torch.float32)            # (G, 4)
            gt_labels = t["labels"].to(device=device, dtype=torch.int64)            # (G,)
            with torch.no_grad():
                matched, _ = match_anchors(defaults, gt_boxes, self.fg_iou, self.fg_iou, True)  # (N,)
            fg = matched >= 0
            n_fg = int(fg.sum())
            if n_fg == 0:
                continue  # SSD: an image without matches has no negatives either
            labels = torch.zeros_like(matched)
            labels[fg] = gt_labels[matched[fg]] + 1                                 # 0 is background
            ce = F.cross_entropy(flat_logits[i], labels, reduction="none")          # (N,)
            with torch.no_grad():
                bg_loss = ce.detach().clone()
                bg_loss[fg] = -float("inf")
                n_neg = min(int(self.neg_pos_ratio * n_fg), int((~fg).sum()))
                hard_neg = bg_loss.topk(n_neg).indices
            cls_loss = cls_loss + ce[fg].sum() + ce[hard_neg].sum()
            target = self.box_coder.encode(gt_boxes[matched[fg]], defaults[fg])
            reg_loss = reg_loss + F.smooth_l1_loss(flat_deltas[i][fg], target, beta=1.0, reduction="sum")
            num_pos += n_fg
        norm = max(num_pos, 1)
        return {"cls": cls_loss / norm, "reg": reg_loss / norm}

    @torch.no_grad()
    def detections(self, logits: list[Tensor], deltas: list[Tensor], boxes: list[Tensor], image_sizes: list) -> list:
        return anchor_detections(
            logits, deltas, boxes, image_sizes, self.num_classes + 1, _foreground_softmax, self.box_coder.decode,
            score_thresh=self.score_thresh, topk_candidates=self.topk_candidates, nms_thresh=self.nms_thresh,
            detections_per_img=self.detections_per_img)


def _foreground_softmax(logits: Tensor) -> Tensor:
    """Tensor[N, K + 1] logits with background first -> Tensor[N, K] foreground probabilities."""
    return F.softmax(logits, dim=1)[:, 1:]
