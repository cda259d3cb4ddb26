"""MBConv (inverted residual) backbone encodings.

Grammar: ``mb<stem>_<stage>-<stage>-...[_<head>]``

- ``stem``: channels of the stride-2 3x3 stem conv.
- ``stage``: ``c<channels>s<stride>:<layer>,<layer>,...``; the stage's first layer has
  the stride (1 or 2), every layer outputs ``channels``.
- ``layer``: ``k<kernel>e<expansion>[se][x<repeat>]`` with kernel in {3, 5, 7},
  expansion in {1, 3, 6}, ``se`` for squeeze-excitation, ``x<n>`` for n identical layers.
- ``head``: channels of a final 1x1 conv (omit for none).

The name ``mobilenet_v2`` stands for torchvision's MobileNetV2 feature trunk (same
modules, same parameter count); searches change the per-layer k / e / se.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from torch import nn

from nasx.models.backbones.mbconv import InvertedResidual, MBConvBackbone, conv_norm_act, make_divisible
from nasx.spaces.errors import EncodingError

__all__ = ["EXPANSIONS", "FNA_SSDLITE", "KERNELS", "MBConvEncoding", "MBLayer", "MBStage", "NAMED"]

KERNELS = (3, 5, 7)
EXPANSIONS = (1, 3, 6)

# FNA's searched SSDLite backbone (Fang et al. 2020; `net_config` of their released
# fna_ssdlite_retrain.py): MobileNetV2's layout with searched kernels and depths.
FNA_SSDLITE = ("mb32_c16s1:k3e1-c24s2:k5e6-c32s2:k5e6x2,k3e6,k5e6-c64s2:k5e6,k7e6,k3e6-c96s1:k7e6x4"
               "-c160s2:k5e6,k7e6x2-c320s1:k7e6_1280")

NAMED = {
    "mobilenet_v2": "mb32_c16s1:k3e1-c24s2:k3e6x2-c32s2:k3e6x3-c64s2:k3e6x4-c96s1:k3e6x3"
    "-c160s2:k3e6x3-c320s1:k3e6_1280",
    "fna_ssdlite": FNA_SSDLITE,
}

_LAYER = re.compile(r"k(\d+)e(\d+)(se)?(?:x(\d+))?")
_STAGE = re.compile(r"c(\d+)s(\d+):(.+)")
_GRAMMAR = "mb<stem>_c<channels>s<stride>:k<k>e<e>[se][x<n>],...-..._<head>, e.g. mb32_c16s1:k3e1-c24s2:k5e6sex2_1280"


@dataclass(frozen=True)
class MBLayer:
    kernel: int
    expansion: int
    se: bool = False

    def __str__(self) -> str:
        return f"k{self.kernel}e{self.expansion}{'se' if self.se else ''}"


@dataclass(frozen=True)
class MBStage:
    channels: int
    stride: int
    layers: tuple[MBLayer, ...]

    def __str__(self) -> str:
        # Runs of identical layers are written once with x<n>.
        parts, i = [], 0
        while i < len(self.layers):
            j = i
            while j < len(self.layers) and self.layers[j] == self.layers[i]:
                j += 1
            parts.append(str(self.layers[i]) + (f"x{j - i}" if j - i > 1 else ""))
            i = j
        return f"c{self.channels}s{self.stride}:{','.join(parts)}"


@dataclass(frozen=True)
class MBConvEncoding:
    stem: int
    stages: tuple[MBStage, ...]
    head: int | None = None

    @classmethod
    def parse(cls, text: str) -> "MBConvEncoding":
        if not isinstance(text, str):
            raise EncodingError(f"an MBConv encoding is a string like {_GRAMMAR}; got {type(text).__name__}")
        text = NAMED.get(text, text)

        def fail(why: str):
            raise EncodingError(f"invalid MBConv encoding {text!r}: {why}")

        parts = text.split("_")
        if len(parts) not in (2, 3) or not parts[0].startswith("mb"):
            fail(f"expected {_GRAMMAR}")
        if not re.fullmatch(r"[1-9][0-9]*", parts[0][2:]):
            fail(f"stem channels {parts[0][2:]!r} is not a positive integer")
        head = None
        if len(parts) == 3:
            if not re.fullmatch(r"[1-9][0-9]*", parts[2]):
                fail(f"head channels {parts[2]!r} is not a positive integer")
            head = int(parts[2])
        stages = []
        for i, stage in enumerate(parts[1].split("-"), 1):
            m = _STAGE.fullmatch(stage)
            if not m:
                fail(f"stage {i} {stage!r} is not c<channels>s<stride>:<layers>")
            channels, stride = int(m.group(1)), int(m.group(2))
            if channels < 1:
                fail(f"stage {i} has {channels} channels")
            if stride not in (1, 2):
                fail(f"stage {i} has stride {stride}; strides are 1 or 2")
            layers = []
            for token in m.group(3).split(","):
                lm = _LAYER.fullmatch(token)
                if not lm:
                    fail(f"stage {i} layer {token!r} is not k<kernel>e<expansion>[se][x<n>]")
                k, e, repeat = int(lm.group(1)), int(lm.group(2)), int(lm.group(4) or 1)
                if k not in KERNELS:
                    fail(f"stage {i} layer {token!r}: kernel {k} is not one of {KERNELS}")
                if e not in EXPANSIONS:
                    fail(f"stage {i} layer {token!r}: expansion {e} is not one of {EXPANSIONS}")
                if repeat < 1:
                    fail(f"stage {i} layer {token!r}: repeat must be >= 1")
                layers += [MBLayer(k, e, bool(lm.group(3)))] * repeat
            stages.append(MBStage(channels, stride, tuple(layers)))
        return cls(int(parts[0][2:]), tuple(stages), head)

    def __str__(self) -> str:
        body = f"mb{self.stem}_" + "-".join(str(s) for s in self.stages)
        return body + (f"_{self.head}" if self.head else "")

    def scaled(self, width: float) -> "MBConvEncoding":
        """Every channel count, stem and head included, times ``width`` rounded by
        ``make_divisible(c * width, 8)`` (torchvision keeps the 1280 head for widths below 1; here it
        shrinks too, so a small version stays small)."""
        if not width > 0:
            raise ValueError(f"MBConvEncoding.scaled: width must be > 0, got {width}")
        if width == 1:
            return self
        stages = tuple(replace(s, channels=make_divisible(s.channels * width)) for s in self.stages)
        return MBConvEncoding(make_divisible(self.stem * width), stages,
                              make_divisible(self.head * width) if self.head else None)

    @property
    def depth(self) -> int:
        return sum(len(s.layers) for s in self.stages)

    def build(self, *, norm: str = "bn", out_features: tuple[str, ...] | None = None) -> MBConvBackbone:
        stem = conv_norm_act(3, self.stem, 3, stride=2, norm=norm)
        in_channels, stages = self.stem, []
        for stage in self.stages:
            blocks = []
            for j, layer in enumerate(stage.layers):
                blocks.append(InvertedResidual(in_channels=in_channels, out_channels=stage.channels,
                                               kernel_size=layer.kernel, expansion=layer.expansion,
                                               stride=stage.stride if j == 0 else 1, se=layer.se, norm=norm))
                in_channels = stage.channels
            stages.append(nn.Sequential(*blocks))
        head = conv_norm_act(in_channels, self.head, 1, norm=norm) if self.head else None
        return MBConvBackbone(stem=stem, stem_channels=self.stem, stages=stages,
                              stage_strides=[s.stride for s in self.stages], head=head, head_channels=self.head,
                              out_features=out_features)
