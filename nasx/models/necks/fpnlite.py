"""FPNLite: the TF object-detection API's light FPN (``ssd_mobilenet_v2_fpn_keras`` with
``use_depthwise: true``), and NAS-EOD's searched variant of it (seed 000).

Plain FPNLite (``blocks=None``), as TF's ``KerasFpnTopDownFeatureMaps`` builds it::

    P5 = lateral5(C5)                                  1x1 conv with bias, no norm, no activation
    P4 = sep3x3(lateral4(C4) + up2(P5))                up2: nearest neighbour to C4's size
    P3 = sep3x3(lateral3(C3) + up2(P4))                sep3x3: separable 3x3 -> norm -> ReLU6
    P6 = sep3x3_s2(P5), P7 = sep3x3_s2(P6)             stride-2 separable 3x3 -> norm -> ReLU6

NAS-EOD (``blocks`` given; the poster's neck figure reads "Concat / Next layer / Shortcut /
GN + ReLU6"; its exact wiring is not in the text, so this is nasx's reading)::

    P5 = mb5(lateral5(C5))
    P4 = mb4(sep3x3(concat[up2(P5), lateral4(C4)]))   concat: 2C channels; sep3x3 brings them to C
    P3 = mb3(sep3x3(concat[up2(P4), lateral3(C3)]))
    P6, P7 as above, from the searched P5

where each ``mb`` is a searched MBConv block (1x1 expand x e -> k x k depthwise -> optional SE ->
1x1 project, norm + ReLU6 inside, identity shortcut: :class:`InvertedResidual` at stride 1,
C -> C): the "next layer" with its "shortcut". The top-down path reads the *output* of the
coarser level (its separable conv and block included), as TF's Keras FPN does (the original FPN
up-samples the sum before its 3x3 instead).

Letters: B images, C the neck width (``out_channels``), C_k the channels of backbone level k.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nasx.models.backbones.mbconv import InvertedResidual
from nasx.models.layers.norm import NORMS, fan_out_init_
from nasx.models.layers.separable import separable_norm_act

__all__ = ["FPNLite", "MERGE_MODES", "TopDownMerge"]

MERGE_MODES = ("sum", "concat")


class TopDownMerge(nn.Module):
    """One top-down step: the coarser output up-sampled (nearest) to the lateral's size, merged with
    the lateral, then a separable 3x3 -> norm -> ReLU6 back to C channels.

    ``mode="sum"``: ``lateral + up`` (TF FPNLite); ``"concat"``: ``concat[up, lateral]`` (2C) (NAS-EOD).
    ``forward(coarser, lateral)``: Tensor[B, C, h, w], Tensor[B, C, H, W] -> Tensor[B, C, H, W].
    """

    def __init__(self, *, channels: int, mode: str = "sum", norm: str = "gn"):
        super().__init__()
        if mode not in MERGE_MODES:
            raise ValueError(f"TopDownMerge: mode must be one of {MERGE_MODES}, got {mode!r}")
        self.mode = mode
        self.conv = separable_norm_act(channels * (2 if mode == "concat" else 1), channels, 3, norm=norm)

    def forward(self, coarser: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarser, size=lateral.shape[-2:], mode="nearest")
        x = lateral + up if self.mode == "sum" else torch.cat([up, lateral], dim=1)
        return self.conv(x)

    def extra_repr(self) -> str:
        return self.mode


class FPNLite(nn.Module):
    """Args:
        in_channels: backbone feature name -> channels, consecutive levels, e.g.
            ``{"c3": 32, "c4": 96, "c5": 256}`` (TF FPNLite's MobileNetV2 taps).
        out_channels: C, the width of every output level (TF's ``additional_layer_depth``;
            NAS-EOD's "@64" / "@128").
        extra_levels: coarser levels made by stride-2 separable 3x3 convs from the last one (2: P6, P7).
        norm: the norm of the separable convs and blocks (``"gn"``, as the poster; ``"bn"`` as TF).
        blocks: None for plain FPNLite (sum merges); or one ``(kernel, expansion, se)`` per input
            level in **top-down order** (coarsest first: P5, P4, P3) for NAS-EOD's neck (concat
            merges, each level followed by its MBConv block). See the module docstring.

    Sub-modules (what a latency table times one by one): ``lateral[p]`` (1x1 convs),
    ``merge[p]`` (:class:`TopDownMerge`, every level but the coarsest input), ``block[p]``
    (:class:`InvertedResidual`, only with ``blocks``), ``extra`` (stride-2 separable convs).

    ``forward(features)`` takes the backbone's dict and returns ``{"p3": [B, C, H/8, W/8], ...,
    "p7": [B, C, H/128, W/128]}``, fine to coarse.
    """

    def __init__(self, *, in_channels: dict[str, int], out_channels: int, extra_levels: int = 2, norm: str = "gn",
                 blocks: Optional[Sequence[tuple[int, int, bool]]] = None):
        super().__init__()
        names = list(in_channels)
        levels = [int(n[1:]) for n in names]
        if len(names) < 2 or levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"FPNLite: inputs must be at least two consecutive levels like c3, c4, c5; got {names}")
        if norm not in NORMS:
            raise ValueError(f"FPNLite: norm must be one of {NORMS}, got {norm!r}")
        if not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"FPNLite: out_channels must be a positive integer, got {out_channels!r}")
        if not isinstance(extra_levels, int) or extra_levels < 0:
            raise ValueError(f"FPNLite: extra_levels must be an integer >= 0, got {extra_levels!r}")
        self.in_names = names
        self.level_names = [f"p{k}" for k in levels]                       # fine to coarse
        self.out_names = [f"p{k}" for k in range(levels[0], levels[-1] + extra_levels + 1)]
        self.out_channels = out_channels
        self.lateral = nn.ModuleDict({p: nn.Conv2d(in_channels[c], out_channels, 1)
                                      for c, p in zip(names, self.level_names)})
        self.mode = "sum" if blocks is None else "concat"
        self.merge = nn.ModuleDict({p: TopDownMerge(channels=out_channels, mode=self.mode, norm=norm)
                                    for p in self.level_names[:-1]})
        self.block = None
        if blocks is not None:
            blocks = [tuple(b) for b in blocks]
            if len(blocks) != len(names) or any(len(b) != 3 for b in blocks):
                raise ValueError(f"FPNLite: blocks must give one (kernel, expansion, se) per input level, top-down "
                                 f"({', '.join(reversed(self.level_names))}); got {blocks}")
            top_down = list(reversed(self.level_names))
            self.block = nn.ModuleDict({p: InvertedResidual(in_channels=out_channels, out_channels=out_channels,
                                                            kernel_size=k, expansion=e, se=bool(se), norm=norm)
                                        for p, (k, e, se) in zip(top_down, blocks)})
        self.extra = nn.ModuleList(separable_norm_act(out_channels, out_channels, 3, stride=2, norm=norm)
                                   for _ in range(extra_levels))
        fan_out_init_(self)

    @property
    def strides(self) -> dict[str, int]:
        return {n: 2 ** int(n[1:]) for n in self.out_names}

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.in_names if n not in features]
        if missing:
            raise KeyError(f"FPNLite needs backbone features {self.in_names}; missing {missing}")
        outs: dict[str, torch.Tensor] = {}
        x = None
        for c, p in reversed(list(zip(self.in_names, self.level_names))):   # coarse to fine
            lateral = self.lateral[p](features[c])                          # (B, C, H_p, W_p)
            x = lateral if x is None else self.merge[p](x, lateral)
            if self.block is not None:
                x = self.block[p](x)
            outs[p] = x
        y = outs[self.level_names[-1]]
        for i, conv in enumerate(self.extra):
            y = conv(y)
            outs[self.out_names[len(self.level_names) + i]] = y
        return {n: outs[n] for n in self.out_names}
