"""Whole detectors from a backbone encoding and a few numbers: what ``nasx info``, ``nasx train``
and the searches build. Models never parse strings; this is where strings become modules.

``build_detector("fcos", backbone="resnet50", num_classes=80)``; the builders are plain
functions in :data:`DETECTORS`, keyword-only, so adding a detector is adding one function.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from nasx.models.detectors.fcos import FCOS
from nasx.models.heads.fcos_head import FCOSHead
from nasx.models.necks import FPN
from nasx.spaces.errors import EncodingError
from nasx.spaces.mbconv import MBConvEncoding
from nasx.spaces.residual import ResidualEncoding

__all__ = ["DETECTORS", "build_backbone", "build_detector", "build_fcos"]


def build_backbone(encoding: str, *, norm: str = "bn", out_features=("c3", "c4", "c5")) -> nn.Module:
    """A residual (``bottleneck_64_...``, ``resnet50``) or MBConv (``mb32_...``, ``mobilenet_v2``) backbone."""
    text = str(encoding).strip()
    is_mb = text.startswith("mb") or text in ("mobilenet_v2",)
    try:
        enc = MBConvEncoding.parse(text) if is_mb else ResidualEncoding.parse(text)
    except EncodingError:
        raise
    return enc.build(norm=norm, out_features=tuple(out_features))


def build_fcos(*, backbone: str, num_classes: int, fpn_channels: int = 256, norm: str = "bn",
               head_norm: str | None = "gn", head_convs: int = 4, **kwargs) -> FCOS:
    """FCOS with an FPN (P3-P5 from C3-C5, P6/P7 from P5) and the GN head of ``head_convs`` convs.

    ``norm`` is the backbone's norm (``"gn_ws"`` to train from scratch, SM-NAS §3.3);
    other keyword arguments go to :class:`FCOS` (e.g. ``size_ranges``, ``score_thresh``).
    """
    trunk = build_backbone(backbone, norm=norm)
    neck = FPN(in_channels={n: trunk.channels[n] for n in ("c3", "c4", "c5")}, out_channels=fpn_channels,
               extra_levels=2, extra_from="p5")
    head = FCOSHead(in_channels=fpn_channels, num_classes=num_classes, num_levels=5, num_convs=head_convs,
                    norm=head_norm)
    return FCOS(backbone=trunk, neck=neck, head=head, num_classes=num_classes, **kwargs)


DETECTORS: dict[str, Callable[..., nn.Module]] = {"fcos": build_fcos}


def build_detector(name: str, **kwargs) -> nn.Module:
    """``DETECTORS[name](**kwargs)``, with an error that lists the known names."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; expected one of {sorted(DETECTORS)}")
    return DETECTORS[name](**kwargs)
