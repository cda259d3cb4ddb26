"""Export graph of the two-stage detectors (Faster / Cascade R-CNN with an RPN or a guided-anchoring
RPN, and SM-NAS's models): the detector's own modules, with the proposal selection, the multi-level
RoIAlign and the per-class selection written without data-dependent branches.

What differs from the detector's eval-mode code, and why it gives the same detections:

* the images of a batch are a dimension, not a loop: proposals and detections carry their image
  index and NMS runs once with one category per (image, level) or (image, class) (see
  :mod:`nasx.export.selection`); the R-CNN stages already ran on the whole batch;
* per-level top-k of the proposals: ``min(pre_nms_top_n, N_l)`` is computed symbolically;
* GA-RPN's location filter: the objectness of filtered-out cells is set to -inf before the
  top-k and those cells dropped after it, instead of taking the top-k of a filtered list of
  unknown length (the same cells, by decreasing objectness);
* multi-level RoIAlign: each level pools the RoIs assigned to it (``nonzero``) and scatters
  them into place, without skipping an empty level (RoiAlign of zero RoIs is empty).

``forward(images)`` with post-processing returns ``(boxes [D, 4], scores [D], labels [D] int64,
batch_index [D] int64)`` as :mod:`nasx.export.one_stage`. Without post-processing it returns the
dense part only — the RPN head's outputs level by level and the feature levels the RoI heads read —
because the R-CNN stages run on proposals that NMS chooses.

Letters: B images, L levels, R RoIs, C channels, S RoI size, K classes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasx.export.one_stage import DETECTION_OUTPUTS
from nasx.export.priors import anchors
from nasx.export.selection import batched_nms, clip_to_image, first_per_image, nonzero, select_proposals
from nasx.models.detectors.anchors import flatten_anchor_outputs
from nasx.models.detectors.ga_rpn import GARPN
from nasx.models.detectors.roi_pool import assign_levels
from nasx.models.detectors.rpn import RPN
from nasx.models.detectors.two_stage import TwoStageDetector, level_stride

__all__ = ["TwoStageGraph"]


def _roi_align(x: Tensor, rois: Tensor, size: int, stride: int, ratio: int, aligned: bool) -> Tensor:
    """``torch.ops.nasx.roi_align`` of rois Tensor[R, 5] on one level -> Tensor[R, C, size, size]."""
    return torch.ops.nasx.roi_align.default(x, rois, 1.0 / stride, size, size, ratio, aligned)


def _repeat(x: Tensor, n: int) -> Tensor:
    """``x.repeat_interleave(n, dim=0)`` as expand + reshape: the same values, but a size n x R instead of a
    new data-dependent size whose bound (n x int64's max) torch.export would assert and ONNX cannot hold."""
    return x[:, None].expand(x.shape[0], n, *x.shape[1:]).reshape(-1, *x.shape[1:])


class TwoStageGraph(nn.Module):
    """:class:`~nasx.models.detectors.two_stage.TwoStageDetector` as an export graph."""

    def __init__(self, model: TwoStageDetector, postprocess: bool):
        super().__init__()
        if not isinstance(model.rpn, (RPN, GARPN)):
            raise TypeError(f"TwoStageGraph: proposals are exported for nasx's RPN and GARPN, got "
                            f"{type(model.rpn).__name__}")
        self.model, self.postprocess = model, bool(postprocess)

    @property
    def ga(self) -> bool:
        return isinstance(self.model.rpn, GARPN)

    @property
    def output_names(self) -> list[str] | None:
        """The graph's output names (None, i.e. ``output_<i>``, for raw outputs of a neck that does not name
        its levels through ``strides``)."""
        if self.postprocess:
            return list(DETECTION_OUTPUTS)
        model = self.model
        rpn_names = model.rpn_levels or tuple(getattr(model.neck, "strides", None) or ())
        if not rpn_names:
            return None
        parts = ("rpn_objectness", "rpn_deltas", "rpn_shape", "rpn_location") if self.ga else \
            ("rpn_objectness", "rpn_deltas")
        return ([f"{p}_{n}" for p in parts for n in rpn_names] +
                [f"features_{n}" for n in model.roi_levels or rpn_names])

    def forward(self, images: Tensor):
        model = self.model
        levels = model.levels(images)
        rpn_names = model.rpn_levels or tuple(levels)
        roi_names = model.roi_levels or rpn_names
        rpn_in, roi_in = [levels[n] for n in rpn_names], [levels[n] for n in roi_names]
        if not self.postprocess:
            return (*[t for part in model.rpn.head(rpn_in) for t in part], *roi_in)
        image_size = images.shape[-2:]
        boxes, image = self.ga_proposals(rpn_in, image_size) if self.ga else self.rpn_proposals(rpn_in, image_size)
        return self.detections(roi_in, [level_stride(n) for n in roi_names], boxes, image, image_size,
                               images.shape[0])

    # -- proposals: (boxes Tensor[R, 4], image Tensor[R]), image after image, by decreasing objectness ----
    def rpn_proposals(self, levels: list[Tensor], image_size) -> tuple[Tensor, Tensor]:
        """``RPN.proposals`` in eval mode."""
        rpn = self.model.rpn
        logits, deltas = rpn.head(levels)
        priors = anchors(rpn.anchor_generator, [x.shape[-2:] for x in levels], levels[0].device)
        flat_logits = flatten_anchor_outputs(logits, 1).squeeze(2).float()      # (B, N)
        flat_deltas = flatten_anchor_outputs(deltas, 4).float()                 # (B, N, 4)
        pre_n, post_n = rpn.pre_nms_top_n[1], rpn.post_nms_top_n[1]
        index, level_ids, start = [], [], 0
        for level, a in enumerate(priors):
            n = a.shape[0]
            top = flat_logits[:, start : start + n].topk(torch.sym_min(pre_n, n), dim=1).indices + start
            index.append(top)
            level_ids.append(torch.full((top.shape[1],), level, dtype=torch.int64, device=top.device))
            start = start + n
        index = torch.cat(index, dim=1)                                          # (B, T)
        b, t = index.shape
        image = torch.arange(b, device=index.device)[:, None].expand(b, t).reshape(-1)
        index, level_ids = index.reshape(-1), torch.cat(level_ids).repeat(b)   # (B T,) image after image
        boxes = rpn.box_coder.decode(flat_deltas[image, index], torch.cat(priors)[index])
        return select_proposals(boxes, torch.sigmoid(flat_logits[image, index]), level_ids, image, image_size,
                                num_images=b, num_levels=len(priors), nms_thresh=rpn.nms_thresh,
                                post_nms_top_n=post_n, min_size=rpn.min_size, score_thresh=rpn.score_thresh)

    def ga_proposals(self, levels: list[Tensor], image_size) -> tuple[Tensor, Tensor]:
        """``GARPN.proposals`` in eval mode (location filter at ``loc_filter_thr``)."""
        rpn = self.model.rpn
        if len(levels) != len(rpn.strides):
            raise ValueError(f"GARPN: got {len(levels)} feature levels, expected {len(rpn.strides)}")
        cls, reg, shape, loc = rpn.head(levels)
        squares = anchors(rpn.square_generator, [x.shape[-2:] for x in levels], levels[0].device)
        flat_cls = flatten_anchor_outputs(cls, 1).squeeze(2).float()            # (B, N)
        flat_reg = flatten_anchor_outputs(reg, 4).float()                       # (B, N, 4)
        flat_shape = flatten_anchor_outputs(shape, 2).float()                   # (B, N, 2)
        allowed = torch.sigmoid(flatten_anchor_outputs(loc, 1).squeeze(2).float()) >= rpn.loc_filter_thr
        guided = rpn.guided_anchors(flat_shape, torch.cat(squares))             # (B, N, 4)
        pre_n, post_n = rpn.pre_nms_top_n[1], rpn.post_nms_top_n[1]
        masked = torch.where(allowed, flat_cls, -math.inf)
        images, index, level_ids, start = [], [], [], 0
        for level, sq in enumerate(squares):
            n = sq.shape[0]
            top = masked[:, start : start + n].topk(torch.sym_min(pre_n, n), dim=1).indices + start  # (B, k)
            image, j = nonzero(torch.gather(allowed, 1, top)).unbind(1)   # filtered-out cells drop here
            images.append(image)
            index.append(top[image, j])
            level_ids.append(torch.full_like(j, level))
            start = start + n
        # Per level, image after image: reorder to image after image, level by level, as the detector lists them.
        image, index, level_ids = torch.cat(images), torch.cat(index), torch.cat(level_ids)
        order = torch.argsort(image * index.shape[0] + torch.arange(index.shape[0], device=image.device))
        image, index, level_ids = image[order], index[order], level_ids[order]
        boxes = rpn.box_coder.decode(flat_reg[image, index], guided[image, index])
        return select_proposals(boxes, torch.sigmoid(flat_cls[image, index]), level_ids, image, image_size,
                                num_images=levels[0].shape[0], num_levels=len(squares), nms_thresh=rpn.nms_thresh,
                                post_nms_top_n=post_n, min_size=rpn.min_size)

    # -- R-CNN stages ------------------------------------------------------------------------
    def pool(self, levels: list[Tensor], strides: list[int], rois: Tensor) -> Tensor:
        """``MultiLevelRoIAlign`` of rois Tensor[R, 5] (image, box) -> Tensor[R, C, S, S], empty levels included."""
        pooler = self.model.roi_heads.box_pool
        s, ratio, aligned = pooler.output_size, pooler.sampling_ratio, pooler.aligned
        if len(levels) == 1:
            return _roi_align(levels[0], rois, s, strides[0], ratio, aligned)
        logs = [int(math.log2(v)) for v in strides]
        which = assign_levels(rois[:, 1:], logs, pooler.canonical_size, pooler.canonical_level)     # (R,)
        out = levels[0].new_zeros((rois.shape[0], levels[0].shape[1], s, s))
        for k, (x, stride) in enumerate(zip(levels, strides)):
            idx = nonzero(which == k).squeeze(1)
            out = out.index_put((idx,), _roi_align(x, rois[idx], s, stride, ratio, aligned))
        return out

    def detections(self, levels: list[Tensor], strides: list[int], boxes: Tensor, image: Tensor, image_size,
                   num_images) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``RoIHeads.detections`` of proposals (boxes Tensor[R, 4], image Tensor[R]) -> the four outputs."""
        heads = self.model.roi_heads
        column = image.to(boxes.dtype)[:, None]
        rois, probs = torch.cat([column, boxes], dim=1), []                                 # (R, 5)
        for t in range(heads.num_stages):
            logits, deltas = heads.box_predictors[t](heads.box_heads[t](self.pool(levels, strides, rois)))
            logits, deltas = logits.float(), deltas.float()
            probs.append(F.softmax(logits, dim=-1))
            m = deltas.shape[1] // 4
            # The RoI repeated for each of its m boxes (expand, not repeat_interleave: see _repeat).
            decoded = heads.coders[t].decode(deltas.reshape(-1, 4), _repeat(rois[:, 1:], m)).reshape(-1, m, 4)
            if t + 1 < heads.num_stages:
                rois = torch.cat([column, clip_to_image(decoded[:, 0], image_size)], dim=1)
        scores = torch.stack(probs).mean(dim=0) if len(probs) > 1 else probs[0]             # (R, K + 1)
        k = heads.num_classes
        # Per class, as RoIHeads: background dropped, score threshold, minimum size, NMS, the best D per image.
        boxes = clip_to_image(decoded.expand(-1, k + 1, 4), image_size)[:, 1:].reshape(-1, 4)
        labels = torch.arange(k, device=scores.device).expand(scores.shape[0], -1).reshape(-1)
        image = _repeat(image, k)
        scores = scores[:, 1:].reshape(-1)
        keep = nonzero(scores > heads.score_thresh).squeeze(1)
        boxes, scores, labels, image = boxes[keep], scores[keep], labels[keep], image[keep]
        ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = nonzero((ws >= heads.min_size) & (hs >= heads.min_size)).squeeze(1)
        boxes, scores, labels, image = boxes[keep], scores[keep], labels[keep], image[keep]
        keep = batched_nms(boxes, scores, image * k + labels, heads.nms_thresh)
        keep = keep[first_per_image(image[keep], heads.detections_per_img, num_images)]
        return boxes[keep], scores[keep], labels[keep], image[keep]
