"""SM-NAS's two search spaces (seed 001; Yao et al. 2020): stage one picks a combination of
modules and an input size (:class:`StructuralSpace`), stage two evolves the backbone string and
the FPN width of one stage-one pick (:class:`ModularSpace`). Both produce build specs for
:func:`~nasx.spaces.detectors.build_from_spec`, as :mod:`nasx.spaces.sm_nas_models` does for E0-E5.

Scale: ``width`` multiplies every channel count (backbone base, FPN, RoI FCs; 1/4 for the CPU
demo of the design note §1.6) and ``input_scale`` the input sizes (0.16: 800 -> 128), so the
paper's spaces and their small versions are the same code.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Mapping, Optional

from torch import nn

from nasx.spaces.errors import EncodingError
from nasx.spaces.mbconv import NAMED as MB_NAMED, MBConvEncoding
from nasx.spaces.residual import BLOCKS, ResidualEncoding
from nasx.spaces.space import Decision, Space, _randbelow, as_rng

__all__ = ["BACKBONES", "HEADS", "INPUTS", "ModularSpace", "NECKS", "RETINA_NECK", "RPNS", "StructuralSpace",
           "scaled_backbone"]

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "resnext101_32x4d", "mobilenet_v2")
NECKS = ("none",) + tuple(f"P{s}-P{e}" for s in (1, 2, 3) for e in (4, 5, 6))
RETINA_NECK = "P2-P6"   # build_retinanet's FPN: C3-C5 in, strides 8-128 out (nasx's p3-p7)
RPNS = ("none", "rpn", "ga")
HEADS = ("retinanet", "2fc", "cascade2", "cascade3", "cascade4")
INPUTS = ("512x512", "800x600", "1080x720", "1333x800")   # W x H, as the paper writes them

PAPER_BASES = (48, 56, 64, 72)
PAPER_FPN_WIDTHS = (128, 256, 512)
DOUBLINGS, STAGES = 3, 4


def _scale(value: int, width: float) -> int:
    return max(1, round(value * width))


def _pick(rng, options):
    return options[_randbelow(rng, len(options))]


def _distinct(rng, population, k: int) -> list:
    pool = list(population)
    return [pool.pop(_randbelow(rng, len(pool))) for _ in range(k)]


def _neighbour(rng, options: tuple, value):
    i = options.index(value)
    return options[_pick(rng, [j for j in (i - 1, i + 1) if 0 <= j < len(options)])]


def _text_or_mapping(space: Space, arch) -> dict:
    return space.decode(arch) if isinstance(arch, str) else space.check(arch)


def scaled_backbone(name: str, width: float) -> str:
    """A stage-one backbone at ``width`` times its channels (the name itself at width 1).

    ResNet / ResNeXt: base ``round(64 * width)``; ResNeXt keeps base >= 16 (32 groups need a
    3x3 width of at least 32 = ``base // 16 * 32``). MobileNetV2: :meth:`MBConvEncoding.scaled`.
    """
    if width == 1:
        return name
    if name in MB_NAMED:
        return str(MBConvEncoding.parse(name).scaled(width))
    enc = ResidualEncoding.parse(name)
    return str(replace(enc, base=max(16 if enc.block == "Xbottleneck" else 1, _scale(enc.base, width))))


class StructuralSpace(Space):
    """SM-NAS stage one: five labelled decisions ``backbone``, ``neck``, ``rpn``, ``head``, ``input``.

    - ``neck``: ``"none"`` (the original Faster R-CNN: RPN and RoIs on C4) or ``"P<s>-P<e>"``,
      an FPN over SM-NAS's levels ``s`` .. ``e`` (P1-P4 the backbone's strides 4-32, P5/P6 pooled;
      :func:`~nasx.models.necks.fpn.sm_nas_fpn_levels`) with ``s`` in {1, 2, 3}, ``e`` in {4, 5, 6}:
      the design note's proposal (the paper lists no pairs; Table 2 uses P2-P5 and P1-P5).
    - Coupling: ``head`` is ``"retinanet"`` exactly when ``rpn`` is ``"none"`` (one-stage), and a
      RetinaNet's neck is always ``"P2-P6"``: :func:`build_retinanet` builds its standard FPN
      (C3-C5, P6/P7 by stride-2 convs from C5) whatever the range, so other ranges would be
      duplicates of it. Two-stage detectors take every neck. :meth:`check` enforces both rules.
    - ``input``: W x H as the paper writes it; :meth:`input_size` gives (H, W) times
      ``input_scale``, rounded to a multiple of 16 when scaled (the paper's sizes at scale 1).

    Text: the five values joined by ``|``, e.g. ``resnet50|P1-P5|rpn|cascade3|800x600``.
    :meth:`sample` draws the backbone, the input and the RPN uniformly; no RPN fixes head and
    neck, otherwise head (among the two-stage heads) and neck are uniform, so a third of the
    samples are one-stage (uniform over valid combinations would make them ~1 %).
    :meth:`mutate` changes one decision, uniformly among those that can change (a RetinaNet's
    neck cannot), to another value; a change of ``rpn`` or ``head`` across the one-/two-stage
    line repairs the other two: to one-stage sets rpn none, head retinanet, neck P2-P6; to
    two-stage draws the missing head or RPN uniformly and keeps the neck. No descriptor (the
    modules are not ordered by depth or width across families).

    Args:
        width: channel multiplier (backbone, see :func:`scaled_backbone`; FPN 256 and RoI FCs
            1024 unless ``fpn_channels`` / ``fc_channels`` are given).
        input_scale: input size multiplier.
        num_classes, norm: of every built detector. ``norm`` defaults to ``"gn_ws"``: the paper's
            stage one fine-tunes ImageNet BN backbones, nasx trains from scratch (no weights here).
        two_stage: more keywords of the two-stage builders, e.g. ``{"batch_size_per_image": 64,
            "rpn_settings": {"post_nms_top_n": (500, 300)}}`` for small images (stage two inherits
            them through the pick's spec).
        backbones, necks, rpns, heads, inputs: subsets of the paper's options (e.g. ``rpns=("none",
            "rpn")`` without GA-RPN, as the demo may); they must allow both sides of the coupling
            they name.
    """

    def __init__(self, *, width: float = 1.0, input_scale: float = 1.0, num_classes: int = 80, norm: str = "gn_ws",
                 fpn_channels: Optional[int] = None, fc_channels: Optional[int] = None,
                 two_stage: Optional[Mapping] = None, backbones=BACKBONES, necks=NECKS, rpns=RPNS, heads=HEADS, inputs=INPUTS):
        if not width > 0 or not input_scale > 0:
            raise ValueError(f"StructuralSpace: width and input_scale must be positive, got {width} and {input_scale}")
        options = {}
        for label, given, known in (("backbone", backbones, BACKBONES), ("neck", necks, NECKS), ("rpn", rpns, RPNS),
                                    ("head", heads, HEADS), ("input", inputs, INPUTS)):
            given = tuple(given)
            unknown = [v for v in given if v not in known]
            if not given or unknown:
                raise ValueError(f"StructuralSpace: {label} options must be a non-empty subset of {known}; got {given}")
            options[label] = given
        one, two = "none" in options["rpn"], any(r != "none" for r in options["rpn"])
        two_heads = [h for h in options["head"] if h != "retinanet"]
        if one != ("retinanet" in options["head"]) or two != bool(two_heads) or (one and RETINA_NECK not in necks):
            raise ValueError(f"StructuralSpace: rpn 'none' needs head 'retinanet' and neck {RETINA_NECK!r} and the "
                             f"reverse, an RPN needs a two-stage head and the reverse; got rpns {options['rpn']}, "
                             f"heads {options['head']}, necks {options['neck']}")
        self.width, self.input_scale, self.num_classes, self.norm = width, input_scale, num_classes, norm
        self.fpn_channels = fpn_channels or _scale(256, width)
        self.fc_channels = fc_channels or _scale(1024, width)
        self.two_stage = dict(two_stage or {})
        self.two_stage_heads, self.two_stage_rpns = tuple(two_heads), tuple(r for r in options["rpn"] if r != "none")
        self._decisions = tuple(Decision(label, opts, kind=label) for label, opts in options.items())

    def decisions(self) -> list[Decision]:
        return list(self._decisions)

    def _options(self, label: str) -> tuple:
        return self._decisions[self.labels.index(label)].options

    def check(self, arch: Mapping) -> dict:
        arch = super().check(arch)
        one_stage = arch["rpn"] == "none"
        if one_stage != (arch["head"] == "retinanet"):
            raise EncodingError(f"StructuralSpace: rpn {arch['rpn']!r} with head {arch['head']!r}; the head is "
                                f"'retinanet' exactly when rpn is 'none' (one-stage)")
        if one_stage and arch["neck"] != RETINA_NECK:
            raise EncodingError(f"StructuralSpace: a RetinaNet's neck is {RETINA_NECK!r} (its standard FPN), "
                                f"got {arch['neck']!r}")
        return arch

    def to_text(self, arch: dict) -> str:
        return "|".join(str(arch[lb]) for lb in self.labels)

    def from_text(self, text: str) -> dict:
        if not isinstance(text, str):
            raise EncodingError(f"StructuralSpace: expected text like 'resnet50|P1-P5|rpn|cascade3|800x600', "
                                f"got {type(text).__name__}")
        parts = [p.strip() for p in text.split("|")]
        if len(parts) != len(self.labels):
            raise EncodingError(f"StructuralSpace: {text!r} has {len(parts)} '|'-separated fields; expected "
                                f"{len(self.labels)}: {'|'.join(self.labels)}")
        return dict(zip(self.labels, parts))

    def sample(self, rng=None) -> dict:
        rng = as_rng(rng)
        arch = {"backbone": _pick(rng, self._options("backbone")), "rpn": _pick(rng, self._options("rpn")),
                "input": _pick(rng, self._options("input"))}
        if arch["rpn"] == "none":
            arch.update(head="retinanet", neck=RETINA_NECK)
        else:
            arch.update(head=_pick(rng, self.two_stage_heads), neck=_pick(rng, self._options("neck")))
        return self.check(arch)

    def mutate(self, arch: Mapping, rng=None) -> dict:
        rng, arch = as_rng(rng), self.check(arch)
        movable = [d for d in self._decisions if d.valid > 1 and not (d.label == "neck" and arch["rpn"] == "none")]
        if not movable:
            raise EncodingError("StructuralSpace: no decision has another valid option; nothing to mutate")
        d = _pick(rng, movable)
        new = {**arch, d.label: _pick(rng, [v for v in d.options if v != arch[d.label]])}
        if d.label in ("rpn", "head"):
            if new[d.label] == ("none" if d.label == "rpn" else "retinanet"):   # to one-stage
                new.update(rpn="none", head="retinanet", neck=RETINA_NECK)
            elif arch["rpn"] == "none":                                         # from one-stage: draw the other half
                other = ("head", self.two_stage_heads) if d.label == "rpn" else ("rpn", self.two_stage_rpns)
                new[other[0]] = _pick(rng, other[1])
        return self.check(new)

    def input_size(self, arch) -> tuple[int, int]:
        """(H, W) of ``arch``'s input at ``input_scale``."""
        w, h = (int(v) for v in _text_or_mapping(self, arch)["input"].split("x"))
        if self.input_scale == 1:
            return h, w
        return tuple(max(16, round(v * self.input_scale / 16) * 16) for v in (h, w))

    def spec(self, arch) -> tuple[dict, tuple[int, int]]:
        """(build spec for :func:`~nasx.spaces.detectors.build_from_spec`, input (H, W)) of ``arch``
        (a mapping or its text). Two-stage detectors use the torchvision ResNet stem (stage one
        searches the standard backbones); the caller may add keys (``rpn_settings``, RoIHeads'
        ``batch_size_per_image``, ...) before building."""
        arch = _text_or_mapping(self, arch)
        spec = {"backbone": scaled_backbone(arch["backbone"], self.width), "num_classes": self.num_classes,
                "norm": self.norm}
        if arch["neck"] != "none":
            spec["fpn_channels"] = self.fpn_channels
        if arch["head"] == "retinanet":
            return {"detector": "retinanet", **spec}, self.input_size(arch)
        head, neck = arch["head"], arch["neck"]
        spec = {"detector": "faster_rcnn" if head == "2fc" else "cascade_rcnn", **spec,
                "fpn_levels": None if neck == "none" else tuple(int(v) for v in re.findall(r"\d", neck)),
                "rpn": arch["rpn"], "fc_channels": self.fc_channels, **self.two_stage}
        if head != "2fc":
            spec["cascade_stages"] = int(head[len("cascade"):])
        return spec, self.input_size(arch)

    def build(self, arch) -> nn.Module:
        from nasx.spaces.detectors import build_from_spec

        return build_from_spec(self.spec(arch)[0])


