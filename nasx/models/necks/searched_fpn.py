"""The NAS-FCOS searched FPN (seed 004, §3.2.1): basic blocks wired over a growing pool.

The pool starts as the width-adapted backbone features [c3, c4, c5] (ids 0, 1, 2); block t
(1-based) reads ids ``id1``, ``id2`` < 3 + t - 1, applies ``op1``/``op2``, aggregates, and its
output joins the pool as id 3 + t - 1. A block's output has the larger of its inputs' sizes.

Outputs, following the authors' released implementation (their ``MicroDecoder_v2``):

- P3, P4, P5 are the outputs of the last, second-to-last and third-to-last blocks. (The paper's
  text pairs them the other way round, {x5, x6, x7} -> {p3, p4, p5}; the released code, which
  produced the published models, uses this order, and with it the published FPN's last block
  is already at stride 8 and its third-to-last at stride 32.)
- A dangling block -- among the first ``len(blocks) - 3``, and read by no later block -- is added
  (bilinearly resized) to each of the three, at that output's own resolution (Eq. 1).
- Each then is bilinearly resized to its level's size: the size of c3, c4, c5 (strides 8, 16, 32).
- P6 = 3x3 stride-2 conv of P5, P7 = 3x3 stride-2 conv of ReLU(P6), as in FCOS.

Letters: B images, C the decoder width.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from nasx.models.layers.nas_fcos_ops import BasicBlock, resize_to
from nasx.models.layers.norm import conv2d, norm2d

__all__ = ["SearchedFPN"]

IN_NAMES = ("c3", "c4", "c5")


class SearchedFPN(nn.Module):
    """Args:
        in_channels: ``{"c3": ..., "c4": ..., "c5": ...}`` backbone channels.
        channels: C, the width of every op (1x1 conv + norm + ReLU first adapt each input that a
            block reads to it; the sizes of c3, c4, c5 set those of P3, P4, P5 whether read or not).
        blocks: per block ``(id1, id2, op1, op2, agg)`` -- pool ids, op names of
            :data:`nasx.models.layers.OPS`, an aggregation of :data:`nasx.models.layers.AGGS`;
            at least 3 blocks.
        norm: norm of the adapters, ops and concat aggregations.
        extra_levels: stride-2 levels after P5 (2: P6, P7).

    ``forward({"c3", "c4", "c5"})`` -> ``{"p3": [B, C, H/8, W/8], ..., "p7": [B, C, H/128, W/128]}``.
    """

    def __init__(self, *, in_channels: dict[str, int], channels: int, blocks: Sequence[Sequence],
                 norm: str = "gn", extra_levels: int = 2):
        super().__init__()
        missing = [n for n in IN_NAMES if n not in in_channels]
        if missing:
            raise ValueError(f"SearchedFPN: in_channels needs {list(IN_NAMES)}; missing {missing} in {dict(in_channels)}")
        if len(blocks) < 3:
            raise ValueError(f"SearchedFPN: needs at least 3 blocks (P3-P5 are the last three), got {len(blocks)}")
        self.channels = channels
        self.wiring: list[tuple[int, int]] = []
        self.blocks = nn.ModuleList()
        for t, (id1, id2, op1, op2, agg) in enumerate(blocks):
            pool = len(IN_NAMES) + t
            for name, i in (("id1", id1), ("id2", id2)):
                if not 0 <= int(i) < pool:
                    raise ValueError(f"SearchedFPN: block {t + 1}: {name}={i} but the pool has {pool} entries")
            self.wiring.append((int(id1), int(id2)))
            self.blocks.append(BasicBlock(channels=channels, op1=op1, op2=op2, agg=agg, norm=norm))
        # adapters only for the inputs some block reads (an unread one would be a dead weight)
        read = {i for pair in self.wiring for i in pair}
        self.adapt = nn.ModuleDict(
            (n, nn.Sequential(conv2d(in_channels[n], channels, 1, norm=norm), norm2d(channels, norm), nn.ReLU()))
            for i, n in enumerate(IN_NAMES) if i in read)
        first_out = len(IN_NAMES)
        n = len(blocks)
        # pool ids of dangling blocks (not among the last three, read by no later block)
        self.dangling = tuple(first_out + t for t in range(n - 3) if first_out + t not in read)
        # pool ids of P3, P4, P5: the last, second-to-last, third-to-last block
        self.outputs = (first_out + n - 1, first_out + n - 2, first_out + n - 3)
        self.extra = nn.ModuleList(nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(extra_levels))
        for conv in self.extra:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        self.out_names = tuple(f"p{k}" for k in range(3, 6 + extra_levels))

    @property
    def strides(self) -> dict[str, int]:
        return {n: 2 ** int(n[1:]) for n in self.out_names}

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        missing = [n for n in IN_NAMES if n not in features]
        if missing:
            raise KeyError(f"SearchedFPN needs backbone features {list(IN_NAMES)}; missing {missing}")
        inputs = [features[n] for n in IN_NAMES]
        pool = [self.adapt[n](x) if n in self.adapt else None for n, x in zip(IN_NAMES, inputs)]  # [B, C, H_k, W_k]
        for (id1, id2), block in zip(self.wiring, self.blocks):
            pool.append(block(pool[id1], pool[id2])[2])
        outs = []
        for i, target in zip(self.outputs, inputs):                               # P3, P4, P5
            x = pool[i]
            for d in self.dangling:
                x = x + resize_to(pool[d], x.shape[-2:])
            outs.append(resize_to(x, target.shape[-2:]))
        x = outs[-1]
        for k, conv in enumerate(self.extra):
            x = conv(x if k == 0 else F.relu(x))
            outs.append(x)
        return dict(zip(self.out_names, outs))

    def extra_repr(self) -> str:
        return f"wiring={self.wiring}, outputs(p3,p4,p5)={self.outputs}, dangling={self.dangling}"
