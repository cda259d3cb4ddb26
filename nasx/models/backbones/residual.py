"""Residual backbones: ResNet / ResNeXt blocks stacked in stages.

Blocks follow torchvision's ResNet v1.5 (stride on the 3x3 conv of a bottleneck,
projection shortcut = 1x1 conv + norm when the shape changes), so the SM-NAS
encodings of ResNet-18/50 and ResNeXt-50 build torchvision's trunks parameter for
parameter. Letters in shape comments: N batch, C channels, H/W height/width.
"""
from __future__ import annotations

import torch
from torch import nn

from nasx.models.layers import conv2d, fan_out_init_, norm2d

__all__ = ["BasicBlock", "Bottleneck", "ResidualBackbone", "resnet_stem", "sm_nas_stem"]


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: str) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(conv2d(in_channels, out_channels, 1, stride=stride, norm=norm), norm2d(out_channels, norm))


class BasicBlock(nn.Module):
    """Two 3x3 convs; ``out_channels = planes``."""

    expansion = 1

    def __init__(self, *, in_channels: int, planes: int, stride: int = 1, norm: str = "bn"):
        super().__init__()
        self.out_channels = planes
        self.conv1 = conv2d(in_channels, planes, 3, stride=stride, norm=norm)
        self.bn1 = norm2d(planes, norm)
        self.conv2 = conv2d(planes, planes, 3, norm=norm)
        self.bn2 = norm2d(planes, norm)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, planes, stride, norm)

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, grouped), 1x1 expand; ``out_channels = 4 * planes``.

    ``width`` is the 3x3's channel count: ``planes`` for ResNet, ``2 * planes`` with
    32 groups for ResNeXt 32x4d (SM-NAS's ``Xbottleneck``).
    """

    expansion = 4

    def __init__(self, *, in_channels: int, planes: int, stride: int = 1, groups: int = 1, width: int | None = None,
                 norm: str = "bn"):
        super().__init__()
        width = planes if width is None else width
        out = planes * self.expansion
        self.out_channels = out
        self.conv1 = conv2d(in_channels, width, 1, norm=norm)
        self.bn1 = norm2d(width, norm)
        self.conv2 = conv2d(width, width, 3, stride=stride, groups=groups, norm=norm)
        self.bn2 = norm2d(width, norm)
        self.conv3 = conv2d(width, out, 1, norm=norm)
        self.bn3 = norm2d(out, norm)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out, stride, norm)

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def resnet_stem(out_channels: int = 64, norm: str = "bn") -> nn.Sequential:
    """ResNet's stem: 7x7/2 conv + norm + ReLU + 3x3/2 max-pool (stride 4 in all)."""
    return nn.Sequential(
        conv2d(3, out_channels, 7, stride=2, norm=norm),
        norm2d(out_channels, norm),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )


def sm_nas_stem(out_channels: int = 64, norm: str = "bn") -> nn.Sequential:
    """SM-NAS's stem: "stage 1 and the first layer of stage 2" are 3x3/2 convs, stride 4 in all:
    3x3/2 conv 3 -> ``out_channels // 2``, norm, ReLU, 3x3/2 conv -> ``out_channels``, norm, ReLU.

    The half-width first conv is how the released SM-NAS models build it (vega's
    ``ResNetVariantDet._make_stem_layer``); only this reproduces their parameter counts.
    [N, 3, H, W] -> [N, out_channels, H/4, W/4].
    """
    mid = max(out_channels // 2, 1)
    return nn.Sequential(
        conv2d(3, mid, 3, stride=2, norm=norm),
        norm2d(mid, norm),
        nn.ReLU(inplace=True),
        conv2d(mid, out_channels, 3, stride=2, norm=norm),
        norm2d(out_channels, norm),
        nn.ReLU(inplace=True),
    )


class ResidualBackbone(nn.Module):
    """A stem (stride 4) followed by stages of residual blocks, the first block of
    every stage after the first with stride 2.

    Args:
        stem: module mapping images [N, 3, H, W] to [N, C0, H/4, W/4].
        stages: one ``nn.Sequential`` of blocks per stage; each block has ``out_channels``.
        out_features: names of the stage outputs to return; stage i (from 0) is
            ``"c{i + 2}"`` with stride ``2 ** (i + 2)``.
        zero_init_residual: start every block as identity (last norm's scale = 0),
            which trains from scratch more stably.

    ``forward(images)`` returns a dict name -> Tensor[N, C, H / stride, W / stride].
    """

    def __init__(self, *, stem: nn.Module, stages: list[nn.Sequential], out_features: tuple[str, ...] | None = None,
                 zero_init_residual: bool = True):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        names = [f"c{i + 2}" for i in range(len(stages))]
        self.out_features = tuple(names if out_features is None else out_features)
        unknown = [n for n in self.out_features if n not in names]
        if unknown:
            raise ValueError(f"out_features {unknown} do not exist; this backbone has {names}")
        self.channels = {n: stage[-1].out_channels for n, stage in zip(names, stages)}
        self.strides = {n: 2 ** (i + 2) for i, n in enumerate(names)}
        fan_out_init_(self)
        if zero_init_residual:
            for stage in self.stages:
                for block in stage:
                    nn.init.zeros_(block.last_norm().weight)

    @property
    def out_channels(self) -> list[int]:
        return [self.channels[n] for n in self.out_features]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(images)
        out = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            name = f"c{i + 2}"
            if name in self.out_features:
                out[name] = x
        return out
