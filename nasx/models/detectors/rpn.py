"""Region Proposal Network (Ren et al. 2015): objectness and box deltas for anchors on every level,
proposals by per-level top-k, NMS across levels and the best N per image.

Letters: B images, L levels, A anchors per location, N anchors over all levels, G GT boxes,
R proposals. Boxes are (x1, y1, x2, y2) in pixels of the (resized, unpadded) input image.

Settings follow torchvision's ``RegionProposalNetwork`` (and mmdet-1.x's RPN): with the anchors
of ``AnchorGenerator(offset=0, round_half_sizes=True)`` the proposals are torchvision's.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasx.models.detectors.anchors import AnchorGenerator, BoxCoder, flatten_anchor_outputs
from nasx.models.detectors.sampling import balanced_sample
from nasx.ops import batched_nms, match_anchors

__all__ = ["RPN", "RPNHead", "clip_boxes", "select_proposals"]


class RPNHead(nn.Module):
    """A 3x3 conv + ReLU shared by all levels, then 1x1 convs to A objectness logits and A x 4 deltas.

    ``forward(levels)`` takes L x Tensor[B, C, H_l, W_l] and returns
    (L x Tensor[B, A, H_l, W_l], L x Tensor[B, A * 4, H_l, W_l]).
    """

    def __init__(self, *, in_channels: int, num_anchors: int, conv_channels: Optional[int] = None):
        super().__init__()
        conv_channels = in_channels if conv_channels is None else conv_channels
        self.num_anchors = num_anchors
        self.conv = nn.Conv2d(in_channels, conv_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(conv_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(conv_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, levels: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for x in levels:
            t = F.relu(self.conv(x))
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def clip_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Boxes Tensor[..., 4] clipped to an (h, w) image."""
    h, w = image_size
    x = boxes[..., 0::2].clamp(min=0, max=w)
    y = boxes[..., 1::2].clamp(min=0, max=h)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def select_proposals(boxes: Tensor, scores: Tensor, levels: Tensor, image_size: tuple[int, int], *,
                     nms_thresh: float, post_nms_top_n: int, min_size: float = 1e-3,
                     score_thresh: float = 0.0) -> tuple[Tensor, Tensor]:
    """One image's proposals from its per-level top-k candidates: clip, drop boxes with a side below
    ``min_size`` and scores below ``score_thresh``, NMS within each level (``nasx.ops.batched_nms``
    with the level as the index), the best ``post_nms_top_n`` by score.

    Args:
        boxes: Tensor[M, 4] decoded candidates; scores: Tensor[M] probabilities; levels: Tensor[M] int64.

    Returns:
        (boxes Tensor[R, 4], scores Tensor[R]), by decreasing score.
    """
    boxes = clip_boxes(boxes, image_size)
    ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = torch.nonzero((ws >= min_size) & (hs >= min_size) & (scores >= score_thresh)).squeeze(1)
    boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
    keep = batched_nms(boxes, scores, levels, nms_thresh)[:post_nms_top_n]
    return boxes[keep], scores[keep]


