"""Normalisation choices: BatchNorm, GroupNorm, and GroupNorm + Weight Standardization.

SM-NAS trains its candidate detectors from scratch with GN + WS (Wu & He 2018;
Qiao et al. 2019): GN does not depend on the tiny per-device batch, WS smooths the
loss landscape so a large learning rate works. ``norm`` is one of ``NORMS``:

- ``"bn"``: BatchNorm2d after a plain conv.
- ``"gn"``: GroupNorm (``group_count`` groups) after a plain conv.
- ``"gn_ws"``: GroupNorm after a weight-standardised conv (:class:`WSConv2d`).
"""

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("bn", "gn", "gn_ws")

__all__ = ["NORMS", "WSConv2d", "conv2d", "fan_out_init_", "group_count", "norm2d"]


def _check(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def group_count(channels: int, max_groups: int = 32, min_group_size: int = 4) -> int:
    """Groups for GroupNorm over ``channels``: the largest divisor of ``channels``
    that is at most ``max_groups`` and leaves at least ``min_group_size`` channels
    per group (32 for the usual multiples of 128; 6 for 24 channels). Channels
    fewer than ``min_group_size`` get one group."""
    best = 1
    for g in range(1, min(max_groups, channels) + 1):
        if channels % g == 0 and channels // g >= min_group_size:
            best = g
    return best


class WSConv2d(nn.Conv2d):
    """Conv2d whose weight is standardised per output channel before use:
    ``w_hat = (w - mean(w)) / sqrt(var(w) + eps)`` over (in/groups, kh, kw)."""

    def __init__(self, *args, eps: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        flat = w.flatten(1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        var = flat.var(dim=1, unbiased=False).view(-1, 1, 1, 1)
        w = (w - mean) / torch.sqrt(var + self.eps)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def conv2d(in_channels, out_channels, kernel_size, *, stride=1, padding=None, dilation=1, groups=1,
           bias=False, norm="bn") -> nn.Conv2d:
    """A conv that fits ``norm``: weight-standardised for ``"gn_ws"``, plain otherwise.
    ``padding`` defaults to "same" for odd kernels: ``dilation * (kernel_size - 1) // 2``."""
    _check(norm)
    if padding is None:
        padding = dilation * (kernel_size - 1) // 2
    cls = WSConv2d if norm == "gn_ws" else nn.Conv2d
    return cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
               groups=groups, bias=bias)


def norm2d(channels: int, norm: str = "bn") -> nn.Module:
    """The normalisation layer that follows a conv with ``channels`` outputs."""
    _check(norm)
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(group_count(channels), channels)


def fan_out_init_(module: nn.Module) -> None:
    """He (fan-out) init for convs, unit/zero affine for norms: the from-scratch default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


