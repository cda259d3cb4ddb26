"""An MBConv super network for differentiable search (DARTS, Liu et al. 2019) as FNA runs it on
MobileNetV2 (Fang et al. 2020): every searchable layer is a :class:`MixedOp` over inverted
residual candidates (``k<kernel>_e<expansion>``) and, on layers after a stage's first, ``skip``
(how depth is searched); architecture weights α per layer, turned into op weights by a softmax
at a temperature.

Two ways to run it:

- **single path** (weight steps): :meth:`MBConvSupernet.sample_path` picks one op per layer
  (uniformly, or with probability softmax(α / T)); only those ops run and get gradients, so a
  weight step costs about what one network's does.
- **mixed** (architecture steps, ``path`` None): every layer outputs Σ_o softmax(α / T)_o · o(x),
  so the loss is differentiable in α.

Its forward returns the two maps SSDLite predicts from, as
:class:`~nasx.models.detectors.ssdlite.SSDLiteFeatures` does: ``"c4"``, the expansion (1x1 output)
of the first layer of the stride-32 stage (the "tap" layer, whose candidates must therefore all
have the same expansion), and ``"c5"``, the 1x1 head's output.

Letters: B images, L searchable layers, O_l candidate ops of layer l.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasx.models.backbones.mbconv import InvertedResidual, conv_norm_act
from nasx.models.layers import fan_out_init_

__all__ = ["MixedOp", "MBConvSupernet", "SuperStage", "parse_op"]

SKIP = "skip"
_OP = re.compile(r"k(\d+)_e(\d+)")


def parse_op(name: str) -> Optional[tuple[int, int]]:
    """``"k5_e6"`` -> (5, 6); ``"skip"`` -> None; anything else is a ``ValueError``."""
    if name == SKIP:
        return None
    m = _OP.fullmatch(name)
    if not m:
        raise ValueError(f"unknown candidate op {name!r}; expected 'k<kernel>_e<expansion>' (e.g. 'k5_e6') or 'skip'")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class SuperStage:
    """A stage of the super network: output channels, stride of its first layer, and the
    candidate op names of each of its layers."""

    channels: int
    stride: int
    ops: tuple[tuple[str, ...], ...]


class MixedOp(nn.Module):
    """One searchable layer: its candidates by name (``ops``, a ModuleDict; ``skip`` is identity).

    ``forward(x, weights=None, index=None)``: with ``index`` only that candidate runs; with
    ``weights`` (Tensor[O]) the weighted sum of all. With ``tap`` the layer also returns the
    (same-weighted) expansion outputs of its candidates: ``(out, tap)``.
    """

    def __init__(self, *, in_channels: int, out_channels: int, stride: int, ops: Sequence[str], norm: str = "bn",
                 tap: bool = False):
        super().__init__()
        if not ops or len(set(ops)) != len(ops):
            raise ValueError(f"MixedOp: expected distinct candidate ops, got {list(ops)}")
        self.names = tuple(ops)
        self.tap = tap
        modules = {}
        for name in self.names:
            spec = parse_op(name)
            if spec is None:
                if stride != 1 or in_channels != out_channels:
                    raise ValueError(f"MixedOp: 'skip' needs stride 1 and equal channels (got stride {stride}, "
                                     f"{in_channels} -> {out_channels}); it belongs on a stage's later layers")
                modules[name] = nn.Identity()
            else:
                k, e = spec
                modules[name] = InvertedResidual(in_channels=in_channels, out_channels=out_channels, kernel_size=k,
                                                 expansion=e, stride=stride, norm=norm)
        specs = [parse_op(n) for n in self.names]
        if tap and (any(s is None or s[1] == 1 for s in specs) or len({s[1] for s in specs}) != 1):
            raise ValueError(f"MixedOp: the SSDLite tap layer's candidates must all have one expansion > 1 (their "
                             f"1x1 expansions are mixed into the tap), got {list(ops)}")
        self.ops = nn.ModuleDict(modules)

    def _run(self, name: str, x: Tensor):
        op = self.ops[name]
        if not self.tap:
            return op(x)
        tap = op.block[0](x)                    # (B, C * e, H, W): the 1x1 expansion
        out = op.block[1:](tap)
        return (x + out if op.use_shortcut else out), tap

    def forward(self, x: Tensor, weights: Optional[Tensor] = None, index: Optional[int] = None):
        if index is not None:
            return self._run(self.names[index], x)
        if weights is None:
            raise ValueError("MixedOp: pass the op weights (mixed) or an op index (single path)")
        outs = [self._run(n, x) for n in self.names]
        if not self.tap:
            return sum(w * o for w, o in zip(weights, outs))
        return sum(w * o[0] for w, o in zip(weights, outs)), sum(w * o[1] for w, o in zip(weights, outs))


class MBConvSupernet(nn.Module):
    """Stem (3x3 / 2), a fixed first inverted residual, the searchable stages, a 1x1 head.

    Args:
        stem_channels: the stem conv's output channels.
        first: (channels, kernel, expansion) of the fixed first block (MobileNetV2: 16, 3, 1).
        stages: the searchable :class:`SuperStage` s; the first stage whose cumulative stride
            reaches 32 has the tap layer.
        head_channels: the 1x1 conv after the last stage (MobileNetV2: 1280).
        temperature: T of softmax(α / T) (FNA: 0.9).
        alpha_std: α is initialised to ``alpha_std`` · N(0, 1) (FNA: 1e-3).

    Attributes: ``layers`` (one :class:`MixedOp` per searchable layer, stage by stage),
    ``alphas`` (one Parameter[O_l] per layer), ``path`` (op index per layer, or None: mixed),
    ``channels`` = ``{"c4": tap channels, "c5": head channels}``.
    """

    def __init__(self, *, stem_channels: int, first: tuple[int, int, int], stages: Sequence[SuperStage],
                 head_channels: int, temperature: float = 0.9, alpha_std: float = 1e-3, norm: str = "bn"):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"MBConvSupernet: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.stem = conv_norm_act(3, stem_channels, 3, stride=2, norm=norm)
        c_first, k_first, e_first = first
        self.first = InvertedResidual(in_channels=stem_channels, out_channels=c_first, kernel_size=k_first,
                                      expansion=e_first, norm=norm)
        self.stages = tuple(stages)
        log_stride, in_channels, self.tap_index = 1, c_first, None
        layers, self.stage_of = [], []
        for s, stage in enumerate(self.stages):
            log_stride += int(math.log2(stage.stride))
            for j, ops in enumerate(stage.ops):
                tap = self.tap_index is None and log_stride == 5 and j == 0
                if tap:
                    self.tap_index = len(layers)
                layers.append(MixedOp(in_channels=in_channels, out_channels=stage.channels,
                                      stride=stage.stride if j == 0 else 1, ops=ops, norm=norm, tap=tap))
                self.stage_of.append(s)
                in_channels = stage.channels
        if self.tap_index is None or log_stride != 5:
            raise ValueError(f"MBConvSupernet: the stages must reach stride 32 exactly (SSDLite's c5), got "
                             f"{2 ** log_stride}")
        self.layers = nn.ModuleList(layers)
        self.head = conv_norm_act(in_channels, head_channels, 1, norm=norm)
        self.alphas = nn.ParameterList(nn.Parameter(alpha_std * torch.randn(len(l.names))) for l in self.layers)
        tap_op = self.layers[self.tap_index].ops[self.layers[self.tap_index].names[0]]
        self.channels = {"c4": tap_op.block[0][0].out_channels, "c5": head_channels}
        self.out_features = ("c4", "c5")
        self.path: Optional[list[int]] = None
        self.register_buffer("macs_table", torch.zeros(0), persistent=False)
        self.fixed_macs = 0.0
        fan_out_init_(self)

    # -- architecture --------------------------------------------------------------------------
    def op_names(self) -> list[tuple[str, ...]]:
        return [l.names for l in self.layers]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas)

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(a) for a in self.alphas}
        return [p for p in self.parameters() if id(p) not in arch]

    def op_weights(self) -> list[Tensor]:
        """softmax(α_l / T) of every layer: L x Tensor[O_l]."""
        return [F.softmax(a / self.temperature, dim=0) for a in self.alphas]

    def sample_path(self, generator: torch.Generator, uniform: bool) -> list[int]:
        """Choose one op per layer (uniformly, or by softmax(α / T)) and run only those from now on."""
        path = []
        for a in self.alphas:
            p = torch.ones(len(a)) if uniform else F.softmax(a.detach().float().cpu() / self.temperature, dim=0)
            path.append(int(torch.multinomial(p, 1, generator=generator)))
        self.path = path
        return path

    def set_path(self, path: Optional[Sequence[int]]) -> None:
        """Run these op indices (one per layer), or every op mixed (None)."""
        if path is not None and (len(path) != len(self.layers) or
                                 any(not 0 <= i < len(l.names) for i, l in zip(path, self.layers))):
            raise ValueError(f"set_path: expected one op index per layer ({[len(l.names) for l in self.layers]} "
                             f"ops), got {list(path)}")
        self.path = None if path is None else list(path)

    def derive(self) -> list[str]:
        """The argmax op of every layer (DARTS's discrete architecture)."""
        return [l.names[int(a.detach().argmax())] for l, a in zip(self.layers, self.alphas)]

    # -- cost ----------------------------------------------------------------------------------
    def set_macs_table(self, table: Sequence[Sequence[float]], fixed: float) -> None:
        """MACs of every candidate op (L x O_l, per image at the search input) and of everything else
        of the detector (``fixed``), so :meth:`expected_macs` is the whole detector's."""
        if [len(t) for t in table] != [len(l.names) for l in self.layers]:
            raise ValueError(f"set_macs_table: expected {[len(l.names) for l in self.layers]} entries per layer, got "
                             f"{[len(t) for t in table]}")
        width = max(len(t) for t in table)
        padded = [list(map(float, t)) + [0.0] * (width - len(t)) for t in table]
        self.macs_table = torch.tensor(padded, dtype=torch.float64, device=self.alphas[0].device)
        self.fixed_macs = float(fixed)

    def expected_macs(self) -> Tensor:
        """Σ_l Σ_o softmax(α_l / T)_o · MACs(l, o) + the fixed part: differentiable in α."""
        if self.macs_table.numel() == 0:
            raise RuntimeError("expected_macs: no MACs table; call set_macs_table first "
                               "(nasx.evaluate.supernet_macs_table counts one)")
        total = torch.zeros((), dtype=torch.float64, device=self.alphas[0].device)
        for l, w in enumerate(self.op_weights()):
            total = total + (w.double() * self.macs_table[l, :len(w)]).sum()
        return total + self.fixed_macs

    # -- forward -------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = self.first(self.stem(images))
        weights = self.op_weights() if self.path is None else None
        tap = None
        for l, layer in enumerate(self.layers):
            if self.path is not None:
                out = layer(x, index=self.path[l])
            else:
                out = layer(x, weights=weights[l])
            if l == self.tap_index:
                x, tap = out
            else:
                x = out
        return {"c4": tap, "c5": self.head(x)}
