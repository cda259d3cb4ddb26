"""A RetinaNet-style head of depthwise-separable convs, weights shared across levels: the TF
object-detection API's ``WeightSharedConvolutionalBoxPredictor`` with ``use_depthwise: true``,
as FPNLite (``ssd_mobilenet_v2_fpnlite_320x320``) and NAS-EOD's detector use it.

As TF builds it: a tower of ``num_convs`` separable 3x3 convs (depthwise, pointwise, no bias) whose
conv weights every level shares, each followed by a norm **of its own per level** ("each feature
gets a separate batchnorm parameter even though they share the same convolution weights") and
ReLU6; then a separable 3x3 class predictor (bias initialised to the focal-loss prior) and a
separable 3x3 box predictor, both with bias and shared. ``share_tower=True`` (TF's
``share_prediction_tower``) runs one tower for both predictors; ``False`` gives each its own.

Letters: B images, C channels, L levels, A anchors per location, K classes, H_l x W_l level l's size.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from nasx.models.layers.norm import NORMS, norm2d
from nasx.models.layers.separable import SeparableConv2d

__all__ = ["SeparableRetinaHead", "SharedSeparableTower"]


class SharedSeparableTower(nn.Module):
    """``num_convs`` x (separable k x k C -> C, shared | norm of level l | ReLU6).

    ``forward(x, level)``: Tensor[B, C, H, W] of level ``level`` -> Tensor[B, C, H, W].
    """

    def __init__(self, *, channels: int, num_convs: int, num_levels: int, norm: str = "gn", kernel_size: int = 3):
        super().__init__()
        self.convs = nn.ModuleList(SeparableConv2d(channels, channels, kernel_size, norm=norm)
                                   for _ in range(num_convs))
        self.norms = nn.ModuleList(nn.ModuleList(norm2d(channels, norm) for _ in range(num_convs))
                                   for _ in range(num_levels))
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms[level]):
            x = self.act(norm(conv(x)))
        return x


class SeparableRetinaHead(nn.Module):
    """Args:
        in_channels: C of every level (TF: the predictor's ``depth``, equal to the FPN's width).
        num_anchors: A per location (6 in FPNLite: 3 aspect ratios x 2 scales).
        num_classes: K sigmoid outputs per anchor (TF FPNLite predicts K + 1 slots, background
            included; pass K + 1 for its exact size).
        num_levels: L (5 for P3-P7): the number of per-level norms.
        num_convs: tower depth (TF: 4; fewer is cheaper on a CPU; 0: the predictors read the levels).
        norm: the tower's norm (``"gn"`` as NAS-EOD's poster, ``"bn"`` as TF).
        share_tower: one tower for both predictors (TF FPNLite) or one each (RetinaNet).
        prior_prob: initial foreground probability of every logit (TF: bias -4.6 = prior 0.01).
        kernel_size: of the tower's and the predictors' depthwise convs.

    ``forward(features)`` takes L Tensor[B, C, H_l, W_l] and returns
    ``(cls_logits: L x Tensor[B, A * K, H_l, W_l], box_deltas: L x Tensor[B, A * 4, H_l, W_l])``.
    """

    def __init__(self, *, in_channels: int, num_anchors: int, num_classes: int, num_levels: int = 5,
                 num_convs: int = 4, norm: str = "gn", share_tower: bool = True, prior_prob: float = 0.01,
                 kernel_size: int = 3):
        super().__init__()
        if num_classes < 1 or num_anchors < 1 or num_levels < 1:
            raise ValueError(f"SeparableRetinaHead: num_classes, num_anchors and num_levels must be >= 1, got "
                             f"{num_classes}, {num_anchors} and {num_levels}")
        if num_convs < 0:
            raise ValueError(f"SeparableRetinaHead: num_convs must be >= 0, got {num_convs}")
        if norm not in NORMS:
            raise ValueError(f"SeparableRetinaHead: norm must be one of {NORMS}, got {norm!r}")
        self.num_anchors, self.num_classes, self.num_levels = num_anchors, num_classes, num_levels

        def tower():
            return SharedSeparableTower(channels=in_channels, num_convs=num_convs, num_levels=num_levels, norm=norm,
                                        kernel_size=kernel_size)

        self.tower = tower()
        self.cls_tower = None if share_tower else tower()
        self.cls_logits = SeparableConv2d(in_channels, num_anchors * num_classes, kernel_size, bias=True, norm=norm)
        self.box_deltas = SeparableConv2d(in_channels, num_anchors * 4, kernel_size, bias=True, norm=norm)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):   # TF's random_normal_initializer(stddev=0.01)
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.pointwise.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(features) != self.num_levels:
            raise ValueError(f"SeparableRetinaHead: expected {self.num_levels} levels (one norm set each), "
                             f"got {len(features)}")
        logits, deltas = [], []
        for level, f in enumerate(features):
            box = self.tower(f, level)
            cls = box if self.cls_tower is None else self.cls_tower(f, level)
            logits.append(self.cls_logits(cls))
            deltas.append(self.box_deltas(box))
        return logits, deltas
