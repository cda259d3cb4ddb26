"""The SSDLite prediction head: a depthwise-separable conv per feature map and output.

SSD predicts with a 3x3 conv on every feature map; SSDLite (MobileNetV2 §6.2) makes it a
3x3 depthwise conv (+ norm + ReLU6) followed by a 1x1 conv, for the class scores and the box
offsets separately. Maps have different channel counts, so nothing is shared across levels.

Letters: B images, L feature maps, A_l default boxes per location of map l, K classes
(plus one background class: SSD's softmax), H_l x W_l the size of map l.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nasx.models.layers import conv2d, norm2d

__all__ = ["HEAD_STYLES", "SSDLiteHead", "separable_predictor"]

# "tf": the TF object-detection API's SSDLite predictors (1x1 conv with bias); "mmdet": FNA's
# mmdet head (1x1 conv without bias, then a norm), for FNA's published parameter counts.
HEAD_STYLES = ("tf", "mmdet")


def separable_predictor(in_channels: int, out_channels: int, norm: str = "bn", style: str = "tf") -> nn.Sequential:
    """3x3 depthwise + norm + ReLU6, then a 1x1 conv to ``out_channels``: with bias (``"tf"``), or
    without bias and followed by a norm (``"mmdet"``)."""
    if style not in HEAD_STYLES:
        raise ValueError(f"separable_predictor: style must be one of {HEAD_STYLES}, got {style!r}")
    last = [nn.Conv2d(in_channels, out_channels, 1, bias=style == "tf")]
    if style == "mmdet":
        last.append(norm2d(out_channels, norm))
    return nn.Sequential(conv2d(in_channels, in_channels, 3, groups=in_channels, norm=norm),
                         norm2d(in_channels, norm), nn.ReLU6(inplace=True), *last)


class SSDLiteHead(nn.Module):
    """Args:
        in_channels: C_l of each feature map.
        num_anchors: A_l of each feature map.
        num_classes: K foreground classes; the class output has K + 1 channels per box,
            index 0 the background.
        norm: norm after the depthwise convs.
        style: the predictors' :data:`HEAD_STYLES`.

    ``forward(features)`` takes L Tensor[B, C_l, H_l, W_l] and returns
    ``(cls_logits: L x Tensor[B, A_l * (K + 1), H_l, W_l], box_deltas: L x Tensor[B, A_l * 4, H_l, W_l])``.
    """

    def __init__(self, *, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int, norm: str = "bn",
                 style: str = "tf"):
        super().__init__()
        if len(in_channels) != len(num_anchors):
            raise ValueError(f"SSDLiteHead: {len(in_channels)} in_channels but {len(num_anchors)} num_anchors; "
                             "expected one of each per feature map")
        if num_classes < 1:
            raise ValueError(f"SSDLiteHead: num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.num_anchors = num_classes, tuple(num_anchors)
        self.cls = nn.ModuleList(separable_predictor(c, a * (num_classes + 1), norm, style)
                                 for c, a in zip(in_channels, num_anchors))
        self.box = nn.ModuleList(separable_predictor(c, a * 4, norm, style) for c, a in zip(in_channels, num_anchors))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m.groups == 1:
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(features) != len(self.cls):
            raise ValueError(f"SSDLiteHead: expected {len(self.cls)} feature maps, got {len(features)}")
        return [p(f) for p, f in zip(self.cls, features)], [p(f) for p, f in zip(self.box, features)]
