"""NAS-EOD's search space (seed 000, a poster; ``round2-spec.md`` §2): a MobileNetV2-layout MBConv
backbone and an FPNLite-style neck searched together, on a one-stage detector with a separable head.

What the poster states: per layer ("in each layer") a depthwise kernel K in {3, 5}, an expansion
ratio in {1, 3, 6} and a squeeze-excitation block on or off; the backbone and the neck are
"updated at the same time"; the neck figure reads "Concat / Next layer / Shortcut / GN + ReLU6";
models "@64" and "@128". Everything else is nasx's choice:

- Backbone: MobileNetV2's layout (stem 32, the 17 inverted-residual layers of stages
  16/24/32/64/96/160/320 with 1/2/3/4/3/3/1 layers and strides 1/2/2/2/1/2/1, the 1x1 head to
  1280), every channel count times ``width`` (:meth:`MBConvEncoding.scaled`); each of the 17
  layers chooses (k, e, SE) among 2 x 3 x 2 = 12 options.
- Neck: :class:`~nasx.models.necks.fpnlite.FPNLite` with concat merges and one searched MBConv block
  per level P5, P4, P3 (top-down; same 12 options; identity shortcut), GN + ReLU6, width "@64" or
  "@128" times ``width`` (``neck_widths``; one width: not searched). P6, P7 by stride-2 separable convs.
- Detector: ``build_fpnlite`` (RetinaNet losses, 6 anchors per location, weight-shared separable
  head of ``head_convs`` convs).

An architecture is a flat mapping over 61 decisions, in this order: ``backbone{i}.k``,
``backbone{i}.e``, ``backbone{i}.se`` for i = 0..16; ``neck.width``; ``neck.{p}.k``, ``.e``, ``.se``
for p = p5, p4, p3. Its text is the backbone in nasx's MBConv grammar, a ``|``, and the neck::

    mb32_c16s1:k3e1-c24s2:k5e6se,k3e3-...-c320s1:k5e6se_1280|fpnlite@64:k3e6,k5e3se,k3e1

with the channel counts as built (at ``width`` 0.5: ``mb16_c8s1:...|fpnlite@32:...``) and the neck's
blocks in top-down order (P5, P4, P3).

The rest of NAS-EOD's kit: :func:`nasx.evaluate.eod_reward.eod_reward` (the multi-objective reward)
and :class:`nasx.evaluate.latency_table.LatencyTable` (latency predicted from measured parts).
"""
from __future__ import annotations

import re
from typing import Optional, Sequence, Union

from torch import nn

from nasx.models.backbones.mbconv import make_divisible
from nasx.spaces.errors import EncodingError
from nasx.spaces.mbconv import MBConvEncoding, MBLayer, MBStage
from nasx.spaces.space import Decision, Space

__all__ = ["BACKBONE_LAYERS", "EXPANSIONS", "KERNELS", "NECK_LEVELS", "NasEodSpace", "PAPER_NECK_WIDTHS", "SE",
           "parse_layer"]

KERNELS = (3, 5)
EXPANSIONS = (1, 3, 6)
SE = (False, True)
NECK_LEVELS = ("p5", "p4", "p3")      # top-down: the order of the neck's blocks in decisions and text
PAPER_NECK_WIDTHS = (64, 128)
_MBV2 = MBConvEncoding.parse("mobilenet_v2")
BACKBONE_LAYERS = sum(len(s.layers) for s in _MBV2.stages)      # 17
_LAYER = re.compile(r"k(\d+)e(\d+)(se)?")
_EXAMPLE = "mb32_c16s1:k3e1-c24s2:k5e6se,k3e3-...-c320s1:k5e6se_1280|fpnlite@64:k3e6,k5e3se,k3e1"


def parse_layer(token: str) -> MBLayer:
    """``k<kernel>e<expansion>[se]`` (e.g. ``k5e3se``) -> :class:`MBLayer`; any kernel and expansion
    of the MBConv grammar (the space checks its own options)."""
    m = _LAYER.fullmatch(token.strip()) if isinstance(token, str) else None
    if m is None:
        raise EncodingError(f"an MBConv layer is written k<kernel>e<expansion>[se], e.g. 'k5e3se'; got {token!r}")
    return MBLayer(int(m.group(1)), int(m.group(2)), bool(m.group(3)))


