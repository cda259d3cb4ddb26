"""Feature Pyramid Network (Lin et al. 2017) with optional extra coarse levels.

Inputs are backbone features named ``c<k>`` (stride 2**k); outputs are ``p<k>`` at
the same strides plus ``extra_levels`` more, each at half the previous one's resolution:

- ``extra_mode="conv"``: a stride-2 3x3 conv of the last output or of the last input
  (P6 from P5 or C5, P7 from ReLU(P6)), as in RetinaNet and FCOS;
- ``extra_mode="pool"``: ``max_pool2d(kernel_size=1, stride=2)`` of the previous output
  (a parameter-free sub-sampling), as torchvision's ``LastLevelMaxPool`` and mmdet-1.x's
  FPN with ``add_extra_convs=False`` (Faster / Cascade R-CNN, SM-NAS's P5 and P6).

SM-NAS names its levels differently (P1-P4 are the backbone's c2-c5);
:func:`sm_nas_fpn_levels` and :func:`build_sm_nas_fpn` translate.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasx.models.layers import conv2d, norm2d

__all__ = ["EXTRA_MODES", "FPN", "build_sm_nas_fpn", "sm_nas_fpn_levels"]

EXTRA_MODES = ("conv", "pool")
# extra_from -> does the first extra level read the last output (True) or the last input (False)?
# "p5" / "c5" predate FPNs on other levels: they mean the last output / input level, whatever it is.
_FROM_OUTPUT = {"p5": True, "last_output": True, "c5": False, "last_input": False}


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
        extra_from: the input of the first extra conv: ``"p5"`` or its alias ``"last_output"``
            (FCOS): the last output level; ``"c5"`` or ``"last_input"`` (original RetinaNet): the
            last backbone input. "p5" / "c5" mean the last level even when it is not level 5
            (e.g. p4 / c4 for an FPN on c2-c4).
        extra_mode: ``"conv"`` (stride-2 3x3 convs) or ``"pool"`` (stride-2 sub-sampling of the
            previous output, no parameters; needs ``extra_from="p5"``). See the module docstring.
        norm: ``None`` (convs with bias, the usual FPN) or a norm of ``nasx.models.layers.NORMS``.

    ``forward(features)`` takes the backbone's dict and returns ``{"p3": [N, C, H/8, W/8], ...}``.
    """

    def __init__(self, *, in_channels: dict[str, int], out_channels: int = 256, extra_levels: int = 2,
                 extra_from: str = "p5", extra_mode: str = "conv", norm: str | None = None):
        super().__init__()
        names = list(in_channels)
        levels = [int(n[1:]) for n in names]
        if not names or levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"FPN inputs must be consecutive levels like c3, c4, c5; got {names}")
        if extra_from not in _FROM_OUTPUT:
            raise ValueError(f"extra_from must be 'p5' / 'last_output' (the last output level) or 'c5' / "
                             f"'last_input' (the last input level), got {extra_from!r}")
        if extra_mode not in EXTRA_MODES:
            raise ValueError(f"extra_mode must be one of {EXTRA_MODES}, got {extra_mode!r}")
        if extra_mode == "pool" and not _FROM_OUTPUT[extra_from]:
            raise ValueError(f"extra_mode='pool' sub-samples the last output level, so extra_from must be 'p5' "
                             f"or 'last_output'; got {extra_from!r}")
        if not isinstance(extra_levels, int) or extra_levels < 0:
            raise ValueError(f"extra_levels must be an integer >= 0, got {extra_levels!r}")
        self.in_names = names
        self.out_names = [f"p{k}" for k in range(levels[0], levels[-1] + extra_levels + 1)]
        self.out_channels = out_channels
        self.extra_levels = extra_levels
        self.extra_from = extra_from
        self.extra_mode = extra_mode
        self.lateral = nn.ModuleList(_conv(in_channels[n], out_channels, 1, 1, norm) for n in names)
        self.output = nn.ModuleList(_conv(out_channels, out_channels, 3, 1, norm) for _ in names)
        extra_in = out_channels if _FROM_OUTPUT[extra_from] else in_channels[names[-1]]
        n_convs = extra_levels if extra_mode == "conv" else 0  # "pool" has no parameters: an empty list
        self.extra = nn.ModuleList(
            _conv(extra_in if i == 0 else out_channels, out_channels, 3, 2, norm) for i in range(n_convs)
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
        if self.extra_mode == "pool":
            for _ in range(self.extra_levels):
                # kernel 1, stride 2: every other pixel, ceil(H / 2) x ceil(W / 2) like a padded conv
                outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        else:
            x = outs[-1] if _FROM_OUTPUT[self.extra_from] else features[self.in_names[-1]]
            for i, conv in enumerate(self.extra):
                x = conv(x if i == 0 else F.relu(x))
                outs.append(x)
        return dict(zip(self.out_names, outs))


_SM_NAS_RANGE = "1 <= start <= 3 and start < end <= 6 (at least two backbone levels fused)"


def sm_nas_fpn_levels(start: int, end: int) -> tuple[list[str], int]:
    """SM-NAS's ``FPN(P<start>-P<end>)`` in nasx's names: ``(backbone inputs, extra levels)``.

    SM-NAS numbers the backbone's four stages P1-P4 (nasx's c2-c5, strides 4-32) and calls
    the two levels down-sampled from P4 "following RetinaNet" P5 and P6 (strides 64, 128).
    The FPN reads ``c<start+1>`` .. ``c<min(end, 4)+1>`` and adds ``max(0, end - 4)`` levels;
    its outputs are nasx's ``p<start+1>`` .. ``p<end+1>`` (SM-NAS's P_j is nasx's p<j+1>).

    >>> sm_nas_fpn_levels(2, 5)      # E0, E1: outputs p3-p6
    (['c3', 'c4', 'c5'], 1)
    >>> sm_nas_fpn_levels(1, 5)      # E2-E5: the standard mmdet FPN, p2-p6
    (['c2', 'c3', 'c4', 'c5'], 1)

    Valid ranges: ``1 <= start <= 3`` and ``start < end <= 6``, i.e. every range that fuses at
    least two backbone levels (the paper lists none; Table 2 uses P2-P5 and P1-P5). Anything
    else raises ``ValueError``.
    """
    if not (isinstance(start, int) and isinstance(end, int) and 1 <= start <= 3 and start < end <= 6):
        raise ValueError(f"SM-NAS FPN(P{start}-P{end}) is not a valid level range: expected {_SM_NAS_RANGE}; "
                         f"P1-P4 are the backbone's c2-c5, P5 and P6 are pooled from P4")
    return [f"c{k + 1}" for k in range(start, min(end, 4) + 1)], max(0, end - 4)


def build_sm_nas_fpn(backbone_channels: dict[str, int], start: int, end: int, *, out_channels: int = 256,
                     norm: str | None = None) -> FPN:
    """SM-NAS's ``FPN(P<start>-P<end>)`` as the released models build it (mmdet-1.x: 1x1 lateral
    and 3x3 output convs with bias, extra levels by max-pool, see :func:`sm_nas_fpn_levels`).

    ``backbone_channels`` maps the backbone's levels to channels (``ResidualBackbone.channels``);
    it may hold more levels than the FPN reads. Build the backbone with
    ``out_features=tuple(fpn.in_names)`` (or any superset) to feed it.
    """
    names, extra = sm_nas_fpn_levels(start, end)
    missing = [n for n in names if n not in backbone_channels]
    if missing:
        raise ValueError(f"SM-NAS FPN(P{start}-P{end}) reads backbone features {names}; backbone_channels "
                         f"has {list(backbone_channels)}, missing {missing}")
    return FPN(in_channels={n: int(backbone_channels[n]) for n in names}, out_channels=out_channels,
               extra_levels=extra, extra_from="p5", extra_mode="pool", norm=norm)
