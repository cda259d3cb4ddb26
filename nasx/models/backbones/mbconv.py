"""MobileNetV2-style backbones of inverted residual (MBConv) blocks.

Every block chooses its depthwise kernel k, expansion e and squeeze-excitation on
or off: the per-layer choices that NAS-EOD and the MobileNetV2 -> SSDLite adaptation
search over. With k = 3, e as in MobileNetV2 and no SE, the blocks are torchvision's
InvertedResidual parameter for parameter.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from nasx.models.layers import conv2d, fan_out_init_, norm2d

__all__ = ["InvertedResidual", "MBConvBackbone", "SqueezeExcite", "conv_norm_act"]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor`` without going more than 10% below ``value``."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def conv_norm_act(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, groups: int = 1,
                  norm: str = "bn", act: bool = True) -> nn.Sequential:
    layers = [conv2d(in_channels, out_channels, kernel_size, stride=stride, groups=groups, norm=norm),
              norm2d(out_channels, norm)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al. 2018): global pool, 1x1 reduce (x1/4), ReLU, 1x1 expand, sigmoid gate."""

    def __init__(self, *, channels: int, reduction: int = 4):
        super().__init__()
        squeezed = make_divisible(channels / reduction)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class InvertedResidual(nn.Module):
    """1x1 expand (x e, skipped when e = 1), k x k depthwise (strided), optional SE,
    1x1 linear projection; identity shortcut when stride is 1 and channels match."""

    def __init__(self, *, in_channels: int, out_channels: int, kernel_size: int = 3, expansion: int = 6,
                 stride: int = 1, se: bool = False, norm: str = "bn"):
        super().__init__()
        hidden = int(round(in_channels * expansion))
        self.out_channels = out_channels
        self.use_shortcut = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_norm_act(in_channels, hidden, 1, norm=norm))
        layers.append(conv_norm_act(hidden, hidden, kernel_size, stride=stride, groups=hidden, norm=norm))
        if se:
            layers.append(SqueezeExcite(channels=hidden))
        layers.append(conv_norm_act(hidden, out_channels, 1, norm=norm, act=False))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_shortcut else out


class MBConvBackbone(nn.Module):
    """A stride-2 stem, stages of :class:`InvertedResidual` blocks and an optional 1x1 head.

    Args:
        stem: module mapping [N, 3, H, W] to [N, C, H/2, W/2].
        stages: one ``nn.Sequential`` of blocks per stage, each with a ``stride`` (of its
            first block) given in ``stage_strides``.
        stage_strides: stride of each stage (1 or 2).
        head: optional module applied after the last stage (MobileNetV2's 1x1 to 1280).
        out_features: which features to return. The feature ``"c{k}"`` is the output at
            stride 2**k of the last stage with that stride (the head's, for the last).

    ``forward(images)`` returns a dict name -> Tensor[N, C, H / 2**k, W / 2**k].
    """

    def __init__(self, *, stem: nn.Module, stem_channels: int, stages: list[nn.Sequential],
                 stage_strides: list[int], head: nn.Module | None = None, head_channels: int | None = None,
                 out_features: tuple[str, ...] | None = None):
        super().__init__()
        if len(stages) != len(stage_strides):
            raise ValueError(f"got {len(stages)} stages but {len(stage_strides)} strides")
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head
        # Name each stage's output by its stride; a later stage at the same stride wins.
        log_stride, self._stage_names, channels = 1, [], {"c1": stem_channels}
        for stage, s in zip(stages, stage_strides):
            log_stride += int(math.log2(s))
            self._stage_names.append(f"c{log_stride}")
            channels[f"c{log_stride}"] = stage[-1].out_channels
        self._last = self._stage_names[-1] if stages else "c1"
        if head is not None:
            channels[self._last] = head_channels
        self.channels = channels
        self.strides = {n: 2 ** int(n[1:]) for n in channels}
        self.out_features = tuple(out_features) if out_features is not None else tuple(channels)[-4:]
        unknown = [n for n in self.out_features if n not in channels]
        if unknown:
            raise ValueError(f"out_features {unknown} do not exist; this backbone has {list(channels)}")
        fan_out_init_(self)

    @property
    def out_channels(self) -> list[int]:
        return [self.channels[n] for n in self.out_features]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(images)
        feats = {"c1": x}
        for name, stage in zip(self._stage_names, self.stages):
            x = stage(x)
            feats[name] = x
        if self.head is not None:
            feats[self._last] = self.head(x)
        return {n: feats[n] for n in self.out_features}
