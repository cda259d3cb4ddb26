"""SM-NAS's published detectors E0-E5 (Yao et al. 2020, Table 2), built by name.

Each is a two-stage detector on a searched residual backbone with SM-NAS's stem (two 3x3/2
convs), an FPN over the levels Table 2 names (SM-NAS's P1-P4 are the backbone's strides 4-32,
P5 the level max-pooled from the last), an RPN or a guided-anchoring RPN, and a two-FC head or a
three-stage cascade. ``input`` is the (H, W) they were trained and timed at (Table 2 writes W x H).
"""
from __future__ import annotations

from nasx.spaces.residual import SM_NAS_BACKBONES

__all__ = ["SM_NAS_MODELS", "build_sm_nas_model", "sm_nas_model_spec"]

_COMMON = {"stem": "sm_nas", "fc_channels": 1024}

SM_NAS_MODELS: dict[str, dict] = {
    "sm-nas-e0": {"input": (512, 512), "detector": "faster_rcnn", "backbone": SM_NAS_BACKBONES["E0"],
                  "fpn_levels": (2, 5), "fpn_channels": 128, "rpn": "rpn"},
    "sm-nas-e1": {"input": (600, 800), "detector": "faster_rcnn", "backbone": SM_NAS_BACKBONES["E1"],
                  "fpn_levels": (2, 5), "fpn_channels": 256, "rpn": "rpn"},
    "sm-nas-e2": {"input": (600, 800), "detector": "cascade_rcnn", "backbone": SM_NAS_BACKBONES["E2"],
                  "fpn_levels": (1, 5), "fpn_channels": 128, "rpn": "rpn", "cascade_stages": 3},
    "sm-nas-e3": {"input": (600, 800), "detector": "cascade_rcnn", "backbone": SM_NAS_BACKBONES["E3"],
                  "fpn_levels": (1, 5), "fpn_channels": 128, "rpn": "rpn", "cascade_stages": 3},
    "sm-nas-e4": {"input": (600, 800), "detector": "cascade_rcnn", "backbone": SM_NAS_BACKBONES["E4"],
                  "fpn_levels": (1, 5), "fpn_channels": 256, "rpn": "ga", "cascade_stages": 3},
    "sm-nas-e5": {"input": (800, 1333), "detector": "cascade_rcnn", "backbone": SM_NAS_BACKBONES["E5"],
                  "fpn_levels": (1, 5), "fpn_channels": 256, "rpn": "ga", "cascade_stages": 3},
}


def sm_nas_model_spec(name: str, *, num_classes: int = 80, norm: str = "bn") -> tuple[dict, tuple[int, int]]:
    """(build spec for :func:`~nasx.spaces.detectors.build_from_spec`, input (H, W)) of a named model."""
    key = name.lower().replace("_", "-")
    if key in ("e0", "e1", "e2", "e3", "e4", "e5"):
        key = f"sm-nas-{key}"
    if key not in SM_NAS_MODELS:
        raise ValueError(f"unknown SM-NAS model {name!r}; expected one of {sorted(SM_NAS_MODELS)}")
    spec = dict(SM_NAS_MODELS[key])
    size = tuple(spec.pop("input"))
    return {**spec, **_COMMON, "num_classes": num_classes, "norm": norm}, size


def build_sm_nas_model(name: str, *, num_classes: int = 80, norm: str = "bn"):
    """The detector of :data:`SM_NAS_MODELS` called ``name`` (``"sm-nas-e0"`` or ``"E0"``)."""
    from nasx.spaces.detectors import build_from_spec

    spec, _ = sm_nas_model_spec(name, num_classes=num_classes, norm=norm)
    return build_from_spec(spec)
