"""Two-stage detectors: backbone -> (FPN) -> RPN or GA-RPN -> R-CNN stage(s).
Faster R-CNN (Ren et al. 2015; with FPN, Lin et al. 2017) has one stage, Cascade R-CNN
(Cai & Vasconcelos 2018) two to four; :mod:`nasx.spaces.detectors` builds them by name.

Letters: B images, L levels, R proposals. Boxes are (x1, y1, x2, y2) in pixels of the
(resized, unpadded) input image.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from nasx.models.detectors.targets import check_detector_inputs

__all__ = ["TwoStageDetector", "drop_degenerate_boxes", "level_stride"]


def level_stride(name: str) -> int:
    """The stride of a feature named like nasx's backbones and necks: ``c4`` / ``p4`` -> 16."""
    if len(name) < 2 or name[0] not in "cp" or not name[1:].isdigit():
        raise ValueError(f"feature level names are c<k> or p<k> (stride 2**k), got {name!r}")
    return 2 ** int(name[1:])


def drop_degenerate_boxes(target: dict, min_size: float = 1e-3) -> dict:
    """The target without GT boxes narrower or shorter than ``min_size`` pixels: their deltas would
    be infinite and, matching no anchor, they would pull every anchor in as a low-quality match."""
    boxes = target["boxes"]
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    if bool(keep.all()):
        return target
    return {**target, "boxes": boxes[keep], "labels": target["labels"][keep]}


class TwoStageDetector(nn.Module):
    """Args:
        backbone: images [B, 3, H, W] -> dict of features (``c2``..``c5``).
        neck: that dict -> dict of levels (an FPN), or ``None`` to use the backbone's features
            named in ``rpn_levels`` directly (the original single-level Faster R-CNN on C4).
        rpn: :class:`~nasx.models.detectors.rpn.RPN` or :class:`~nasx.models.detectors.ga_rpn.GARPN`:
            ``rpn(levels, image_sizes, targets) -> (proposals, losses)``.
        roi_heads: :class:`~nasx.models.detectors.roi_heads.RoIHeads`.
        rpn_levels: names of the levels the RPN sees (default: every level of the neck).
        roi_levels: names of the levels RoIs are pooled from (default: ``rpn_levels``); with an FPN
            the extra coarse levels made by pooling are usually left out (torchvision, mmdet).
        num_classes: K (for the record; the predictors hold it).

    ``forward(images, image_sizes=None, targets=None)``: in training mode the RPN's and the R-CNN
    stages' losses in one dict; in eval mode one ``{"boxes", "scores", "labels"}`` dict per image.
    GT boxes narrower or shorter than 1e-3 px are dropped (see :func:`drop_degenerate_boxes`).
    """

    def __init__(self, *, backbone: nn.Module, neck: Optional[nn.Module], rpn: nn.Module, roi_heads: nn.Module,
                 num_classes: int, rpn_levels: Optional[Sequence[str]] = None,
                 roi_levels: Optional[Sequence[str]] = None):
        super().__init__()
        if neck is None and rpn_levels is None:
            raise ValueError("TwoStageDetector: without a neck, name the backbone features to use in rpn_levels "
                             "(e.g. ['c4'])")
        self.backbone, self.neck, self.rpn, self.roi_heads = backbone, neck, rpn, roi_heads
        self.num_classes = num_classes
        self.rpn_levels = None if rpn_levels is None else tuple(rpn_levels)
        self.roi_levels = None if roi_levels is None else tuple(roi_levels)
        for name in (self.rpn_levels or ()) + (self.roi_levels or ()):
            level_stride(name)

    def levels(self, images: Tensor) -> dict[str, Tensor]:
        """The feature levels the RPN and the RoI heads read: the neck's, or the backbone's."""
        features = self.backbone(images)
        levels = self.neck(features) if self.neck is not None else features
        names = self.rpn_levels or tuple(levels)
        missing = [n for n in names + (self.roi_levels or ()) if n not in levels]
        if missing:
            raise ValueError(f"TwoStageDetector: levels {missing} do not exist; the "
                             f"{'neck' if self.neck is not None else 'backbone'} gives {list(levels)}")
        return levels

    def _split(self, levels: dict[str, Tensor]):
        rpn_names = self.rpn_levels or tuple(levels)
        roi_names = self.roi_levels or rpn_names
        return [levels[n] for n in rpn_names], [levels[n] for n in roi_names], [level_stride(n) for n in roi_names]

    def forward(self, images: Tensor, image_sizes: Optional[list] = None, targets: Optional[list] = None):
        image_sizes = check_detector_inputs(images, image_sizes, targets, self.training, type(self).__name__)
        if targets is not None:
            targets = [drop_degenerate_boxes(t) for t in targets]
        rpn_in, roi_in, strides = self._split(self.levels(images))
        proposals, rpn_losses = self.rpn(rpn_in, image_sizes, targets if self.training else None)
        if not self.training:
            return self.roi_heads(roi_in, strides, proposals, image_sizes)
        return {**rpn_losses, **self.roi_heads(roi_in, strides, proposals, image_sizes, targets)}

    def forward_dense(self, images: Tensor, num_rois: int = 1000):
        """Every multiply-accumulate of inference with ``num_rois`` RoIs per image, without the
        data-dependent parts (proposal selection, pooling, NMS): backbone, neck, the RPN's convs and
        the R-CNN stages' heads on ``num_rois`` pooled features per image. What
        :func:`nasx.evaluate.count_detector_macs` counts; runs on the ``meta`` device."""
        rpn_in, roi_in, _ = self._split(self.levels(images))
        self.rpn.forward_dense(rpn_in)
        pool = self.roi_heads.box_pool.output_size
        pooled = roi_in[0].new_zeros((images.shape[0] * num_rois, roi_in[0].shape[1], pool, pool))
        return self.roi_heads.forward_dense(pooled)
