"""SM-NAS residual backbone encodings (seed 001, Stage-two).

Grammar: ``<block>_<base>_<stage>-<stage>-...``

- ``block``: ``basicblock`` | ``bottleneck`` | ``Xbottleneck`` (ResNeXt, 32 groups, 3x3
  width ``int(planes / 16) * 32``: 32x4d, i.e. twice ``planes`` at base 64).
- ``base``: channel count ("planes") of the first stage.
- each stage starts at half the previous stage's resolution (the first right after the
  stride-4 stem) and has one character per block: ``1`` keeps the channel count,
  ``2`` doubles it (at that block).

``basicblock_64_11-21-21-21`` is ResNet-18, ``bottleneck_64_111-2111-211111-211``
ResNet-50 and ``Xbottleneck_64_111-2111-211111-211`` ResNeXt-50 32x4d, exactly as
torchvision builds them (``NAMED`` also has ResNet-34/101 and ResNeXt-101 32x4d, SM-NAS's
stage-one backbones); the SM-NAS models E0-E5 are in ``SM_NAS_BACKBONES``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from nasx.models.backbones.residual import BasicBlock, Bottleneck, ResidualBackbone, resnet_stem, sm_nas_stem
from nasx.spaces.errors import EncodingError

__all__ = ["BLOCKS", "NAMED", "SM_NAS_BACKBONES", "ResidualEncoding"]

BLOCKS = ("basicblock", "bottleneck", "Xbottleneck")
STEMS = ("resnet", "sm_nas")

NAMED = {
    "resnet18": "basicblock_64_11-21-21-21",
    "resnet34": "basicblock_64_111-2111-211111-211",
    "resnet50": "bottleneck_64_111-2111-211111-211",
    "resnet101": "bottleneck_64_111-2111-" + "2" + "1" * 22 + "-211",
    "resnext50_32x4d": "Xbottleneck_64_111-2111-211111-211",
    # torchvision has no 32x4d at depth 101 (only 32x8d); this is mmdet's / timm's (44.18M with fc).
    "resnext101_32x4d": "Xbottleneck_64_111-2111-" + "2" + "1" * 22 + "-211",
}

# SM-NAS Table 2.
SM_NAS_BACKBONES = {
    "E0": "basicblock_64_1-21-21-12",
    "E1": "basicblock_48_12-21-11111-211111",
    "E2": "basicblock_56_12-11111-211-1112",
    "E3": "bottleneck_56_211-111111111-2111111-11112111",
    "E4": "Xbottleneck_56_21-21-111111111111111-2111111",
    "E5": "Xbottleneck_56_21-21-111111111111111-2111111",
}

_GRAMMAR = "<block>_<base>_<stage>-<stage>-... e.g. basicblock_64_11-21-21-21"


@dataclass(frozen=True)
class ResidualEncoding:
    block: str
    base: int
    stages: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "ResidualEncoding":
        """Parse an encoding (or a name from ``NAMED``), raising :class:`EncodingError` that says what is wrong."""
        if not isinstance(text, str):
            raise EncodingError(f"a residual encoding is a string like {_GRAMMAR}; got {type(text).__name__}")
        text = NAMED.get(text, text)
        parts = text.split("_")
        if len(parts) != 3:
            raise EncodingError(f"invalid residual encoding {text!r}: expected {_GRAMMAR}")
        block, base, stages = parts
        if block not in BLOCKS:
            raise EncodingError(f"invalid residual encoding {text!r}: block {block!r} is not one of {BLOCKS}")
        if not re.fullmatch(r"[1-9][0-9]*", base):
            raise EncodingError(f"invalid residual encoding {text!r}: base channels {base!r} is not a positive integer")
        if block == "Xbottleneck" and int(base) < 16:
            raise EncodingError(f"invalid residual encoding {text!r}: Xbottleneck needs base >= 16 (32 groups of 4d)")
        stage_list = tuple(stages.split("-"))
        for i, stage in enumerate(stage_list, 1):
            if not stage:
                raise EncodingError(f"invalid residual encoding {text!r}: stage {i} is empty")
            bad = re.search(r"[^12]", stage)
            if bad:
                raise EncodingError(
                    f"invalid residual encoding {text!r}: stage {i} has {bad.group()!r} at position "
                    f"{bad.start() + 1}; blocks are '1' (keep channels) or '2' (double them)"
                )
        return cls(block, int(base), stage_list)

    def __str__(self) -> str:
        return f"{self.block}_{self.base}_{'-'.join(self.stages)}"

    @property
    def depth(self) -> int:
        return sum(len(s) for s in self.stages)

    def build(self, *, norm: str = "bn", stem: str = "resnet", out_features: tuple[str, ...] | None = None,
              zero_init_residual: bool = True) -> ResidualBackbone:
        """The backbone this encoding describes, with ``norm`` in {"bn", "gn", "gn_ws"} and ``stem``
        ``"resnet"`` (7x7/2 conv + max-pool, torchvision's) or ``"sm_nas"`` (3x3/2 conv to base / 2,
        3x3/2 conv to base: the released SM-NAS models')."""
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        stem_module = (resnet_stem if stem == "resnet" else sm_nas_stem)(self.base, norm)
        in_channels, planes, stages = self.base, self.base, []
        for i, stage in enumerate(self.stages):
            blocks: list[nn.Module] = []
            for j, ch in enumerate(stage):
                if ch == "2":
                    planes *= 2
                stride = 2 if i > 0 and j == 0 else 1
                block = self._block(in_channels, planes, stride, norm)
                blocks.append(block)
                in_channels = block.out_channels
            stages.append(nn.Sequential(*blocks))
        return ResidualBackbone(stem=stem_module, stages=stages, out_features=out_features,
                                zero_init_residual=zero_init_residual)

    def _block(self, in_channels: int, planes: int, stride: int, norm: str) -> nn.Module:
        if self.block == "basicblock":
            return BasicBlock(in_channels=in_channels, planes=planes, stride=stride, norm=norm)
        if self.block == "bottleneck":
            return Bottleneck(in_channels=in_channels, planes=planes, stride=stride, norm=norm)
        return Bottleneck(in_channels=in_channels, planes=planes, stride=stride, groups=32,
                          width=planes // 16 * 32, norm=norm)
