"""The NAS-FCOS decoder search space (seed 004, §3.2): an FPN of 7 basic blocks, a prediction
head of a first op plus 5 basic blocks, and the head's weight-sharing index.

Text form (the seed's list form, with op names)::

    [[fpn block x 7], [first_op, head block x 5], share_from]
    block = [id1, id2, op1, op2, agg]

- ops: ``sep3x3 sep3x3_d3 sep5x5_d6 skip deform3x3`` (Table 1, in its ID order); aggregations:
  ``sum concat`` (see :mod:`nasx.models.layers.nas_fcos_ops`).
- FPN ids index a pool that starts as [c3, c4, c5] (ids 0, 1, 2) and gains each block's output:
  block t (1-based) may read ids 0 .. t + 1. P3, P4, P5 are the last, second-to-last and
  third-to-last block outputs, resized to strides 8, 16, 32; dangling blocks are added to all
  three; P6, P7 are stride-2 convs (see :class:`nasx.models.necks.SearchedFPN`).
- Head ids index a pool that starts as [p, o0] (ids 0, 1; o0 = first_op(p)) and gains the two op
  outputs and the aggregation of each block: block t may read ids 0 .. 3 t - 2. The head's output
  is the last block's aggregation (see :class:`nasx.models.heads.SearchedHead`).
- ``share_from`` in 0..6 is the first of the head's 6 stages (first op = stage 0, block t =
  stage t) whose weights all levels share; earlier stages have weights per level.

One sharing index for all levels, not one per level as §3.2.3 describes: the authors' released
implementation searches and builds a single index (``share_weights_layer``) and their released
architecture uses it; a per-level index would multiply the decision sequence's tail by five
for a structure the released code never used.

Whitespace is ignored; :meth:`NasFcosArch.to_string` writes no spaces.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

from torch import nn

from nasx.models.heads.searched_head import SearchedHead
from nasx.models.layers.nas_fcos_ops import AGGS, OPS
from nasx.models.layers.norm import NORMS
from nasx.models.necks.searched_fpn import SearchedFPN
from nasx.spaces.errors import EncodingError
from nasx.spaces.space import Decision, Space

__all__ = ["AGGS", "BASELINE", "Block", "Decision", "FPN_BLOCKS", "HEAD_BLOCKS", "HEAD_STAGES", "NAMED",
           "NAS_FCOS_PUBLISHED", "NasFcosArch", "NasFcosSpace", "OPS"]

FPN_BLOCKS = 7
HEAD_BLOCKS = 5
HEAD_STAGES = 1 + HEAD_BLOCKS
FPN_INPUTS = 3          # c3, c4, c5
_GRAMMAR = "[[fpn block x 7], [first_op, head block x 5], share_from] with block = [id1, id2, op1, op2, agg]"


def fpn_pool_size(t: int) -> int:
    """Pool entries FPN block t (1-based) may read."""
    return FPN_INPUTS + t - 1


def head_pool_size(t: int) -> int:
    """Pool entries head block t (1-based) may read: [p, o0] plus 3 per earlier block."""
    return 2 + 3 * (t - 1)


class Block(NamedTuple):
    """One basic block: ops ``op1`` on pool entry ``id1`` and ``op2`` on ``id2``, merged by ``agg``."""
    id1: int
    id2: int
    op1: str
    op2: str
    agg: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _block(where: str, value: Any, pool: int) -> Block:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 5:
        raise EncodingError(f"{where}: expected [id1, id2, op1, op2, agg], got {value!r}")
    id1, id2, op1, op2, agg = value
    for name, i in (("id1", id1), ("id2", id2)):
        if not _is_int(i):
            raise EncodingError(f"{where}: {name} must be an integer pool id, got {i!r}")
        if not 0 <= i < pool:
            raise EncodingError(f"{where}: {name}={i} but the pool has only {pool} entries (ids 0-{pool - 1})")
    for name, op in (("op1", op1), ("op2", op2)):
        if op not in OPS:
            raise EncodingError(f"{where}: {name} {op!r} is not an op; expected one of {OPS}")
    if agg not in AGGS:
        raise EncodingError(f"{where}: agg {agg!r} is not an aggregation; expected one of {AGGS}")
    return Block(id1, id2, op1, op2, agg)


@dataclass(frozen=True)
class NasFcosArch:
    """A NAS-FCOS decoder: ``fpn`` (7 blocks), ``head_op`` (the head's first op), ``head``
    (5 blocks) and ``share_from`` (0..6). Blocks may be given as any 5-sequences; they are stored
    as :class:`Block`. Invalid values raise :class:`EncodingError` naming what is wrong."""

    fpn: tuple[Block, ...]
    head_op: str
    head: tuple[Block, ...]
    share_from: int

    def __post_init__(self):
        for name, blocks, count in (("FPN", self.fpn, FPN_BLOCKS), ("head", self.head, HEAD_BLOCKS)):
            if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence):
                raise EncodingError(f"{name}: expected a list of {count} blocks, got {blocks!r}")
            if len(blocks) != count:
                raise EncodingError(f"{name}: expected {count} blocks, got {len(blocks)}")
        fpn = tuple(_block(f"FPN block {t}", b, fpn_pool_size(t)) for t, b in enumerate(self.fpn, 1))
        head = tuple(_block(f"head block {t}", b, head_pool_size(t)) for t, b in enumerate(self.head, 1))
        if self.head_op not in OPS:
            raise EncodingError(f"head: the first op {self.head_op!r} is not an op; expected one of {OPS}")
        if not _is_int(self.share_from) or not 0 <= self.share_from <= HEAD_STAGES:
            raise EncodingError(f"share_from must be an integer in 0..{HEAD_STAGES} (the first of the head's "
                                f"{HEAD_STAGES} stages shared by all levels), got {self.share_from!r}")
        object.__setattr__(self, "fpn", fpn)
        object.__setattr__(self, "head", head)

    # -- text --------------------------------------------------------------------------------
    def to_string(self) -> str:
        def block(b: Block) -> str:
            return "[" + ",".join(str(v) for v in b) + "]"
        return (f"[[{','.join(block(b) for b in self.fpn)}],"
                f"[{self.head_op},{','.join(block(b) for b in self.head)}],{self.share_from}]")

    __str__ = to_string

    @classmethod
    def parse(cls, text: str) -> "NasFcosArch":
        """Parse the text form (or a name of :data:`NAMED`); :class:`EncodingError` says what is wrong."""
        if not isinstance(text, str):
            raise EncodingError(f"a NAS-FCOS architecture is a string {_GRAMMAR}; got {type(text).__name__}")
        text = NAMED.get(text.strip(), text)
        value = _parse_lists(text)
        if not isinstance(value, list) or len(value) != 3:
            got = f"{len(value)} items" if isinstance(value, list) else repr(value)
            raise EncodingError(f"invalid NAS-FCOS architecture {text!r}: expected {_GRAMMAR}; got {got} at the top level")
        fpn, head, share = value
        if not isinstance(fpn, list):
            raise EncodingError(f"FPN: expected a list of {FPN_BLOCKS} blocks, got {fpn!r}")
        if not isinstance(head, list) or not head or not isinstance(head[0], str):
            raise EncodingError(f"head: expected [first_op, block x {HEAD_BLOCKS}], got {head!r}")
        return cls(fpn=fpn, head_op=head[0], head=head[1:], share_from=share)

    # -- dict / JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready: ``{"fpn": [[id1, id2, op1, op2, agg], ...], "head_op", "head", "share_from"}``."""
        return {"fpn": [list(b) for b in self.fpn], "head_op": self.head_op,
                "head": [list(b) for b in self.head], "share_from": self.share_from}

    @classmethod
    def from_dict(cls, data: dict) -> "NasFcosArch":
        keys = {"fpn", "head_op", "head", "share_from"}
        if not isinstance(data, dict):
            raise EncodingError(f"a NAS-FCOS architecture dict has keys {sorted(keys)}; got {type(data).__name__}")
        if set(data) != keys:
            raise EncodingError(f"a NAS-FCOS architecture dict has keys {sorted(keys)}; missing "
                                f"{sorted(keys - set(data))}, unexpected {sorted(set(data) - keys)}")
        return cls(fpn=data["fpn"], head_op=data["head_op"], head=data["head"], share_from=data["share_from"])


_TOKEN = re.compile(r"\s*(?:(?P<punct>[\[\],])|(?P<int>-?\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*))")


def _parse_lists(text: str):
    """Nested ``[...]`` lists of ints and names -> Python lists; syntax errors name the position."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if not text[pos:].strip():
                break
            bad = len(text) - len(text[pos:].lstrip())
            raise EncodingError(f"invalid NAS-FCOS architecture {text!r}: unexpected {text[bad]!r} at position {bad}; "
                                f"expected {_GRAMMAR}")
        kind = m.lastgroup
        raw = m.group(kind)
        tokens.append((kind, int(raw) if kind == "int" else raw, m.start(kind)))
        pos = m.end()
    if not tokens:
        raise EncodingError(f"invalid NAS-FCOS architecture {text!r}: empty; expected {_GRAMMAR}")

    def fail(i: int, expected: str):
        got = f"{tokens[i][1]!r} at position {tokens[i][2]}" if i < len(tokens) else "the end of the text"
        raise EncodingError(f"invalid NAS-FCOS architecture {text!r}: expected {expected}, got {got}")

    def value(i: int):
        if i >= len(tokens):
            fail(i, "a value")
        kind, v, _ = tokens[i]
        if kind in ("int", "name"):
            return v, i + 1
        if v != "[":
            fail(i, "a value, '[' or a name")
        items, i = [], i + 1
        if i < len(tokens) and tokens[i][1] == "]":
            return items, i + 1
        while True:
            item, i = value(i)
            items.append(item)
            if i < len(tokens) and tokens[i][1] == ",":
                i += 1
            elif i < len(tokens) and tokens[i][1] == "]":
                return items, i + 1
            else:
                fail(i, "',' or ']'")

    result, end = value(0)
    if end != len(tokens):
        fail(end, "the end of the text")
    return result


# The hand-designed decoder in this space's terms. FPN: the 1x1 adapters are the laterals;
# blocks 1-2 are the top-down merges (c5 up + c4 -> m4, m4 up + c3 -> m3, "skip, skip, sum");
# the 3x3 output convs become residual separable convs ("sep3x3, skip, sum" on one input:
# sep(x) + x) -- one for P5 (block 5) and, since the space has 7 blocks and P3-P5 must be the
# last three, two stacked for P4 (blocks 3, 6) and P3 (blocks 4, 7). Head: FCOS' 4 full 3x3
# conv + GN + ReLU layers become the first op plus 5 residual separable convs (6 separable
# layers, all shared across levels). Differences: separable instead of full 3x3 convs,
# residual form, adapters with norm + ReLU, bilinear instead of nearest upsampling, and the
# extra separable layers named above.
BASELINE = ("[[[2,1,skip,skip,sum],[3,0,skip,skip,sum],[3,3,sep3x3,skip,sum],[4,4,sep3x3,skip,sum],"
            "[2,2,sep3x3,skip,sum],[5,5,sep3x3,skip,sum],[6,6,sep3x3,skip,sum]],"
            "[sep3x3,[1,1,sep3x3,skip,sum],[4,4,sep3x3,skip,sum],[7,7,sep3x3,skip,sum],"
            "[10,10,sep3x3,skip,sum],[13,13,sep3x3,skip,sum]],0]")

# The authors' released NAS-FCOS (github.com/Lausannen/NAS-FCOS, configs/search/R_50_NAS_head.yaml,
# SEARCH.DECODER.CONFIG). FPN: transcribed exactly -- their pool also holds c2 as id 0, which
# the search never chose, so every id here is theirs minus one; their op ids 4 / 3 are
# deform3x3 / skip and agg 1 is concat. (Block 3 dangles and is added to P3-P5, as in their code.)
# Head: theirs is a sequential tower searched in a different op set, dconv3x3 -> conv3x3 ->
# dconv3x3 -> conv1x1 -> skip -> skip, fully shared (index 0); it has no exact counterpart
# here, so: first op deform3x3; block 1 = conv3x3 as a residual sep3x3 (sep(x) + x); block 2 =
# dconv3x3 + conv1x1 as concat(deform3x3(x), x) -> 1x1; blocks 3-5 stand for the two trailing
# skips with the nearest to identity a block can be, concat(x, x) -> 1x1 conv + norm + ReLU.
NAS_FCOS_PUBLISHED = (
    "[[[2,2,deform3x3,deform3x3,concat],[2,2,deform3x3,deform3x3,concat],[3,2,deform3x3,skip,concat],"
    "[0,2,deform3x3,skip,concat],[4,2,deform3x3,deform3x3,concat],[3,6,deform3x3,deform3x3,concat],"
    "[6,1,deform3x3,deform3x3,concat]],"
    "[deform3x3,[1,1,sep3x3,skip,sum],[4,4,deform3x3,skip,concat],[7,7,skip,skip,concat],"
    "[10,10,skip,skip,concat],[13,13,skip,skip,concat]],0]")

NAMED = {"baseline": BASELINE, "nas_fcos": NAS_FCOS_PUBLISHED}


class NasFcosSpace(Space):
    """The NAS-FCOS decoder space as labelled decisions (:class:`nasx.spaces.space.Space`) over
    :class:`NasFcosArch`, and the modules it builds.

    Decisions, in order: per FPN block t = 1..7 ``fpn{t}.id1, .id2, .op1, .op2, .agg``; then
    ``head0.op``; per head block t = 1..5 ``head{t}.id1 ... .agg``; then ``share_from``
    (62 decisions). Options: pool ids (only those in the pool at that block; the controller's
    outputs for ids are the largest pool's, ``size``), op names :data:`OPS`, aggregations
    :data:`AGGS`, and ``share_from`` 0..6. The canonical text is :meth:`NasFcosArch.to_string`;
    ``from_text`` also takes the names of :data:`NAMED`. ``encode``, ``to_indices``, ``mutate``
    and ``build`` take a :class:`NasFcosArch` as well as the mapping; :meth:`arch` converts.

    Args:
        channels: width of every decoder op (64 in the paper's proxy task).
        box_activation: the built heads' box branch, ``"relu"`` or ``"exp"`` (see
            :class:`~nasx.models.heads.fcos_head.FCOSPredictor`); not a searched decision.
    """

    def __init__(self, *, channels: int = 64, box_activation: str = "relu"):
        from nasx.models.heads.fcos_head import BOX_ACTIVATIONS

        if not _is_int(channels) or channels < 1:
            raise ValueError(f"NasFcosSpace: channels must be a positive integer, got {channels!r}")
        if box_activation not in BOX_ACTIVATIONS:
            raise ValueError(f"NasFcosSpace: box_activation must be one of {BOX_ACTIVATIONS}, got {box_activation!r}")
        self.channels, self.box_activation = channels, box_activation
        steps: list[Decision] = []

        def block(prefix: str, pool: int, max_pool: int):
            steps.extend([Decision(f"{prefix}.id1", tuple(range(pool)), max_pool, "id"),
                          Decision(f"{prefix}.id2", tuple(range(pool)), max_pool, "id"),
                          Decision(f"{prefix}.op1", OPS, kind="op"), Decision(f"{prefix}.op2", OPS, kind="op"),
                          Decision(f"{prefix}.agg", AGGS, kind="agg")])

        for t in range(1, FPN_BLOCKS + 1):
            block(f"fpn{t}", fpn_pool_size(t), fpn_pool_size(FPN_BLOCKS))
        steps.append(Decision("head0.op", OPS, kind="op"))
        for t in range(1, HEAD_BLOCKS + 1):
            block(f"head{t}", head_pool_size(t), head_pool_size(HEAD_BLOCKS))
        steps.append(Decision("share_from", tuple(range(HEAD_STAGES + 1)), kind="share"))
        self._decisions = tuple(steps)

    def decisions(self) -> list[Decision]:
        return list(self._decisions)

    def valid_choices(self, step: int) -> int:
        return self._decisions[step].valid

    # -- mapping <-> NasFcosArch <-> text ------------------------------------------------------
    def as_mapping(self, arch) -> dict:
        if not isinstance(arch, NasFcosArch):
            return arch
        values: list = []
        for b in arch.fpn:
            values += list(b)
        values.append(arch.head_op)
        for b in arch.head:
            values += list(b)
        values.append(arch.share_from)
        return {d.label: v for d, v in zip(self._decisions, values)}

    def arch(self, value) -> NasFcosArch:
        """A mapping, text (or a name of :data:`NAMED`) or :class:`NasFcosArch` -> :class:`NasFcosArch`."""
        if isinstance(value, NasFcosArch):
            return value
        if isinstance(value, str):
            return NasFcosArch.parse(value)
        values = iter(self.check(value).values())

        def block() -> Block:
            return Block(*(next(values) for _ in range(5)))

        fpn = tuple(block() for _ in range(FPN_BLOCKS))
        head_op = next(values)
        head = tuple(block() for _ in range(HEAD_BLOCKS))
        return NasFcosArch(fpn=fpn, head_op=head_op, head=head, share_from=next(values))

    def to_text(self, arch: dict) -> str:
        return self.arch(arch).to_string()

    def from_text(self, text: str) -> dict:
        return self.as_mapping(NasFcosArch.parse(text))

    # -- modules -----------------------------------------------------------------------------
    def build(self, arch, *, in_channels: dict[str, int], num_classes: int,
              norm: str = "gn") -> tuple[nn.Module, nn.Module]:
        """``(neck, head)`` for :class:`nasx.models.detectors.FCOS`: the neck maps
        ``{"c3", "c4", "c5"}`` (channels ``in_channels``) to ``{"p3", ..., "p7"}`` of
        ``self.channels``; the head obeys the FCOS head contract for ``num_classes`` classes."""
        if not isinstance(arch, (str, NasFcosArch, dict)):
            raise TypeError(f"NasFcosSpace.build: expected a NasFcosArch, its text or its mapping, got {type(arch).__name__}")
        arch = self.arch(arch)
        if norm not in NORMS:
            raise ValueError(f"NasFcosSpace.build: norm must be one of {NORMS}, got {norm!r}")
        missing = [n for n in ("c3", "c4", "c5") if n not in in_channels]
        if missing:
            raise ValueError(f"NasFcosSpace.build: in_channels needs c3, c4, c5; missing {missing} in {dict(in_channels)}")
        neck = SearchedFPN(in_channels={n: int(in_channels[n]) for n in ("c3", "c4", "c5")}, channels=self.channels,
                           blocks=[tuple(b) for b in arch.fpn], norm=norm)
        head = SearchedHead(channels=self.channels, num_classes=num_classes, first_op=arch.head_op,
                            blocks=[tuple(b) for b in arch.head], share_from=arch.share_from,
                            num_levels=len(neck.out_names), norm=norm, box_activation=self.box_activation)
        return neck, head
