"""The search space of network adaptation (FNA, Fang et al. 2020; seed 003): a MobileNetV2 seed
expanded into a super network whose stages have more layers than the seed, every layer choosing
its kernel and expansion, later layers also ``skip`` (depth).

FNA's SSDLite super network (their ``fna_ssdlite_search.py``): the stem and the first ``k3_e1``
block fixed; searchable stages of the seed's channels with ``[4, 4, 4, 4, 4, 1]`` layers (the seed
has 2, 3, 4, 3, 3, 1); a stage's first layer chooses among :data:`REDUCE_OPS`, later layers among
:data:`NORMAL_OPS` (the same plus ``skip``); the first layer of the stride-32 stage, whose
expansion feeds SSDLite's stride-16 head map, among :data:`HEAD_OPS` (expansion 6 only). That is
6^5 · 3 · 7^15 ≈ 1.1e17 architectures.

An architecture is one op name per searchable layer; :meth:`AdaptationSpace.derive` writes it in
nasx's MBConv grammar (``skip`` layers dropped), the string every other part of nasx builds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from nasx.models.backbones.mbconv import make_divisible
from nasx.models.backbones.mbconv_supernet import SKIP, MBConvSupernet, SuperStage, parse_op
from nasx.spaces.mbconv import FNA_SSDLITE, MBConvEncoding, MBLayer, MBStage

__all__ = ["AdaptationSpace", "FNA_LAYERS", "FNA_SSDLITE", "HEAD_OPS", "NORMAL_OPS", "REDUCE_OPS"]

REDUCE_OPS = ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6")
NORMAL_OPS = REDUCE_OPS + (SKIP,)
HEAD_OPS = ("k3_e6", "k5_e6", "k7_e6")
FNA_LAYERS = (4, 4, 4, 4, 4, 1)


@dataclass(frozen=True)
class AdaptationSpace:
    """Args:
        seed: the seed network's MBConv encoding (a name like ``mobilenet_v2`` or a string): its
            first stage is the fixed first block, the others are searched.
        layers: layers per searchable stage (FNA: 4, 4, 4, 4, 4, 1).
        width: channel multiplier applied to the seed (:meth:`MBConvEncoding.scaled`).
    """

    seed: str = "mobilenet_v2"
    layers: tuple[int, ...] = FNA_LAYERS
    width: float = 1.0

    def __post_init__(self):
        enc = self.seed_encoding
        if len(enc.stages[0].layers) != 1:
            raise ValueError(f"AdaptationSpace: the seed's first stage is the fixed first block and must have one "
                             f"layer, got {len(enc.stages[0].layers)}")
        if len(enc.stages) - 1 != len(self.layers):
            raise ValueError(f"AdaptationSpace: {len(self.layers)} layer counts for {len(enc.stages) - 1} searchable "
                             f"seed stages")
        short = [i + 1 for i, (n, s) in enumerate(zip(self.layers, enc.stages[1:])) if n < len(s.layers)]
        if any(n < 1 for n in self.layers) or short:
            raise ValueError(f"AdaptationSpace: every stage needs at least as many layers as the seed's "
                             f"{[len(s.layers) for s in enc.stages[1:]]}, got {list(self.layers)}")

    @property
    def seed_encoding(self) -> MBConvEncoding:
        return MBConvEncoding.parse(self.seed).scaled(self.width)

    def super_stages(self) -> list[SuperStage]:
        """Each searchable stage's channels, stride and per-layer candidate ops."""
        out, log_stride = [], 1
        for stage, n in zip(self.seed_encoding.stages[1:], self.layers):
            log_stride += int(math.log2(stage.stride))
            first = HEAD_OPS if log_stride == 5 and stage.stride == 2 else REDUCE_OPS
            out.append(SuperStage(stage.channels, stage.stride, (first,) + (NORMAL_OPS,) * (n - 1)))
        return out

    def op_lists(self) -> list[tuple[str, ...]]:
        return [ops for s in self.super_stages() for ops in s.ops]

    @property
    def size(self) -> int:
        """How many architectures the space holds (``skip`` patterns that give the same network
        counted apart, as FNA's count does)."""
        return math.prod(len(ops) for ops in self.op_lists())

    def build_supernet(self, *, temperature: float = 0.9, norm: str = "bn") -> MBConvSupernet:
        enc = self.seed_encoding
        first = enc.stages[0]
        return MBConvSupernet(stem_channels=enc.stem, first=(first.channels, first.layers[0].kernel,
                                                             first.layers[0].expansion),
                              stages=self.super_stages(), head_channels=enc.head, temperature=temperature, norm=norm)

    def extra_channels(self) -> tuple[int, ...]:
        """SSDLite's extra layers at this width (512, 256, 256, 128 at width 1)."""
        return tuple(make_divisible(c * self.width) for c in (512, 256, 256, 128))

    def detector_spec(self, encoding: str, num_classes: int, **kwargs) -> dict:
        """The :func:`~nasx.spaces.detectors.build_from_spec` spec of the SSDLite on ``encoding``."""
        return {"detector": "ssdlite", "backbone": str(encoding), "num_classes": num_classes,
                "extra_channels": list(self.extra_channels()), **kwargs}

    def build_super_detector(self, *, num_classes: int, temperature: float = 0.9, norm: str = "bn", **kwargs):
        """SSDLite on the super network (the same extra layers and head as :meth:`detector_spec`'s)."""
        from nasx.spaces.detectors import ssdlite_on

        return ssdlite_on(self.build_supernet(temperature=temperature, norm=norm), num_classes=num_classes, norm=norm,
                          extra_channels=self.extra_channels(), **kwargs)

    def check(self, choices: Sequence[str]) -> list[str]:
        """``choices`` (one op name per searchable layer) validated against the space."""
        lists = self.op_lists()
        choices = list(choices)
        if len(choices) != len(lists):
            raise ValueError(f"AdaptationSpace: expected {len(lists)} op choices (one per searchable layer), got "
                             f"{len(choices)}")
        for i, (c, ops) in enumerate(zip(choices, lists)):
            if c not in ops:
                raise ValueError(f"AdaptationSpace: layer {i + 1} chose {c!r}; its candidates are {list(ops)}")
        return choices

    def derive(self, choices: Sequence[str]) -> str:
        """The network ``choices`` describe, in MBConv grammar (``skip`` layers dropped)."""
        choices, enc = self.check(choices), self.seed_encoding
        stages, i = [enc.stages[0]], 0
        for stage, n in zip(enc.stages[1:], self.layers):
            layers = [MBLayer(*parse_op(c)) for c in choices[i:i + n] if c != SKIP]
            stages.append(MBStage(stage.channels, stage.stride, tuple(layers)))
            i += n
        return str(MBConvEncoding(enc.stem, tuple(stages), enc.head))

    def choices_of(self, encoding: str) -> list[str]:
        """The op choices that derive ``encoding`` (a network of this space's layout), ``skip`` filling
        each stage's missing layers at its end: ``derive(choices_of(e)) == e``."""
        enc, seed = MBConvEncoding.parse(encoding), self.seed_encoding
        same = [(s.channels, s.stride) for s in enc.stages] == [(s.channels, s.stride) for s in seed.stages]
        if not same or enc.stem != seed.stem or enc.head != seed.head or enc.stages[0] != seed.stages[0]:
            raise ValueError(f"AdaptationSpace.choices_of: {encoding!r} does not have the seed's layout {seed}")
        choices = []
        for stage, n in zip(enc.stages[1:], self.layers):
            if len(stage.layers) > n:
                raise ValueError(f"AdaptationSpace.choices_of: stage c{stage.channels} has {len(stage.layers)} "
                                 f"layers, the space at most {n}")
            choices += [f"k{l.kernel}_e{l.expansion}" for l in stage.layers] + [SKIP] * (n - len(stage.layers))
        return self.check(choices)
