"""Applications: one module per published search system, each only its own stages, on a shared
kit — the run directory (settings freeze, stage markers, budget clock: :mod:`.rundir`),
resumable training on images (:mod:`.training`), retrain-and-score (:mod:`.retrain`) and the
report (:mod:`.report`). The strategies and the search loop they drive live in
:mod:`nasx.search`; the evaluators in :mod:`nasx.evaluate`.

:data:`PIPELINES` is what ``nasx search <name>`` offers: name -> (module, config class, run
function, summary formatter, one-line help), imported when used.
"""
from __future__ import annotations

import importlib
from typing import NamedTuple

__all__ = ["PIPELINES", "Pipeline", "pipeline"]


class Pipeline(NamedTuple):
    module: str
    config: str
    run: str
    summary: str
    help: str


PIPELINES = {
    "nas-fcos": Pipeline("nasx.pipelines.nas_fcos", "NasFcosConfig", "run_nas_fcos", "format_summary",
                         "NAS-FCOS: FPN + head search with an LSTM controller and PPO on cached backbone features"),
    "sm-nas": Pipeline("nasx.pipelines.sm_nas", "SmNasConfig", "run_sm_nas", "format_summary",
                       "SM-NAS: structural then modular evolutionary multi-objective search with partial-order "
                       "pruning, every candidate trained from scratch"),
    "nas-eod": Pipeline("nasx.pipelines.nas_eod", "NasEodConfig", "run_nas_eod", "format_summary",
                        "NAS-EOD: backbone and neck searched together by an LSTM controller + PPO under "
                        "λc·Lc + λr·Lr + Lat(m), latency from a look-up table"),
    "adapt": Pipeline("nasx.pipelines.adapt", "AdaptConfig", "run_adapt", "format_summary",
                      "network adaptation (FNA): a MobileNetV2 seed adapted to SSDLite by DARTS with parameter "
                      "remapping"),
}


def pipeline(name: str):
    """``(config class, run function, summary formatter)`` of a pipeline in :data:`PIPELINES`."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; expected one of {sorted(PIPELINES)}")
    p = PIPELINES[name]
    module = importlib.import_module(p.module)
    return getattr(module, p.config), getattr(module, p.run), getattr(module, p.summary)
