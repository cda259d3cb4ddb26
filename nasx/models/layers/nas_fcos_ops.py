"""The NAS-FCOS decoder's operations (seed 004, Table 1 and §3.2): unary ops at a fixed width C
and the two aggregations that merge a basic block's two branches.

Unary ops (``OPS``, in the order of Table 1, so index i is the paper's ID i):

- ``sep3x3``: depthwise 3x3 -> pointwise 1x1 -> norm -> ReLU.
- ``sep3x3_d3``: the same with dilation 3.
- ``sep5x5_d6``: depthwise 5x5 with dilation 6 -> pointwise 1x1 -> norm -> ReLU.
- ``skip``: identity.
- ``deform3x3``: modulated deformable 3x3 conv (DCNv2, :class:`nasx.ops.DeformConv2d`, offset and
  mask predictor zero-initialised so it starts as a regular 3x3 conv) -> norm -> ReLU.

Every conv op is conv -> norm -> ReLU (post-activation, as the authors' released ops): each op's
output is normalised and non-negative whatever it reads, so sums of branches stay in scale.
The depthwise and pointwise convs have no norm between them (one norm per op).

Aggregations (``AGGS``): ``sum`` (element-wise) and ``concat`` (channel concat -> 1x1 conv back to
C -> norm -> ReLU). Inputs of different sizes are first brought to the larger size,
(max H, max W), by bilinear interpolation, whichever input is the larger.

Letters: B images, C channels, H x W a feature map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasx.models.layers.norm import NORMS, conv2d, norm2d
from nasx.ops import DeformConv2d

__all__ = ["OPS", "AGGS", "SepConv", "DeformOp", "Aggregation", "BasicBlock", "build_op", "resize_to"]

OPS = ("sep3x3", "sep3x3_d3", "sep5x5_d6", "skip", "deform3x3")
AGGS = ("sum", "concat")

# name -> (kernel, dilation) of the separable ops.
_SEP = {"sep3x3": (3, 1), "sep3x3_d3": (3, 3), "sep5x5_d6": (5, 6)}


def _check_norm(norm: str, who: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"{who}: norm must be one of {NORMS}, got {norm!r}")


def resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``x`` [B, C, H, W] bilinearly resized to ``size`` (returned as is when already that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SepConv(nn.Module):
    """Depthwise k x k (dilated, "same" padding) -> pointwise 1x1 -> norm -> ReLU, C -> C."""

    def __init__(self, *, channels: int, kernel_size: int, dilation: int = 1, norm: str = "gn"):
        super().__init__()
        _check_norm(norm, "SepConv")
        self.depthwise = conv2d(channels, channels, kernel_size, dilation=dilation, groups=channels, norm=norm)
        self.pointwise = conv2d(channels, channels, 1, norm=norm)
        self.norm = norm2d(channels, norm)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.pointwise(self.depthwise(x))))


class DeformOp(nn.Module):
    """Modulated deformable 3x3 conv -> norm -> ReLU, C -> C. The offset/mask predictor starts at
    zero, so at initialisation this is a regular 3x3 conv (weights scaled by sigmoid(0) = 0.5,
    which the norm absorbs). ``gn_ws`` uses a plain (not weight-standardised) deformable conv."""

    def __init__(self, *, channels: int, norm: str = "gn"):
        super().__init__()
        _check_norm(norm, "DeformOp")
        self.conv = DeformConv2d(channels, channels, 3, bias=False, modulated=True)
        self.norm = norm2d(channels, norm)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


def build_op(name: str, channels: int, norm: str = "gn") -> nn.Module:
    """The unary op ``name`` (one of :data:`OPS`) at width ``channels``: [B, C, H, W] -> [B, C, H, W]."""
    if name == "skip":
        return nn.Identity()
    if name == "deform3x3":
        return DeformOp(channels=channels, norm=norm)
    if name in _SEP:
        k, d = _SEP[name]
        return SepConv(channels=channels, kernel_size=k, dilation=d, norm=norm)
    raise ValueError(f"unknown NAS-FCOS op {name!r}; expected one of {OPS}")


class Aggregation(nn.Module):
    """Merges two features [B, C, H1, W1], [B, C, H2, W2] into [B, C, max(H1, H2), max(W1, W2)].

    Args:
        kind: ``"sum"`` or ``"concat"`` (concat -> 1x1 conv 2C -> C -> norm -> ReLU).
        channels: C.
        norm: the norm after the concat's 1x1 conv (unused by ``sum``).
    """

    def __init__(self, *, kind: str, channels: int, norm: str = "gn"):
        super().__init__()
        if kind not in AGGS:
            raise ValueError(f"unknown NAS-FCOS aggregation {kind!r}; expected one of {AGGS}")
        _check_norm(norm, "Aggregation")
        self.kind = kind
        if kind == "concat":
            self.reduce = conv2d(2 * channels, channels, 1, norm=norm)
            self.norm = norm2d(channels, norm)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        size = (max(a.shape[-2], b.shape[-2]), max(a.shape[-1], b.shape[-1]))
        a, b = resize_to(a, size), resize_to(b, size)
        if self.kind == "sum":
            return a + b
        return F.relu(self.norm(self.reduce(torch.cat([a, b], dim=1))))

    def extra_repr(self) -> str:
        return self.kind


class BasicBlock(nn.Module):
    """The NAS-FCOS basic block (Fig. 1) without its wiring: ``op1`` on one input, ``op2`` on the
    other, ``agg`` merges them. ``forward(x1, x2)`` returns ``(o1, o2, a)``: the head's pool keeps
    all three, the FPN's only ``a``."""

    def __init__(self, *, channels: int, op1: str, op2: str, agg: str, norm: str = "gn"):
        super().__init__()
        self.op1 = build_op(op1, channels, norm)
        self.op2 = build_op(op2, channels, norm)
        self.agg = Aggregation(kind=agg, channels=channels, norm=norm)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        o1, o2 = self.op1(x1), self.op2(x2)
        return o1, o2, self.agg(o1, o2)