class ModularSpace(Space):
    """SM-NAS stage two: the backbone string ``<block>_<base>_<s1>-<s2>-<s3>-<s4>`` (the grammar of
    :class:`~nasx.spaces.residual.ResidualEncoding`) and the FPN width of one detector.

    An architecture is ``{"backbone": str, "fpn": int}`` (``fpn`` None when the detector has no
    FPN), text ``basicblock_56_12-11111-211-1112|fpn256``; the numbers are the built channels
    (at ``width`` 1/4 the bases are 12-18 and the widths 32-128). The space: ``block`` fixed,
    base in ``bases``, 4 stages, ``min_blocks`` to ``max_blocks`` blocks, exactly 3 ``2``s
    anywhere (stage 1 included: E1-E5 double there), FPN width in ``fpn_widths``.

    No fixed decision list: the string has variable length, so :meth:`decisions` (and with it
    ``to_indices`` / ``from_indices``, i.e. controller-based strategies) raises
    NotImplementedError; ``labels``, :meth:`check`, ``encode`` / ``decode``, :meth:`sample`,
    :meth:`mutate` and :meth:`descriptor` are what an evolutionary strategy uses.

    :meth:`sample` follows vega's ``random_sample``: block count uniform, the 3 doublings and the
    3 stage boundaries at distinct random positions; base and FPN width uniform. :meth:`mutate`
    is vega AutoLane's ``EA_sample``: with ``p_base`` the base moves to a neighbour in ``bases``,
    with ``p_fpn`` (nasx's addition) the FPN width to a neighbour in ``fpn_widths``; then
    ``num_mutate`` ops, each uniformly: insert a ``1`` (at any of the len + 1 positions; vega's
    len excludes appending after a final ``2``), remove a ``1``, or swap a ``2`` / ``-`` with the
    character r in 1 .. max(1, num_mutate // 2) positions away (out of range: retry, vega wraps
    around); retried until every stage is non-empty, the block count is in range and something
    changed.

    :meth:`descriptor` (nasx's choice, for partial-order pruning): base, FPN width and, per stage
    k and channel level j = 0..3 (j doublings reached), the number of blocks of stage k at
    level >= j. Deeper (more blocks) or wider (larger base, earlier doublings, wider FPN) never
    decreases a component, and the descriptor determines the architecture, so a ⪯ b is a
    partial order. (Blocks and doublings per stage alone would not be: ``12`` and ``21`` would tie.)

    Args:
        base_spec: the stage-one pick as a build spec (``StructuralSpace.spec(arch)[0]`` or
            :func:`~nasx.spaces.sm_nas_models.sm_nas_model_spec`'s); its backbone, FPN width,
            norm and stem are replaced. Default: Faster R-CNN, FPN(P2-P5), RPN (E0's layout).
        block: ``basicblock`` | ``bottleneck`` | ``Xbottleneck``; default the base spec's block.
        width: channel multiplier of the default ``bases`` (48-72) and ``fpn_widths`` (128-512);
            Xbottleneck bases stay >= 16.
        num_classes: default the base spec's (else 80). ``norm``: ``"gn_ws"`` (from scratch).
        input_size: (H, W) that :meth:`spec` returns (the stage-one pick's).
    """

    def __init__(self, *, base_spec: Optional[dict] = None, block: Optional[str] = None, width: float = 1.0,
                 bases=None, fpn_widths=None, min_blocks: int = 5, max_blocks: int = 35, num_mutate: int = 3,
                 p_base: float = 0.5, p_fpn: float = 0.5, num_classes: Optional[int] = None, norm: str = "gn_ws",
                 input_size: tuple[int, int] = (600, 800)):
        if base_spec is None:
            base_spec = {"detector": "faster_rcnn", "fpn_levels": (2, 5), "rpn": "rpn",
                         "fc_channels": _scale(1024, width)}
        detectors = ("faster_rcnn", "cascade_rcnn", "retinanet")
        if not isinstance(base_spec, dict) or base_spec.get("detector") not in detectors:
            raise ValueError(f"ModularSpace: base_spec must be a build spec with 'detector' one of {detectors}, "
                             f"got {base_spec!r}")
        if block is None:
            try:
                block = ResidualEncoding.parse(base_spec.get("backbone", "basicblock_64_1-1-1-1")).block
            except EncodingError as e:
                raise ValueError(f"ModularSpace: the base spec's backbone is not residual ({e}); pass block=") from None
        if block not in BLOCKS:
            raise ValueError(f"ModularSpace: block must be one of {BLOCKS}, got {block!r}")
        min_base = 16 if block == "Xbottleneck" else 1
        bases = tuple(sorted(set(bases or (max(min_base, _scale(b, width)) for b in PAPER_BASES))))
        has_fpn = base_spec.get("fpn_levels", ()) is not None
        fpn_widths = tuple(sorted(set(fpn_widths or (_scale(w, width) for w in PAPER_FPN_WIDTHS)))) if has_fpn else ()
        if any(not isinstance(b, int) or b < min_base for b in bases):
            raise ValueError(f"ModularSpace: bases must be integers >= {min_base} for {block}, got {bases}")
        if not STAGES <= min_blocks <= max_blocks:
            raise ValueError(f"ModularSpace: need {STAGES} <= min_blocks <= max_blocks, got {min_blocks}, {max_blocks}")
        if num_mutate < 1:
            raise ValueError(f"ModularSpace: num_mutate must be >= 1, got {num_mutate}")
        self.base_spec = {k: v for k, v in base_spec.items() if k != "input"}
        self.block, self.bases, self.fpn_widths = block, bases, fpn_widths
        self.min_blocks, self.max_blocks, self.num_mutate = min_blocks, max_blocks, num_mutate
        self.p_base, self.p_fpn, self.norm, self.input_size = p_base, p_fpn, norm, tuple(input_size)
        self.num_classes = num_classes or base_spec.get("num_classes", 80)

    def decisions(self) -> list[Decision]:
        raise NotImplementedError("ModularSpace has no fixed decision list: its backbone is a variable-length string; "
                                  "use sample / mutate / encode / decode / check / descriptor (evolutionary search), "
                                  "not a controller's index vectors")

    @property
    def labels(self) -> list[str]:
        return ["backbone", "fpn"]

    def __len__(self) -> int:
        return 2

    def check(self, arch: Mapping) -> dict:
        if not isinstance(arch, Mapping) or set(arch) != {"backbone", "fpn"}:
            raise EncodingError(f"ModularSpace: an architecture is {{'backbone': str, 'fpn': int}}, got {arch!r}")
        enc = ResidualEncoding.parse(arch["backbone"])
        text, why = str(enc), None
        if enc.block != self.block:
            why = f"block {enc.block!r}, expected {self.block!r}"
        elif enc.base not in self.bases:
            why = f"base {enc.base}, expected one of {self.bases}"
        elif len(enc.stages) != STAGES:
            why = f"{len(enc.stages)} stages, expected {STAGES}"
        elif "".join(enc.stages).count("2") != DOUBLINGS:
            why = f"{''.join(enc.stages).count('2')} doublings ('2'), expected {DOUBLINGS}"
        elif not self.min_blocks <= enc.depth <= self.max_blocks:
            why = f"{enc.depth} blocks, expected {self.min_blocks} to {self.max_blocks}"
        if why:
            raise EncodingError(f"ModularSpace: backbone {text!r} has {why}")
        if (arch["fpn"] not in self.fpn_widths) if self.fpn_widths else arch["fpn"] is not None:
            raise EncodingError(f"ModularSpace: fpn is {arch['fpn']!r}; expected one of "
                                f"{self.fpn_widths or (None,)}")
        return {"backbone": text, "fpn": arch["fpn"]}

    def to_text(self, arch: dict) -> str:
        return arch["backbone"] + ("" if arch["fpn"] is None else f"|fpn{arch['fpn']}")

    def from_text(self, text: str) -> dict:
        if not isinstance(text, str):
            raise EncodingError(f"ModularSpace: expected text like 'basicblock_56_12-11111-211-1112|fpn256', "
                                f"got {type(text).__name__}")
        backbone, *rest = [p.strip() for p in text.split("|")]
        if len(rest) > 1 or (rest and not re.fullmatch(r"fpn[1-9][0-9]*", rest[0])):
            raise EncodingError(f"ModularSpace: {text!r} is not '<backbone>|fpn<width>' (e.g. "
                                f"'basicblock_56_12-11111-211-1112|fpn256'; no '|fpn' part without an FPN)")
        return {"backbone": backbone, "fpn": int(rest[0][3:]) if rest else None}

    def sample(self, rng=None) -> dict:
        rng = as_rng(rng)
        length = self.min_blocks + _randbelow(rng, self.max_blocks - self.min_blocks + 1)
        chars = ["1"] * length
        for i in _distinct(rng, range(length), DOUBLINGS):
            chars[i] = "2"
        for i in sorted(_distinct(rng, range(1, length), STAGES - 1), reverse=True):
            chars.insert(i, "-")
        backbone = f"{self.block}_{_pick(rng, self.bases)}_{''.join(chars)}"
        return self.check({"backbone": backbone, "fpn": _pick(rng, self.fpn_widths) if self.fpn_widths else None})

    def mutate(self, arch: Mapping, rng=None) -> dict:
        rng, arch = as_rng(rng), self.check(arch)
        enc = ResidualEncoding.parse(arch["backbone"])
        code, reach = "-".join(enc.stages), max(1, self.num_mutate // 2)
        for _ in range(1000):
            base, fpn = enc.base, arch["fpn"]
            if len(self.bases) > 1 and rng.random() < self.p_base:
                base = _neighbour(rng, self.bases, base)
            if len(self.fpn_widths) > 1 and rng.random() < self.p_fpn:
                fpn = _neighbour(rng, self.fpn_widths, fpn)
            chars, ok = list(code), True
            for _ in range(self.num_mutate):
                op = _randbelow(rng, 3)
                if op == 0:
                    chars.insert(_randbelow(rng, len(chars) + 1), "1")
                    continue
                where = [i for i, c in enumerate(chars) if (c == "1") == (op == 1)]
                if not where:
                    ok = False
                    break
                i = _pick(rng, where)
                if op == 1:
                    chars.pop(i)
                    continue
                j = i + (1 + _randbelow(rng, reach)) * _pick(rng, (-1, 1))
                if not 0 <= j < len(chars):
                    ok = False
                    break
                chars[i], chars[j] = chars[j], chars[i]
            stages, new = "".join(chars).split("-"), "".join(chars)
            if (not ok or "" in stages or not self.min_blocks <= len(new) - new.count("-") <= self.max_blocks
                    or (new, base, fpn) == (code, enc.base, arch["fpn"])):
                continue
            return self.check({"backbone": f"{self.block}_{base}_{new}", "fpn": fpn})
        raise EncodingError(f"ModularSpace: no valid mutation of {self.to_text(arch)!r} in 1000 tries")

    def descriptor(self, arch: Mapping) -> list[int]:
        arch = _text_or_mapping(self, arch)
        enc = ResidualEncoding.parse(arch["backbone"])
        out, level = [enc.base, arch["fpn"] or 0], 0
        for stage in enc.stages:
            levels = []
            for ch in stage:
                level += ch == "2"
                levels.append(level)
            out += [sum(v >= j for v in levels) for j in range(DOUBLINGS + 1)]
        return out

    def spec(self, arch) -> tuple[dict, tuple[int, int]]:
        """(build spec, input (H, W)): the base spec with this backbone, FPN width, ``norm`` and the
        SM-NAS stem (two 3x3/2 convs; RetinaNet's builder has no stem option, it keeps ResNet's)."""
        arch = _text_or_mapping(self, arch)
        spec = {**self.base_spec, "backbone": arch["backbone"], "norm": self.norm, "num_classes": self.num_classes}
        if arch["fpn"] is not None:
            spec["fpn_channels"] = arch["fpn"]
        if spec["detector"] != "retinanet":
            spec["stem"] = "sm_nas"
        return spec, self.input_size

    def build(self, arch) -> nn.Module:
        from nasx.spaces.detectors import build_from_spec

        return build_from_spec(self.spec(arch)[0])
