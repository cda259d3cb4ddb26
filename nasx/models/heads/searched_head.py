"""The NAS-FCOS searched prediction head (seed 004, §3.2.2-3.2.3).

One searched structure, instantiated twice (classification and regression towers, separate
weights), then :class:`nasx.models.heads.fcos_head.FCOSPredictor`.

A tower has 1 + len(blocks) stages. Stage 0 is a single op on the level feature p; the pool
starts as [p, o0] (ids 0, 1). Stage t >= 1 is a basic block reading two pool ids and adding its
two op outputs and their aggregation, [o1_t, o2_t, a_t], to the pool (so block t reads ids
< 2 + 3 (t - 1)). The tower's output is the aggregation of the last block.

Parts whose outputs never reach the tower's output (a block none of whose outputs a later
block reads, an op feeding only such parts) are not built: they would compute nothing that
counts, and their weights would never get a gradient.

Weight sharing: stages before ``share_from`` have their own weights per level (they act as
level-specific FPN branches), stages from ``share_from`` on are shared by all levels
(``share_from = 0``: a fully shared head as in FCOS; ``= 1 + len(blocks)``: nothing shared).

Letters: B images, C channels, K classes, L levels, H_l x W_l the size of level l.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from nasx.models.heads.fcos_head import FCOSPredictor
from nasx.models.layers.nas_fcos_ops import Aggregation, build_op

__all__ = ["SearchedTower", "SearchedHead"]


class SearchedTower(nn.Module):
    """One tower (classification or regression) of a searched head.

    Args:
        channels: C.
        first_op: the op of stage 0 (a name of :data:`nasx.models.layers.OPS`).
        blocks: per block ``(id1, id2, op1, op2, agg)``.
        share_from: first stage whose weights all levels share (0 .. 1 + len(blocks)).
        num_levels: L.
        norm: norm of the ops and concat aggregations.

    ``forward(x [B, C, H, W], level)`` -> [B, C, H, W] through that level's weights.
    """

    def __init__(self, *, channels: int, first_op: str, blocks: Sequence[Sequence], share_from: int,
                 num_levels: int = 5, norm: str = "gn"):
        super().__init__()
        num_stages = 1 + len(blocks)
        if not 0 <= share_from <= num_stages:
            raise ValueError(f"SearchedTower: share_from must be in 0..{num_stages} for {len(blocks)} blocks, "
                             f"got {share_from}")
        self.wiring: list[tuple[int, int]] = []
        for t, (id1, id2, *_ops) in enumerate(blocks):
            pool = 2 + 3 * t
            for name, i in (("id1", id1), ("id2", id2)):
                if not 0 <= int(i) < pool:
                    raise ValueError(f"SearchedTower: block {t + 1}: {name}={i} but the pool has {pool} entries")
            self.wiring.append((int(id1), int(id2)))

        needed = _needed(self.wiring)

        def stage(s: int) -> nn.ModuleDict:
            # only the parts whose outputs reach the tower's output: the rest would be dead weights
            if s == 0:
                return nn.ModuleDict({"op": build_op(first_op, channels, norm)} if 1 in needed else {})
            _, _, op1, op2, agg = blocks[s - 1]
            o1 = 2 + 3 * (s - 1)
            parts = {}
            if o1 in needed:
                parts["op1"] = build_op(op1, channels, norm)
            if o1 + 1 in needed:
                parts["op2"] = build_op(op2, channels, norm)
            if o1 + 2 in needed:
                parts["agg"] = Aggregation(kind=agg, channels=channels, norm=norm)
            return nn.ModuleDict(parts)

        self.share_from, self.num_levels = share_from, num_levels
        self.live = tuple(sorted(needed))
        self.private = nn.ModuleList(nn.ModuleList(stage(s) for s in range(share_from)) for _ in range(num_levels))
        self.shared = nn.ModuleList(stage(s) for s in range(share_from, num_stages))

    def forward(self, x: Tensor, level: int) -> Tensor:
        pool: list = [x]                       # dead entries stay None
        for s, parts in enumerate([*self.private[level], *self.shared]):
            if s == 0:
                pool.append(parts["op"](x) if "op" in parts else None)                   # o0
                continue
            id1, id2 = self.wiring[s - 1]
            o1 = parts["op1"](pool[id1]) if "op1" in parts else None
            o2 = parts["op2"](pool[id2]) if "op2" in parts else None
            pool += [o1, o2, parts["agg"](o1, o2) if "agg" in parts else None]             # o1, o2, a
        return pool[-1]

    def extra_repr(self) -> str:
        return f"wiring={self.wiring}, share_from={self.share_from}, live pool ids={self.live}"


def _needed(wiring: list[tuple[int, int]]) -> set[int]:
    """Pool ids the tower's output (the last block's aggregation) depends on."""
    needed = {2 + 3 * len(wiring) - 1}
    for t in range(len(wiring), 0, -1):
        o1 = 2 + 3 * (t - 1)
        if o1 + 2 in needed:
            needed |= {o1, o1 + 1}
        id1, id2 = wiring[t - 1]
        if o1 in needed:
            needed.add(id1)
        if o1 + 1 in needed:
            needed.add(id2)
    return needed


class SearchedHead(nn.Module):
    """A searched FCOS head: ``forward(features: L x [B, C, H_l, W_l])`` ->
    ``(cls_logits L x [B, K, H_l, W_l], box_reg L x [B, 4, H_l, W_l], centerness L x [B, 1, H_l, W_l])``.

    Args:
        channels: C of every level.
        num_classes: K.
        first_op, blocks, share_from: the searched structure (see :class:`SearchedTower`).
        num_levels: L.
        norm: norm of the towers.
        prior_prob, box_activation: see :class:`FCOSPredictor`.
    """

    def __init__(self, *, channels: int, num_classes: int, first_op: str, blocks: Sequence[Sequence],
                 share_from: int, num_levels: int = 5, norm: str = "gn", prior_prob: float = 0.01,
                 box_activation: str = "relu"):
        super().__init__()
        kw = dict(channels=channels, first_op=first_op, blocks=blocks, share_from=share_from,
                  num_levels=num_levels, norm=norm)
        self.cls_tower = SearchedTower(**kw)
        self.reg_tower = SearchedTower(**kw)
        self.predictor = FCOSPredictor(in_channels=channels, num_classes=num_classes, num_levels=num_levels,
                                       prior_prob=prior_prob, box_activation=box_activation)
        self.num_levels = num_levels

    def forward(self, features: list[Tensor]):
        if len(features) != self.num_levels:
            raise ValueError(f"SearchedHead: expected {self.num_levels} levels, got {len(features)}")
        cls_feats = [self.cls_tower(f, level) for level, f in enumerate(features)]
        reg_feats = [self.reg_tower(f, level) for level, f in enumerate(features)]
        return self.predictor(cls_feats, reg_feats)