class RPN(nn.Module):
    """Proposals and the RPN losses.

    Training: anchors take their GT through ``nasx.ops.match_anchors`` (foreground at IoU >=
    ``fg_iou``, background below ``bg_iou``, ignored between, and every GT keeps its best anchors);
    ``batch_size_per_image`` anchors per image are sampled, at most ``positive_fraction`` of them
    foreground. Losses: binary cross-entropy on the sampled anchors' objectness (mean) and smooth L1
    (``beta`` 1/9) on the foreground anchors' deltas, summed and divided by the number sampled.

    Proposals (both modes, without gradient): per level the ``pre_nms_top_n`` best anchors by
    objectness, decoded, then :func:`select_proposals`. ``pre_nms_top_n`` / ``post_nms_top_n``
    are (training, inference) pairs: (2000, 1000) / (2000, 1000) as torchvision and mmdet-1.x.

    Args:
        head: :class:`RPNHead` (or anything with its interface).
        anchor_generator: one anchor size per level (``scales=(1,)``), 3 ratios.
        fg_iou, bg_iou, batch_size_per_image, positive_fraction: training settings.
        pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, score_thresh: proposal settings.
        generator: a CPU ``torch.Generator`` for the anchor sampling (reproducible draws).

    ``forward(levels, image_sizes, targets=None)`` -> (proposals: B x Tensor[R_i, 4], losses:
    ``{"rpn_cls", "rpn_reg"}`` in training mode, ``{}`` otherwise).
    """

    def __init__(self, *, head: nn.Module, anchor_generator: AnchorGenerator, fg_iou: float = 0.7,
                 bg_iou: float = 0.3, batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n: Sequence[int] = (2000, 1000), post_nms_top_n: Sequence[int] = (2000, 1000),
                 nms_thresh: float = 0.7, min_size: float = 1e-3, score_thresh: float = 0.0,
                 smooth_l1_beta: float = 1 / 9, generator: Optional[torch.Generator] = None):
        super().__init__()
        if getattr(head, "num_anchors", anchor_generator.num_anchors) != anchor_generator.num_anchors:
            raise ValueError(f"RPN: the head predicts {head.num_anchors} anchors per location but the anchor "
                             f"generator makes {anchor_generator.num_anchors}")
        for name, pair in (("pre_nms_top_n", pre_nms_top_n), ("post_nms_top_n", post_nms_top_n)):
            if len(pair) != 2 or min(pair) < 1:
                raise ValueError(f"RPN: {name} is a (training, inference) pair of positive counts, got {pair}")
        self.head, self.anchor_generator = head, anchor_generator
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.fg_iou, self.bg_iou = fg_iou, bg_iou
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.pre_nms_top_n, self.post_nms_top_n = tuple(pre_nms_top_n), tuple(post_nms_top_n)
        self.nms_thresh, self.min_size, self.score_thresh = nms_thresh, min_size, score_thresh
        self.smooth_l1_beta = smooth_l1_beta
        self.generator = generator

    @property
    def strides(self) -> tuple[int, ...]:
        return self.anchor_generator.strides

    def forward_dense(self, levels: list[Tensor]):
        """The convolutions only (what :func:`nasx.evaluate.count_detector_macs` counts)."""
        return self.head(levels)

    def forward(self, levels: list[Tensor], image_sizes: list, targets: Optional[list] = None):
        if len(levels) != len(self.strides):
            raise ValueError(f"RPN: got {len(levels)} feature levels, the anchors expect {len(self.strides)} "
                             f"(strides {list(self.strides)})")
        logits, deltas = self.head(levels)
        anchors = self.anchor_generator([tuple(x.shape[-2:]) for x in levels], levels[0].device)
        flat_logits = flatten_anchor_outputs(logits, 1).squeeze(2).float()  # (B, N)
        flat_deltas = flatten_anchor_outputs(deltas, 4).float()             # (B, N, 4)
        proposals = self.proposals(flat_logits.detach(), flat_deltas.detach(), anchors, image_sizes)
        if not self.training:
            return proposals, {}
        if targets is None:
            raise ValueError("RPN: targets are required in training mode")
        return proposals, self.losses(flat_logits, flat_deltas, torch.cat(anchors), targets)

    @torch.no_grad()
    def proposals(self, logits: Tensor, deltas: Tensor, anchors: list[Tensor], image_sizes: list) -> list[Tensor]:
        pre_n = self.pre_nms_top_n[0 if self.training else 1]
        post_n = self.post_nms_top_n[0 if self.training else 1]
        # Per-level top-k on the logits (same order as the probabilities), as torchvision does.
        index, level_ids, start = [], [], 0
        for level, a in enumerate(anchors):
            n = a.shape[0]
            top = logits[:, start : start + n].topk(min(pre_n, n), dim=1).indices + start  # (B, k_l)
            index.append(top)
            level_ids.append(torch.full((top.shape[1],), level, dtype=torch.int64, device=logits.device))
            start += n
        index, level_ids = torch.cat(index, dim=1), torch.cat(level_ids)
        all_anchors = torch.cat(anchors)
        out = []
        for i, size in enumerate(image_sizes):
            boxes = self.box_coder.decode(deltas[i, index[i]], all_anchors[index[i]])
            scores = torch.sigmoid(logits[i, index[i]])
            boxes, _ = select_proposals(boxes, scores, level_ids, size, nms_thresh=self.nms_thresh,
                                        post_nms_top_n=post_n, min_size=self.min_size,
                                        score_thresh=self.score_thresh)
            out.append(boxes)
        return out

    def losses(self, logits: Tensor, deltas: Tensor, anchors: Tensor, targets: list) -> dict:
        cls_losses, reg_losses, sampled = [], [], 0
        for i, t in enumerate(targets):
            gt = t["boxes"].to(device=logits.device, dtype=torch.float32)  # (G, 4)
            with torch.no_grad():
                matched, _ = match_anchors(anchors, gt, self.fg_iou, self.bg_iou, True)  # (N,)
            pos, neg = balanced_sample(matched, self.batch_size_per_image, self.positive_fraction, self.generator)
            idx = torch.cat([pos, neg])
            labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).to(logits.dtype)
            cls_losses.append(F.binary_cross_entropy_with_logits(logits[i, idx], labels, reduction="sum"))
            sampled += idx.numel()
            if pos.numel():
                target = self.box_coder.encode(gt[matched[pos]], anchors[pos])
                reg_losses.append(F.smooth_l1_loss(deltas[i, pos], target, beta=self.smooth_l1_beta, reduction="sum"))
        norm = max(sampled, 1)
        # No foreground anywhere: a zero that still reaches every box parameter.
        reg = sum(reg_losses) if reg_losses else deltas.sum() * 0.0
        return {"rpn_cls": sum(cls_losses) / norm, "rpn_reg": reg / norm}
