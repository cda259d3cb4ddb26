"""Export graphs of the one-stage detectors (FCOS and every NAS-FCOS decoder, RetinaNet, SSDLite and
the adapted SSDLite networks): the detector's own backbone, neck and head, then its inference
written with :mod:`nasx.export.priors` and :mod:`nasx.export.selection`, so the graph has no
Python-side sizes or data-dependent branches.

``forward(images)`` with post-processing returns ``(boxes [D, 4], scores [D], labels [D] int64,
batch_index [D] int64)``: the detections of every image, image after image, each by decreasing
score, as the detector's eval-mode ``forward(images)`` gives them per image (boxes clipped to the
input's H x W); the batch is one more dimension, not a loop, so it can be dynamic too. Without
post-processing it returns the head's raw outputs, level by level (names in ``output_names``).
Letters: B images, N locations (anchors) over all levels, L levels, K classes, X logits per anchor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasx.export.priors import anchors, default_boxes, fcos_points
from nasx.export.selection import select_detections
from nasx.models.detectors import FCOS, RetinaNet, SSDLite
from nasx.models.detectors.anchors import flatten_anchor_outputs

__all__ = ["DETECTION_OUTPUTS", "FCOSGraph", "RawHeadGraph", "RetinaNetGraph", "SSDLiteGraph"]

DETECTION_OUTPUTS = ("boxes", "scores", "labels", "batch_index")


def _settings(model: nn.Module) -> dict:
    return {"score_thresh": model.score_thresh, "topk_candidates": model.topk_candidates,
            "nms_thresh": model.nms_thresh, "detections_per_img": model.detections_per_img}


class _OneStage(nn.Module):
    """Backbone -> neck -> head of ``model`` (children shared, not copied)."""

    head_outputs: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, postprocess: bool):
        super().__init__()
        self.model, self.postprocess = model, bool(postprocess)

    @property
    def output_names(self) -> list[str]:
        if self.postprocess:
            return list(DETECTION_OUTPUTS)
        levels = self.num_levels
        return [f"{name}_{level}" for name in self.head_outputs for level in range(levels)]

    def levels(self, images: Tensor) -> list[Tensor]:
        return list(self.model.neck(self.model.backbone(images)).values())


class FCOSGraph(_OneStage):
    """:class:`~nasx.models.detectors.FCOS` (and NAS-FCOS): scores sqrt(sigmoid(cls) * sigmoid(ctr)),
    boxes = point -+ regressed distances x stride."""

    head_outputs = ("cls_logits", "box_reg", "centerness")

    @property
    def num_levels(self) -> int:
        return len(self.model.strides)

    def forward(self, images: Tensor):
        model = self.model
        levels = self.levels(images)
        if len(levels) != len(model.strides):
            raise ValueError(f"FCOS: the neck returned {len(levels)} levels, expected {len(model.strides)}")
        logits, box_reg, ctr = model.head(levels)
        if not self.postprocess:
            return (*logits, *box_reg, *ctr)
        points = torch.cat(fcos_points([x.shape[-2:] for x in logits], model.strides, images.device))   # (N, 2)
        counts = [x.shape[-2] * x.shape[-1] for x in logits]
        stride = torch.cat([torch.full((n,), float(s), device=images.device) for n, s in zip(counts, model.strides)])
        flat_logits = torch.cat([x.flatten(2) for x in logits], dim=2).transpose(1, 2).float()       # (B, N, K)
        flat_ctr = torch.cat([x.flatten(2) for x in ctr], dim=2).transpose(1, 2).float()             # (B, N, 1)
        flat_reg = torch.cat([x.flatten(2) for x in box_reg], dim=2).transpose(1, 2).float()         # (B, N, 4)
        scores = torch.sqrt(torch.sigmoid(flat_logits) * torch.sigmoid(flat_ctr))                    # (B, N, K)

        def decode(image, loc):
            p, d = points[loc], flat_reg[image, loc] * stride[loc, None]                 # distances in pixels
            return torch.cat([p - d[:, :2], p + d[:, 2:]], dim=1)

        return select_detections(list(scores.split(counts, dim=1)), decode, images.shape[-2:], **_settings(model))


class _AnchorBased(_OneStage):
    head_outputs = ("cls_logits", "box_deltas")
    num_logits_extra = 0  # logits per anchor beyond K (1 with a background class)

    def scores(self, logits: Tensor) -> Tensor:
        """Tensor[B, N, X] logits -> Tensor[B, N, K] class probabilities."""
        raise NotImplementedError

    def priors(self, levels: list[Tensor], images: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def forward(self, images: Tensor):
        model = self.model
        levels = self.levels(images)
        logits, deltas = model.head(levels)
        if not self.postprocess:
            return (*logits, *deltas)
        per_level = self.priors(levels, images)
        counts, priors = [p.shape[0] for p in per_level], torch.cat(per_level)                 # N_l, (N, 4)
        flat_logits = flatten_anchor_outputs(logits, model.num_classes + self.num_logits_extra).float()  # (B, N, X)
        flat_deltas = flatten_anchor_outputs(deltas, 4).float()                                # (B, N, 4)

        def decode(image, idx):
            return model.box_coder.decode(flat_deltas[image, idx], priors[idx])

        return select_detections(list(self.scores(flat_logits).split(counts, dim=1)), decode, images.shape[-2:],
                                 **_settings(model))


class RetinaNetGraph(_AnchorBased):
    """:class:`~nasx.models.detectors.RetinaNet`: sigmoid scores, deltas on the FPN anchors."""

    @property
    def num_levels(self) -> int:
        return len(self.model.anchor_generator.strides)

    def scores(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def priors(self, levels, images):
        if len(levels) != len(self.model.anchor_generator.strides):
            raise ValueError(f"RetinaNet: the neck returned {len(levels)} levels, the anchors expect "
                             f"{len(self.model.anchor_generator.strides)}")
        return anchors(self.model.anchor_generator, [x.shape[-2:] for x in levels], images.device)


class SSDLiteGraph(_AnchorBased):
    """:class:`~nasx.models.detectors.SSDLite`: softmax over background + K, deltas on the default boxes."""

    num_logits_extra = 1

    @property
    def num_levels(self) -> int:
        return self.model.box_generator.num_levels

    def scores(self, logits: Tensor) -> Tensor:
        return F.softmax(logits, dim=-1)[..., 1:]

    def priors(self, levels, images):
        return default_boxes(self.model.box_generator, [x.shape[-2:] for x in levels], images.shape[-2:],
                             images.device)


class RawHeadGraph(nn.Module):
    """Any detector with ``backbone``, ``neck`` (-> dict of levels) and ``head`` (-> per-level lists, or a
    tuple of them): the head's outputs, flattened in their order (the exporter names them ``output_<i>``)."""

    postprocess = False
    output_names = None

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor):
        out = self.model.head(list(self.model.neck(self.model.backbone(images)).values()))
        if isinstance(out, Tensor):
            return out
        return tuple(t for part in out for t in (part if isinstance(part, (list, tuple)) else [part]))


ONE_STAGE_GRAPHS = {FCOS: FCOSGraph, RetinaNet: RetinaNetGraph, SSDLite: SSDLiteGraph}
