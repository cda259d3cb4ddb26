"""The per-op MACs look-up table of an MBConv super network: what DARTS's cost term (expected
MACs under the architecture weights) is computed from."""
from __future__ import annotations

from torch import nn

from nasx.evaluate.cost import count_detector_macs

__all__ = ["supernet_macs_table"]


def supernet_macs_table(detector: nn.Module, image_size: tuple[int, int]) -> tuple[list[list[float]], float]:
    """The per-op MACs look-up table of a detector whose backbone is an
    :class:`~nasx.models.backbones.mbconv_supernet.MBConvSupernet`, at ``image_size`` per image:
    ``(table, fixed)`` with ``table[l][o]`` the MACs of candidate op ``o`` of layer ``l`` (0 for
    ``skip``) and ``fixed`` those of everything else (stem, first block, head, SSDLite's extra
    layers and predictors), so that a one-hot architecture's expected MACs equal
    :func:`count_detector_macs` of the network it derives. Counted in one pass with every op run
    (the mixed mode), on the meta device."""
    supernet = detector.backbone
    path = supernet.path
    supernet.set_path(None)
    try:
        report = count_detector_macs(detector, image_size)
    finally:
        supernet.set_path(path)
    table = []
    for l, layer in enumerate(supernet.layers):
        prefixes = [f"backbone.layers.{l}.ops.{name}." for name in layer.names]
        table.append([float(sum(v for k, v in report.per_module.items() if k.startswith(p))) for p in prefixes])
    return table, float(report.total - sum(map(sum, table)))
