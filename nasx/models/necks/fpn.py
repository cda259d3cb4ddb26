"""Feature Pyramid Network (Lin et al. 2017) with optional extra coarse levels.

Inputs are backbone features named ``c<k>`` (stride 2**k); outputs are ``p<k>`` at
the same strides plus ``extra_levels`` more, each a stride-2 3x3 conv of the previous
one (P6 from P5 or C5, P7 from ReLU(P6)), as in RetinaNet and FCOS.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasx.models.layers import conv2d, norm2d

__all__ = ["FPN"]


def _conv(in_channels, out_channels, kernel_size, stride, norm):
    if norm is None:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
    return nn.Sequential(conv2d(in_channels, out_channels, kernel_size, stride=stride, norm=norm),
                         norm2d(out_channels, norm))


class FPN(nn.Module):
    """Args:
        in_channels: backbone feature name -> channels, e.g. ``{"c3": 512, "c4": 1024, "c5": 2048}``;
            names must be consecutive levels.
        out_channels: channels of every output level.
        extra_levels: coarser levels added on top (2 for P6, P7).
        extra_from: ``"p5"`` (FCOS) or ``"c5"`` (original RetinaNet): the input of the first extra conv.
        norm: ``None`` (convs with bias, the usual FPN) or a norm of ``nasx.models.layers.NORMS``.

    ``forward(features)`` takes the backbone's dict and returns ``{"p3": [N, C, H/8, W/8], ...}``.
    """

    def __init__(self, *, in_channels: dict[str, int], out_channels: int = 256, extra_levels: int = 2,
                 extra_from: str = "p5", norm: str | None = None):
        super().__init__()
        names = list(in_channels)
        levels = [int(n[1:]) for n in names]
        if not names or levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"FPN inputs must be consecutive levels like c3, c4, c5; got {names}")
        if extra_from not in ("p5", "c5"):
            raise ValueError(f"extra_from must be 'p5' or 'c5', got {extra_from!r}")
        self.in_names = names
        self.out_names = [f"p{k}" for k in range(levels[0], levels[-1] + extra_levels + 1)]
        self.out_channels = out_channels
        self.extra_from = extra_from
        self.lateral = nn.ModuleList(_conv(in_channels[n], out_channels, 1, 1, norm) for n in names)
        self.output = nn.ModuleList(_conv(out_channels, out_channels, 3, 1, norm) for _ in names)
        extra_in = in_channels[names[-1]] if extra_from == "c5" else out_channels
        self.extra = nn.ModuleList(
            _conv(extra_in if i == 0 else out_channels, out_channels, 3, 2, norm) for i in range(extra_levels)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def strides(self) -> dict[str, int]:
        return {n: 2 ** int(n[1:]) for n in self.out_names}

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.in_names if n not in features]
        if missing:
            raise KeyError(f"FPN needs backbone features {self.in_names}; missing {missing}")
        inner = self.lateral[-1](features[self.in_names[-1]])
        outs = [self.output[-1](inner)]
        for i in range(len(self.in_names) - 2, -1, -1):
            lateral = self.lateral[i](features[self.in_names[i]])
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.output[i](inner))
        x = features[self.in_names[-1]] if self.extra_from == "c5" else outs[-1]
        for i, conv in enumerate(self.extra):
            x = conv(x if i == 0 else F.relu(x))
            outs.append(x)
        return dict(zip(self.out_names, outs))
