"""Depthwise-separable convolutions as the TF object-detection API's "lite" models use them
(Keras ``SeparableConv2D``: a k x k depthwise conv, then a 1x1 pointwise conv, no norm between).

Letters: B images, C_in / C_out channels, H x W a feature map.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from nasx.models.layers.norm import conv2d, norm2d

__all__ = ["SeparableConv2d", "separable_norm_act"]


class SeparableConv2d(nn.Module):
    """k x k depthwise (``stride``, "same" padding, no bias) -> 1x1 pointwise (``bias`` optional).

    ``norm`` only picks the conv class (weight-standardised for ``"gn_ws"``); no norm layer is
    added here. ``forward(x)``: Tensor[B, C_in, H, W] -> Tensor[B, C_out, ceil(H / stride), ceil(W / stride)].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1,
                 bias: bool = False, norm: str = "bn"):
        super().__init__()
        self.depthwise = conv2d(in_channels, in_channels, kernel_size, stride=stride, groups=in_channels, norm=norm)
        self.pointwise = conv2d(in_channels, out_channels, 1, bias=bias, norm=norm)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def separable_norm_act(in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1,
                       norm: Optional[str] = "gn") -> nn.Sequential:
    """:class:`SeparableConv2d` -> norm -> ReLU6 (TF's ``create_conv_block(use_depthwise=True)``).
    ``norm=None``: no norm, and the pointwise conv gets a bias instead."""
    conv = SeparableConv2d(in_channels, out_channels, kernel_size, stride=stride, bias=norm is None,
                           norm=norm or "bn")
    layers: list[nn.Module] = [conv]
    if norm is not None:
        layers.append(norm2d(out_channels, norm))
    layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)