class NasEodSpace(Space):
    """NAS-EOD's backbone + neck space (:class:`~nasx.spaces.space.Space`); see the module docstring.

    Args:
        width: channel multiplier of the backbone and of the neck widths (0.5 for a CPU-sized search).
        input_size: the input side (or (H, W)) :meth:`spec` returns: 320 as the paper, 128 on a CPU.
        neck_widths: the paper's neck widths before ``width`` ((64, 128): "@64", "@128"; (64,) to
            search only "@64").
        head_channels: the backbone's last 1x1 conv (MobileNetV2's 1280; TF's FPNLite uses 256; None: none).
        num_classes: of the detector. head_convs: tower depth of the separable head (TF: 4).
        norm: the backbone's norm. neck_norm: the neck's and head's (GN as the poster).
    """

    def __init__(self, *, width: float = 1.0, input_size: Union[int, Sequence[int]] = 320,
                 neck_widths: Sequence[int] = PAPER_NECK_WIDTHS, head_channels: Optional[int] = 1280,
                 num_classes: int = 80, head_convs: int = 4, norm: str = "bn", neck_norm: str = "gn"):
        if not (isinstance(width, (int, float)) and width > 0):
            raise ValueError(f"NasEodSpace: width must be a positive number, got {width!r}")
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(size) != 2 or not all(isinstance(v, int) and v >= 32 for v in size):
            raise ValueError(f"NasEodSpace: input_size must be an integer >= 32 or (H, W) of them, got {input_size!r}")
        widths = tuple(neck_widths)
        if not widths or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f"NasEodSpace: neck_widths must be positive integers, got {neck_widths!r}")
        if head_channels is not None and not (isinstance(head_channels, int) and head_channels > 0):
            raise ValueError(f"NasEodSpace: head_channels must be a positive integer or None, got {head_channels!r}")
        if not isinstance(num_classes, int) or num_classes < 1 or not isinstance(head_convs, int) or head_convs < 0:
            raise ValueError(f"NasEodSpace: expected num_classes >= 1 and head_convs >= 0, got {num_classes!r} and "
                             f"{head_convs!r}")
        self.width, self.input_size = width, size
        self.paper_neck_widths, self.head_channels = widths, head_channels
        self.num_classes, self.head_convs, self.norm, self.neck_norm = num_classes, head_convs, norm, neck_norm
        # The layout, channels as built: MobileNetV2's stages, this head, times width.
        self.layout = MBConvEncoding(_MBV2.stem, _MBV2.stages, head_channels).scaled(width)
        self.neck_widths = tuple(sorted({make_divisible(w * width) for w in widths}))
        steps: list[Decision] = []
        for i in range(BACKBONE_LAYERS):
            steps += [Decision(f"backbone{i}.k", KERNELS, kind="kernel"),
                      Decision(f"backbone{i}.e", EXPANSIONS, kind="expansion"),
                      Decision(f"backbone{i}.se", SE, kind="se")]
        steps.append(Decision("neck.width", self.neck_widths, kind="width"))
        for p in NECK_LEVELS:
            steps += [Decision(f"neck.{p}.k", KERNELS, kind="kernel"),
                      Decision(f"neck.{p}.e", EXPANSIONS, kind="expansion"), Decision(f"neck.{p}.se", SE, kind="se")]
        self._decisions = tuple(steps)

    def settings(self) -> dict:
        """The constructor's arguments, JSON-ready: ``NasEodSpace(**space.settings())`` is the same space."""
        return {"width": self.width, "input_size": list(self.input_size), "neck_widths": list(self.paper_neck_widths),
                "head_channels": self.head_channels, "num_classes": self.num_classes, "head_convs": self.head_convs,
                "norm": self.norm, "neck_norm": self.neck_norm}

    def decisions(self) -> list[Decision]:
        return list(self._decisions)

    # -- the architecture's parts ----------------------------------------------------------------
    def _mapping(self, arch) -> dict:
        return self.decode(arch) if isinstance(arch, str) else self.check(arch)

    def backbone_layers(self, arch) -> list[MBLayer]:
        """The 17 backbone layers' (k, e, SE) of ``arch`` (a mapping or its text)."""
        a = self._mapping(arch)
        return [MBLayer(a[f"backbone{i}.k"], a[f"backbone{i}.e"], bool(a[f"backbone{i}.se"]))
                for i in range(BACKBONE_LAYERS)]

    def neck_layers(self, arch) -> list[MBLayer]:
        """The neck's blocks, top-down (P5, P4, P3)."""
        a = self._mapping(arch)
        return [MBLayer(a[f"neck.{p}.k"], a[f"neck.{p}.e"], bool(a[f"neck.{p}.se"])) for p in NECK_LEVELS]

    def backbone_encoding(self, arch) -> MBConvEncoding:
        """The backbone as an :class:`MBConvEncoding`, channels as built."""
        layers, stages, i = self.backbone_layers(arch), [], 0
        for s in self.layout.stages:
            stages.append(MBStage(s.channels, s.stride, tuple(layers[i:i + len(s.layers)])))
            i += len(s.layers)
        return MBConvEncoding(self.layout.stem, tuple(stages), self.layout.head)

    def layer_plan(self) -> list[tuple[int, int, int]]:
        """(in channels, out channels, stride) of each of the 17 backbone layers, as built."""
        plan, c_in = [], self.layout.stem
        for s in self.layout.stages:
            for j in range(len(s.layers)):
                plan.append((c_in, s.channels, s.stride if j == 0 else 1))
                c_in = s.channels
        return plan

    # -- text ------------------------------------------------------------------------------------
    def to_text(self, arch: dict) -> str:
        neck = ",".join(str(layer) for layer in self.neck_layers(arch))
        return f"{self.backbone_encoding(arch)}|fpnlite@{arch['neck.width']}:{neck}"

    def from_text(self, text: str) -> dict:
        if not isinstance(text, str):
            raise EncodingError(f"NasEodSpace: expected text like {_EXAMPLE!r}, got {type(text).__name__}")
        parts = text.split("|")
        if len(parts) != 2:
            raise EncodingError(f"NasEodSpace: {text!r} is not '<MBConv backbone>|fpnlite@<width>:<block>,<block>,"
                                f"<block>' (e.g. {_EXAMPLE!r})")
        try:
            backbone = MBConvEncoding.parse(parts[0].strip())
        except EncodingError as e:
            raise EncodingError(f"NasEodSpace: backbone: {e}") from None
        self._check_layout(backbone, parts[0].strip())
        m = re.fullmatch(r"fpnlite@([0-9]+):(.*)", parts[1].strip())
        if m is None:
            raise EncodingError(f"NasEodSpace: the neck {parts[1]!r} is not 'fpnlite@<width>:<block>,<block>,<block>' "
                                f"(e.g. 'fpnlite@64:k3e6,k5e3se,k3e1')")
        neck = []
        for token in m.group(2).split(","):   # k<k>e<e>[se][x<n>]: runs as the MBConv grammar writes them
            run = re.fullmatch(r"(k\d+e\d+(?:se)?)(?:x([1-9][0-9]*))?", token.strip())
            if run is None:
                raise EncodingError(f"NasEodSpace: neck {parts[1]!r}: a block is written k<kernel>e<expansion>[se]"
                                    f"[x<n>], e.g. 'k5e3se'; got {token!r}")
            neck += [parse_layer(run.group(1))] * int(run.group(2) or 1)
        if len(neck) != len(NECK_LEVELS):
            raise EncodingError(f"NasEodSpace: the neck has one block per level {', '.join(NECK_LEVELS)} (top-down); "
                                f"got {len(neck)} in {parts[1]!r}")
        layers = [layer for s in backbone.stages for layer in s.layers]
        for where, layer in [(f"backbone layer {i}", v) for i, v in enumerate(layers)] + \
                             [(f"neck block {p}", v) for p, v in zip(NECK_LEVELS, neck)]:
            if layer.kernel not in KERNELS or layer.expansion not in EXPANSIONS:
                raise EncodingError(f"NasEodSpace: {where} is {layer}; NAS-EOD's kernels are {KERNELS} and "
                                    f"expansions {EXPANSIONS}")
        arch: dict = {}
        for i, layer in enumerate(layers):
            arch.update({f"backbone{i}.k": layer.kernel, f"backbone{i}.e": layer.expansion,
                         f"backbone{i}.se": layer.se})
        arch["neck.width"] = int(m.group(1))
        for p, layer in zip(NECK_LEVELS, neck):
            arch.update({f"neck.{p}.k": layer.kernel, f"neck.{p}.e": layer.expansion, f"neck.{p}.se": layer.se})
        return arch

    def _check_layout(self, enc: MBConvEncoding, text: str) -> None:
        want = self.layout

        def shape(e: MBConvEncoding) -> str:
            return (f"stem {e.stem}, stages " + "-".join(f"c{s.channels}s{s.stride}x{len(s.layers)}" for s in e.stages)
                    + f", head {e.head}")

        same = (enc.stem == want.stem and enc.head == want.head and len(enc.stages) == len(want.stages)
                and all((a.channels, a.stride, len(a.layers)) == (b.channels, b.stride, len(b.layers))
                        for a, b in zip(enc.stages, want.stages)))
        if not same:
            raise EncodingError(f"NasEodSpace: the backbone {text!r} has {shape(enc)}; this space (width {self.width}, "
                                f"head {self.head_channels}) builds {shape(want)}")

    # -- pruning order, building -------------------------------------------------------------------
    def descriptor(self, arch) -> list[int]:
        """(k, e, SE) of every backbone layer, the neck width, (k, e, SE) of every neck block: each
        grows with the block's size, so a ⪯ b means b is at least as big everywhere."""
        a = self._mapping(arch)
        return [int(a[d.label]) for d in self._decisions]

    def spec(self, arch) -> tuple[dict, tuple[int, int]]:
        """(build spec for :func:`~nasx.spaces.detectors.build_from_spec`, input (H, W)) of ``arch``
        (a mapping or its text): ``build_fpnlite`` with the backbone's MBConv string and the neck's blocks."""
        a = self._mapping(arch)
        spec = {"detector": "fpnlite", "backbone": str(self.backbone_encoding(a)), "num_classes": self.num_classes,
                "neck_width": a["neck.width"], "neck_blocks": [str(layer) for layer in self.neck_layers(a)],
                "head_convs": self.head_convs, "norm": self.norm, "neck_norm": self.neck_norm}
        return spec, self.input_size

    def baseline_spec(self, neck_width: Optional[int] = None) -> tuple[dict, tuple[int, int]]:
        """MobileNetV2-FPNLite in this space's terms (same width, head, norms, head convs, input):
        MobileNetV2's own layers (k3, e1 then e6, no SE) and TF's plain FPNLite neck (sum merges, no
        searched blocks), ``neck_width`` as built (default: the smallest of :attr:`neck_widths`)."""
        width = self.neck_widths[0] if neck_width is None else neck_width
        if width not in self.neck_widths:
            raise ValueError(f"NasEodSpace.baseline_spec: neck_width {width} is not one of {self.neck_widths}")
        backbone = MBConvEncoding(_MBV2.stem, _MBV2.stages, self.head_channels).scaled(self.width)
        spec = {"detector": "fpnlite", "backbone": str(backbone), "num_classes": self.num_classes,
                "neck_width": width, "neck_blocks": None, "head_convs": self.head_convs, "norm": self.norm,
                "neck_norm": self.neck_norm}
        return spec, self.input_size

    def build(self, arch) -> nn.Module:
        from nasx.spaces.detectors import build_from_spec

        return build_from_spec(self.spec(arch)[0])
