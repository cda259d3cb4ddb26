"""SSDLite's extra feature layers (Sandler et al. 2018, MobileNetV2 §6.2).

SSD adds coarser feature maps after the backbone with plain 3x3 convs; SSDLite replaces every
one of them by a cheap block: 1x1 reduce -> 3x3 depthwise stride 2 -> 1x1 expand, each with
norm + ReLU6. On MobileNetV2 the four blocks take the 1280-channel stride-32 map down to
strides 64, 128, 256, 512 with 512, 256, 256, 128 channels (half of that inside each block).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nasx.models.layers import conv2d, fan_out_init_, norm2d

__all__ = ["SSDLiteExtra", "extra_block"]


def _conv_norm_relu6(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, groups: int = 1,
                     norm: str = "bn") -> list[nn.Module]:
    return [conv2d(in_channels, out_channels, kernel_size, stride=stride, groups=groups, norm=norm),
            norm2d(out_channels, norm), nn.ReLU6(inplace=True)]


def extra_block(in_channels: int, out_channels: int, *, hidden: int | None = None, norm: str = "bn") -> nn.Sequential:
    """1x1 to ``hidden`` (default ``out_channels // 2``), depthwise 3x3 / 2, 1x1 to ``out_channels``:
    Tensor[B, C_in, H, W] -> Tensor[B, C_out, ceil(H / 2), ceil(W / 2)]."""
    hidden = out_channels // 2 if hidden is None else hidden
    return nn.Sequential(*_conv_norm_relu6(in_channels, hidden, 1, norm=norm),
                         *_conv_norm_relu6(hidden, hidden, 3, stride=2, groups=hidden, norm=norm),
                         *_conv_norm_relu6(hidden, out_channels, 1, norm=norm))


class SSDLiteExtra(nn.Module):
    """The backbone's maps passed through, plus a chain of :func:`extra_block` s on the last
    one, each halving the resolution of the previous output.

    Args:
        in_channels: backbone feature name -> channels, e.g. ``{"c4": 576, "c5": 1280}``;
            names ``c<k>`` (stride 2**k), the last one the coarsest.
        channels: output channels of each extra block.
        norm: a norm of ``nasx.models.layers.NORMS``.

    ``forward(features)`` returns the input maps and ``c<k+1>``, ``c<k+2>``, ... (one per block,
    Tensor[B, channels[i], H_k / 2**(i+1), W_k / 2**(i+1)]), fine to coarse.
    """

    def __init__(self, *, in_channels: dict[str, int], channels: Sequence[int] = (512, 256, 256, 128),
                 norm: str = "bn"):
        super().__init__()
        if not in_channels:
            raise ValueError("SSDLiteExtra: in_channels is empty; expected backbone maps like {'c4': 576, 'c5': 1280}")
        self.in_names = list(in_channels)
        last = int(self.in_names[-1][1:])
        self.extra_names = [f"c{last + i + 1}" for i in range(len(channels))]
        self.out_channels = {**in_channels, **dict(zip(self.extra_names, (int(c) for c in channels)))}
        ins = [in_channels[self.in_names[-1]], *channels[:-1]]
        self.blocks = nn.ModuleList(extra_block(i, o, norm=norm) for i, o in zip(ins, channels))
        fan_out_init_(self)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.in_names if n not in features]
        if missing:
            raise KeyError(f"SSDLiteExtra needs backbone features {self.in_names}; missing {missing}")
        out = {n: features[n] for n in self.in_names}
        x = out[self.in_names[-1]]
        for name, block in zip(self.extra_names, self.blocks):
            x = block(x)
            out[name] = x
        return out
