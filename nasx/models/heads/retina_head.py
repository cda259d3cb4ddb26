"""The RetinaNet head (Lin et al. 2017): a classification and a box tower shared by all
pyramid levels, then per-anchor class logits and box deltas.

Letters: B images, C channels, A anchors per location, K classes, H_l x W_l level l's size.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from nasx.models.layers import conv2d, norm2d

__all__ = ["RetinaHead"]


def _tower(channels: int, num_convs: int, norm: str | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        if norm is None:
            layers.append(nn.Conv2d(channels, channels, 3, padding=1))
        else:
            layers += [conv2d(channels, channels, 3, norm=norm, bias=True), norm2d(channels, norm)]
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class RetinaHead(nn.Module):
    """Args:
        in_channels: C of every pyramid level.
        num_anchors: A per location.
        num_classes: K (sigmoid per class, no background logit).
        num_convs: depth of each tower (4 in RetinaNet).
        norm: ``None`` (the paper: convs with bias, no norm) or a norm of ``NORMS`` (e.g. ``"gn"``).
        prior_prob: initial foreground probability of every logit, so the focal loss of the
            ~100k background anchors does not swamp the first steps.

    ``forward(features)`` takes L Tensor[B, C, H_l, W_l] and returns
    ``(cls_logits: L x Tensor[B, A * K, H_l, W_l], box_deltas: L x Tensor[B, A * 4, H_l, W_l])``.
    """

    def __init__(self, *, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4,
                 norm: str | None = None, prior_prob: float = 0.01):
        super().__init__()
        if num_classes < 1 or num_anchors < 1:
            raise ValueError(f"RetinaHead: num_classes and num_anchors must be >= 1, got {num_classes} and {num_anchors}")
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.cls_tower = _tower(in_channels, num_convs, norm)
        self.box_tower = _tower(in_channels, num_convs, norm)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.box_deltas = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits = [self.cls_logits(self.cls_tower(f)) for f in features]
        deltas = [self.box_deltas(self.box_tower(f)) for f in features]
        return logits, deltas
