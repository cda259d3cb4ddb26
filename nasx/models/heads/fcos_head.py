"""The FCOS prediction head (Tian et al. 2019): shared conv towers over P3-P7, then
classification logits, box distances and centerness per location.

Letters: B images, C channels, K classes, L levels, H_l x W_l the size of level l.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nasx.models.layers import conv2d, norm2d

__all__ = ["BOX_ACTIVATIONS", "Scale", "FCOSPredictor", "FCOSHead"]

BOX_ACTIVATIONS = ("relu", "exp")


class Scale(nn.Module):
    """A learnable scalar multiplier (one per pyramid level: levels share the head's weights
    but regress distances of different magnitude)."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class FCOSPredictor(nn.Module):
    """The last layers of an FCOS head: 3x3 convs from tower features to predictions.

    Args:
        in_channels: channels of the tower features.
        num_classes: K, foreground classes (sigmoid per class, no background logit).
        num_levels: L, for the per-level regression scales.
        prior_prob: initial foreground probability of every logit (focal-loss init).
        box_activation: how the box branch's output becomes a distance: ``"relu"`` (the FCOS
            repository's, with stride-normalised targets; torchvision and mmdet do the same) or
            ``"exp"`` (the FCOS paper's exp(s·x)). A ReLU branch can die: when every output at the
            positive locations falls below 0, GIoU sees zero-size boxes, its loss sits at 1.000 and no
            gradient reaches the branch again (tianzhi0549/FCOS#310); exp never stops passing gradient.

    ``forward(cls_feats, reg_feats)`` takes the classification- and regression-tower outputs
    (lists of L Tensor[B, C, H_l, W_l]; centerness is predicted from the regression tower) and
    returns ``(cls_logits [B, K, H_l, W_l], box_reg [B, 4, H_l, W_l], centerness [B, 1, H_l, W_l])``
    per level; box_reg holds non-negative (l, t, r, b) distances in units of the level's stride.
    """

    def __init__(self, *, in_channels: int, num_classes: int, num_levels: int = 5, prior_prob: float = 0.01,
                 box_activation: str = "relu"):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"FCOSPredictor: num_classes must be >= 1, got {num_classes}")
        if box_activation not in BOX_ACTIVATIONS:
            raise ValueError(f"FCOSPredictor: box_activation must be one of {BOX_ACTIVATIONS}, got {box_activation!r}")
        self.num_classes, self.box_activation = num_classes, box_activation
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.box_reg = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in range(num_levels))
        for conv in (self.cls_logits, self.box_reg, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, cls_feats: list[torch.Tensor], reg_feats: list[torch.Tensor]):
        if len(cls_feats) != len(self.scales) or len(reg_feats) != len(self.scales):
            raise ValueError(f"FCOSPredictor: expected {len(self.scales)} levels, got "
                             f"{len(cls_feats)} classification and {len(reg_feats)} regression features")
        logits = [self.cls_logits(f) for f in cls_feats]
        # Distances in units of the level's stride (FCOS' "norm_reg_targets"); exp's argument is capped
        # so that a wild step cannot overflow (e^20 strides is far beyond any image).
        act = F.relu if self.box_activation == "relu" else (lambda x: torch.exp(x.clamp(max=20.0)))
        boxes = [act(scale(self.box_reg(f))) for f, scale in zip(reg_feats, self.scales)]
        ctr = [self.centerness(f) for f in reg_feats]
        return logits, boxes, ctr


def _tower(channels: int, num_convs: int, norm: str | None) -> nn.Sequential:
    layers = []
    for _ in range(num_convs):
        if norm is None:
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        else:
            layers += [conv2d(channels, channels, 3, norm=norm, bias=True), norm2d(channels, norm), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """The hand-designed FCOS head: a classification and a regression tower of ``num_convs``
    3x3 convs (+ GroupNorm + ReLU) each, shared by all levels, then :class:`FCOSPredictor`.

    Args:
        in_channels: channels of every pyramid level.
        num_classes: K.
        num_levels: L (5 for P3-P7).
        num_convs: depth of each tower (4 in FCOS).
        norm: norm in the towers: ``"gn"`` (FCOS), ``"gn_ws"``, ``"bn"`` or None.
        prior_prob, box_activation: see :class:`FCOSPredictor`.
    """

    def __init__(self, *, in_channels: int, num_classes: int, num_levels: int = 5, num_convs: int = 4,
                 norm: str | None = "gn", prior_prob: float = 0.01, box_activation: str = "relu"):
        super().__init__()
        self.cls_tower = _tower(in_channels, num_convs, norm)
        self.reg_tower = _tower(in_channels, num_convs, norm)
        for m in [*self.cls_tower.modules(), *self.reg_tower.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        self.predictor = FCOSPredictor(in_channels=in_channels, num_classes=num_classes,
                                       num_levels=num_levels, prior_prob=prior_prob, box_activation=box_activation)

    def forward(self, features: list[torch.Tensor]):
        return self.predictor([self.cls_tower(f) for f in features], [self.reg_tower(f) for f in features])
