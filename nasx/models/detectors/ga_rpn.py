"""GA-RPN: region proposals from guided anchors (Wang et al. CVPR 2019, "Region Proposal by Guided
Anchoring"), the RPN of SM-NAS's E4 / E5 detectors; the head is mmdet's ``GARPNHead``.

Instead of a fixed set of anchors per location, the head predicts where object centres are
(location branch) and which anchor shape fits there (shape branch), adapts the features to that
shape with a deformable conv, and scores and refines the one guided anchor per location as an RPN.

Letters: B images, L levels, N locations over all levels (level by level, row by row), A = 3 x 3
approximate anchors per location, G GT boxes, R proposals. Boxes are (x1, y1, x2, y2) in pixels
of the (resized, unpadded) input image.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasx.models.detectors.anchors import AnchorGenerator, BoxCoder, flatten_anchor_outputs
from nasx.models.detectors.ga_targets import (approx_shape_assign, bounded_iou_shape_loss, demote_weak_matches,
                                              location_targets, valid_gt_boxes)
from nasx.models.detectors.rpn import select_proposals
from nasx.models.detectors.sampling import balanced_sample
from nasx.ops import DeformConv2d, deform_conv2d, match_anchors, sigmoid_focal_loss

__all__ = ["FeatureAdaption", "GARPN", "GARPNHead"]

# A guided anchor's log-size relative to its square is clamped to +-log(1000 / 16) (BoxCoder's
# decode clamp), so an untrained shape branch can neither overflow nor collapse an anchor to 0.
SHAPE_CLAMP = math.log(1000.0 / 16)


class _OffsetDeformConv(DeformConv2d):
    """A 3x3 deformable conv v1 without bias whose offsets are given, not predicted from its input.
    Subclassing ``DeformConv2d`` (without its offset predictor) lets MAC counting recognise it."""

    def __init__(self, channels_in: int, channels_out: int, offset_groups: int):
        nn.Module.__init__(self)
        self.stride, self.padding, self.dilation = (1, 1), (1, 1), (1, 1)
        self.groups, self.offset_groups, self.modulated = 1, offset_groups, False
        self.weight = nn.Parameter(torch.empty(channels_out, channels_in, 3, 3))
        self.bias = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, input: Tensor, offset: Tensor) -> Tensor:
        return deform_conv2d(input, offset, self.weight, None, self.stride, self.padding, self.dilation)


class FeatureAdaption(nn.Module):
    """GA's feature adaption: a 1x1 conv turns the predicted shape (dw, dh) into the offsets of a
    3x3 deformable conv (``deform_groups`` offset groups) over the features, then ReLU. The shape is
    detached, as mmdet does: the adaption does not train the shape branch."""

    def __init__(self, channels: int, deform_groups: int = 4):
        super().__init__()
        self.conv_offset = nn.Conv2d(2, deform_groups * 2 * 9, 1, bias=False)
        self.conv_adaption = _OffsetDeformConv(channels, channels, deform_groups)
        nn.init.normal_(self.conv_offset.weight, std=0.1)  # mmdet's std for the offsets

    def forward(self, x: Tensor, shape: Tensor) -> Tensor:
        return F.relu(self.conv_adaption(x, self.conv_offset(shape.detach())))


class GARPNHead(nn.Module):
    """mmdet's ``GARPNHead`` layers, shared by all levels: ``rpn_conv`` 3x3 + ReLU, then
    ``conv_loc`` (1 centre logit), ``conv_shape`` (dw, dh), :class:`FeatureAdaption`, ``conv_cls``
    (1 objectness logit) and ``conv_reg`` (4 deltas) on the adapted features.

    ``forward(levels)``: L x Tensor[B, C, H_l, W_l] -> (cls L x [B, 1, H_l, W_l], reg L x [B, 4, ...],
    shape L x [B, 2, ...], loc L x [B, 1, ...]).
    """

    def __init__(self, *, in_channels: int, feat_channels: Optional[int] = None, deform_groups: int = 4):
        super().__init__()
        c = in_channels if feat_channels is None else feat_channels
        if c % deform_groups:
            raise ValueError(f"GARPNHead: feat_channels ({c}) must be a multiple of deform_groups ({deform_groups})")
        self.rpn_conv = nn.Conv2d(in_channels, c, 3, padding=1)
        self.conv_loc = nn.Conv2d(c, 1, 1)
        self.conv_shape = nn.Conv2d(c, 2, 1)
        self.feature_adaption = FeatureAdaption(c, deform_groups)
        self.conv_cls = nn.Conv2d(c, 1, 1)
        self.conv_reg = nn.Conv2d(c, 4, 1)
        for conv in (self.rpn_conv, self.conv_loc, self.conv_shape, self.conv_cls, self.conv_reg):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        # Centre prior 0.01, as RetinaNet's classifier: the focal loss starts from few positives.
        nn.init.constant_(self.conv_loc.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, levels: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        cls, reg, shape, loc = [], [], [], []
        for x in levels:
            x = F.relu(self.rpn_conv(x))
            s = self.conv_shape(x)
            adapted = self.feature_adaption(x, s)
            cls.append(self.conv_cls(adapted))
            reg.append(self.conv_reg(adapted))
            shape.append(s)
            loc.append(self.conv_loc(x))
        return cls, reg, shape, loc


class GARPN(nn.Module):
    """Guided-anchoring RPN with the interface of :class:`nasx.models.detectors.rpn.RPN`.

    Anchors: on level l (stride s) the square of side ``octave_base_scale * s`` centred on each cell
    at ``(j + 0.5) * s`` (nasx's anchor centres; mmdet uses ``j * s``) is reshaped by the shape branch
    to ``side * exp(shape_stds * (dw, dh))``.

    Training losses (B images summed, then normalised):
      * ``rpn_loc``: sigmoid focal loss (alpha, gamma) of the centre map against
        :func:`~nasx.models.detectors.ga_targets.location_targets`, over the non-ignored cells, divided
        by the number of positive cells.
      * ``rpn_shape``: locations get a GT by :func:`~nasx.models.detectors.ga_targets.approx_shape_assign`
        (``fg_iou`` / ``bg_iou`` / ``min_pos_iou`` on 3 scales x ``ratios`` approximate anchors),
        ``batch_size_per_image`` are sampled (``positive_fraction``); bounded-IoU loss (``shape_beta``)
        of the positives' guided shapes against their GTs' sizes, divided by the number sampled.
      * ``rpn_cls`` / ``rpn_reg``: the guided anchors (no gradient to the shape) are matched by
        ``nasx.ops.match_anchors(fg_iou, bg_iou, low-quality matches at IoU >= min_pos_iou)`` and
        sampled as the RPN; binary cross-entropy on the sampled objectness and smooth L1
        (``smooth_l1_beta``) on the positives' deltas (encoded with ``box_stds``), both divided by the
        number sampled (torchvision's RPN normalisation).
    GTs of zero width or height are dropped (see ``valid_gt_boxes``); an image without GTs trains
    on negatives only.

    Proposals (both modes, without gradient): per level the cells with centre probability >=
    ``loc_filter_thr`` (in inference only, as mmdet), their ``pre_nms_top_n`` best guided anchors by objectness, decoded, clipped,
    boxes with a side below ``min_size`` dropped, NMS at ``nms_thresh`` within each level and the
    best ``post_nms_top_n`` kept (``select_proposals``). pre/post are (training, inference) pairs.

    Args:
        in_channels: C of every level; feat_channels: the head's width (default C).
        strides: stride of each level, fine to coarse, doubling (GT levels assume it).
        octave_base_scale, scales_per_octave, ratios: square side in strides and the approximate anchors'
            scales ``2 ** (i / scales_per_octave)`` and height / width ratios (the shape targets).
        deform_groups: offset groups of the deformable conv (mmdet's 4).
        shape_stds: (w, h) scale of the shape deltas (mmdet's anchoring_stds 0.14; centres are not moved).
        box_stds: scale of the box deltas (mmdet's GA-RPN target_stds), BoxCoder weights 1 / std.
        fg_iou, bg_iou, min_pos_iou: thresholds of both assignments; a GT's best anchors below
            ``min_pos_iou`` stay unmatched (mmdet's rule; 0 gives torchvision's).
        focal_alpha, focal_gamma, shape_beta: loss settings (the paper's / mmdet's).
        smooth_l1_beta: 1.0 as mmdet: on deltas divided by ``box_stds`` (about 9x larger) it is the
            quadratic zone of torchvision's 1/9 on plain deltas.
        generator: a CPU ``torch.Generator`` for the sampling (reproducible draws).

    ``forward(features, image_sizes, targets=None)`` -> (proposals: B x Tensor[R_i, 4] by decreasing
    score, losses: ``{"rpn_loc", "rpn_shape", "rpn_cls", "rpn_reg"}`` in training mode, ``{}`` otherwise).
    """

    def __init__(self, *, in_channels: int, strides: Sequence[int], feat_channels: Optional[int] = None,
                 octave_base_scale: float = 8, scales_per_octave: int = 3, ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 deform_groups: int = 4, loc_filter_thr: float = 0.01, center_ratio: float = 0.2,
                 ignore_ratio: float = 0.5, pre_nms_top_n: Sequence[int] = (2000, 1000),
                 post_nms_top_n: Sequence[int] = (2000, 1000), nms_thresh: float = 0.7, min_size: float = 1e-3,
                 batch_size_per_image: int = 256, positive_fraction: float = 0.5, fg_iou: float = 0.7,
                 bg_iou: float = 0.3, min_pos_iou: float = 0.3, shape_stds: Sequence[float] = (0.14, 0.14),
                 box_stds: Sequence[float] = (0.07, 0.07, 0.11, 0.11), focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, shape_beta: float = 0.2, smooth_l1_beta: float = 1.0,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        if len(strides) < 1:
            raise ValueError("GARPN: strides must name at least one level")
        for name, pair in (("pre_nms_top_n", pre_nms_top_n), ("post_nms_top_n", post_nms_top_n)):
            if len(pair) != 2 or min(pair) < 1:
                raise ValueError(f"GARPN: {name} is a (training, inference) pair of positive counts, got {pair}")
        if not 0 <= bg_iou <= fg_iou <= 1:
            raise ValueError(f"GARPN: expected 0 <= bg_iou <= fg_iou <= 1, got {bg_iou}, {fg_iou}")
        if not 0 < center_ratio <= ignore_ratio <= 1:
            raise ValueError(f"GARPN: expected 0 < center_ratio <= ignore_ratio <= 1, got {center_ratio}, "
                             f"{ignore_ratio}")
        if len(shape_stds) != 2 or len(box_stds) != 4:
            raise ValueError(f"GARPN: shape_stds is (w, h) and box_stds (x, y, w, h), got {shape_stds}, {box_stds}")
        self.in_channels, self.strides = in_channels, tuple(int(s) for s in strides)
        self.head = GARPNHead(in_channels=in_channels, feat_channels=feat_channels, deform_groups=deform_groups)
        self.octave_base_scale = float(octave_base_scale)
        sizes = [self.octave_base_scale * s for s in self.strides]
        self.square_generator = AnchorGenerator(sizes=sizes, strides=self.strides, scales=(1.0,), aspect_ratios=(1.0,))
        self.approx_generator = AnchorGenerator(sizes=sizes, strides=self.strides,
                                                scales=[2 ** (i / scales_per_octave) for i in range(scales_per_octave)],
                                                aspect_ratios=tuple(ratios))
        self.box_coder = BoxCoder([1 / s for s in box_stds])
        self.shape_stds = tuple(float(s) for s in shape_stds)
        self.loc_filter_thr, self.center_ratio, self.ignore_ratio = loc_filter_thr, center_ratio, ignore_ratio
        self.pre_nms_top_n, self.post_nms_top_n = tuple(pre_nms_top_n), tuple(post_nms_top_n)
        self.nms_thresh, self.min_size = nms_thresh, min_size
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.fg_iou, self.bg_iou, self.min_pos_iou = fg_iou, bg_iou, min_pos_iou
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.shape_beta, self.smooth_l1_beta = shape_beta, smooth_l1_beta
        self.generator = generator

    def forward_dense(self, levels: list[Tensor]):
        """The convolutions only (what :func:`nasx.evaluate.count_detector_macs` counts)."""
        return self.head(levels)

    def forward(self, features: list[Tensor], image_sizes: list, targets: Optional[list] = None):
        self._check_inputs(features, image_sizes, targets)
        cls, reg, shape, loc = self.head(features)
        sizes = [tuple(x.shape[-2:]) for x in features]
        squares = self.square_generator(sizes, features[0].device)                      # L x (H_l * W_l, 4)
        counts = [s.shape[0] for s in squares]
        all_squares = torch.cat(squares)                                                  # (N, 4)
        flat_cls = flatten_anchor_outputs(cls, 1).squeeze(2).float()                      # (B, N)
        flat_reg = flatten_anchor_outputs(reg, 4).float()                                 # (B, N, 4)
        flat_shape = flatten_anchor_outputs(shape, 2).float()                             # (B, N, 2)
        flat_loc = flatten_anchor_outputs(loc, 1).squeeze(2).float()                      # (B, N)
        with torch.no_grad():
            anchors = self.guided_anchors(flat_shape, all_squares)                        # (B, N, 4)
            proposals = self.proposals(flat_cls, flat_reg, flat_loc, anchors, counts, image_sizes)
        if not self.training:
            return proposals, {}
        approxs = torch.cat(self.approx_generator(sizes, features[0].device)).view(len(all_squares), -1, 4)  # (N, A, 4)
        return proposals, self.losses(flat_cls, flat_reg, flat_shape, flat_loc, all_squares, approxs, anchors, sizes,
                                      targets)

    def _check_inputs(self, features, image_sizes, targets) -> None:
        if not isinstance(features, (list, tuple)) or len(features) != len(self.strides):
            n = len(features) if isinstance(features, (list, tuple)) else type(features).__name__
            raise ValueError(f"GARPN: got {n} feature levels, expected {len(self.strides)} "
                             f"(strides {list(self.strides)})")
        b = features[0].shape[0] if isinstance(features[0], Tensor) and features[0].dim() == 4 else None
        for level, x in enumerate(features):
            if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] != b or x.shape[1] != self.in_channels:
                shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"GARPN: feature level {level}: expected Tensor[B, {self.in_channels}, H, W] with the "
                                 f"same B on every level, got {shape}")
        if len(image_sizes) != b:
            raise ValueError(f"GARPN: got {b} images but {len(image_sizes)} image_sizes")
        if not self.training:
            return
        if targets is None:
            raise ValueError("GARPN: targets are required in training mode (call .eval() for inference)")
        if len(targets) != b:
            raise ValueError(f"GARPN: got {b} images but {len(targets)} targets")
        for i, t in enumerate(targets):
            boxes = t.get("boxes") if isinstance(t, dict) else None
            labels = t.get("labels") if isinstance(t, dict) else None
            if not isinstance(boxes, Tensor) or not isinstance(labels, Tensor):
                raise ValueError(f"GARPN: target {i} needs Tensors 'boxes' and 'labels'")
            if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
                raise ValueError(f"GARPN: target {i}: expected boxes Tensor[G, 4] and labels Tensor[G], got "
                                 f"{list(boxes.shape)} and {list(labels.shape)}")

    def anchor_sizes(self, shape: Tensor, sides: Tensor) -> Tensor:
        """(w, h) of guided anchors: shape deltas Tensor[..., 2], square sides Tensor[...] -> Tensor[..., 2]."""
        log_scale = (shape * shape.new_tensor(self.shape_stds)).clamp(min=-SHAPE_CLAMP, max=SHAPE_CLAMP)
        return sides[..., None] * torch.exp(log_scale)

    def guided_anchors(self, shape: Tensor, squares: Tensor) -> Tensor:
        """Squares Tensor[N, 4] reshaped by shape deltas Tensor[B, N, 2] -> Tensor[B, N, 4]."""
        centres = (squares[:, :2] + squares[:, 2:]) / 2                                  # (N, 2)
        half = self.anchor_sizes(shape, squares[:, 2] - squares[:, 0]) / 2               # (B, N, 2)
        return torch.cat([centres - half, centres + half], dim=-1)

    @torch.no_grad()
    def proposals(self, cls: Tensor, reg: Tensor, loc: Tensor, anchors: Tensor, counts: list[int],
                  image_sizes: list) -> list[Tensor]:
        pre_n = self.pre_nms_top_n[0 if self.training else 1]
        post_n = self.post_nms_top_n[0 if self.training else 1]
        starts = [sum(counts[:level]) for level in range(len(counts))]
        out = []
        for i, size in enumerate(image_sizes):
            index, levels = [], []
            for level, (start, n) in enumerate(zip(starts, counts)):
                # Only where an object centre is likely (the paper's location filter), then top-k. As mmdet,
                # not in training: the location branch is still learning, the RoI head needs proposals.
                thr = self.loc_filter_thr if not self.training else -math.inf
                kept = torch.nonzero(torch.sigmoid(loc[i, start:start + n]) >= thr).squeeze(1) + start
                top = kept[cls[i, kept].topk(min(pre_n, kept.numel())).indices]          # (k_l,)
                index.append(top)
                levels.append(torch.full_like(top, level))
            index, levels = torch.cat(index), torch.cat(levels)
            boxes = self.box_coder.decode(reg[i, index], anchors[i, index])               # (k, 4)
            boxes, _ = select_proposals(boxes, torch.sigmoid(cls[i, index]), levels, size,
                                        nms_thresh=self.nms_thresh, post_nms_top_n=post_n, min_size=self.min_size)
            out.append(boxes)
        return out

    def losses(self, cls: Tensor, reg: Tensor, shape: Tensor, loc: Tensor, squares: Tensor, approxs: Tensor,
               anchors: Tensor, sizes: list, targets: list) -> dict:
        """Shapes: cls, loc (B, N); reg (B, N, 4); shape (B, N, 2); squares (N, 4); approxs (N, A, 4);
        anchors (B, N, 4) guided, without gradient; sizes L x (H_l, W_l)."""
        sides = squares[:, 2] - squares[:, 0]                                             # (N,)
        base_size = self.octave_base_scale * self.strides[0]
        loc_sum, shape_sum, cls_sum, reg_sum = [], [], [], []
        loc_pos = shape_sampled = sampled = 0
        for i, t in enumerate(targets):
            gt = valid_gt_boxes(t["boxes"].to(device=cls.device, dtype=torch.float32))   # (G, 4)
            gt_wh = gt[:, 2:] - gt[:, :2]                                                 # (G, 2)
            with torch.no_grad():
                loc_target, loc_valid = location_targets(gt, self.strides, sizes, base_size, self.center_ratio,
                                                         self.ignore_ratio)              # (N,), (N,)
                shape_matched = approx_shape_assign(approxs, gt, self.fg_iou, self.bg_iou, self.min_pos_iou)  # (N,)
                matched, iou = match_anchors(anchors[i], gt, self.fg_iou, self.bg_iou, True)                 # (N,)
                matched = demote_weak_matches(matched, iou, self.bg_iou, self.min_pos_iou)
            loc_sum.append(sigmoid_focal_loss(loc[i, loc_valid], loc_target[loc_valid], self.focal_alpha,
                                              self.focal_gamma, reduction="sum"))
            loc_pos += int(loc_target.sum())

            pos, neg = balanced_sample(shape_matched, self.batch_size_per_image, self.positive_fraction,
                                       self.generator)
            pred_wh = self.anchor_sizes(shape[i, pos], sides[pos])                        # (P, 2)
            shape_sum.append(bounded_iou_shape_loss(pred_wh, gt_wh[shape_matched[pos]], self.shape_beta).sum())
            shape_sampled += pos.numel() + neg.numel()

            pos, neg = balanced_sample(matched, self.batch_size_per_image, self.positive_fraction, self.generator)
            idx = torch.cat([pos, neg])
            labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).to(cls.dtype)
            cls_sum.append(F.binary_cross_entropy_with_logits(cls[i, idx], labels, reduction="sum"))
            target = self.box_coder.encode(gt[matched[pos]], anchors[i, pos])             # (P, 4)
            # Indexing keeps the graph even when P = 0: a zero loss that still reaches the parameters.
            reg_sum.append(F.smooth_l1_loss(reg[i, pos], target, beta=self.smooth_l1_beta, reduction="sum"))
            sampled += idx.numel()
        return {"rpn_loc": sum(loc_sum) / max(loc_pos, 1), "rpn_shape": sum(shape_sum) / max(shape_sampled, 1),
                "rpn_cls": sum(cls_sum) / max(sampled, 1), "rpn_reg": sum(reg_sum) / max(sampled, 1)}
