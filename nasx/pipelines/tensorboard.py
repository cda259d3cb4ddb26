"""TensorBoard event files of a run, written while it runs (``tensorboard --logdir RUN``).

Tags: ``train/<stage>/<loss or lr>`` for every training stage (``<stage>`` as the run names it,
e.g. ``backbone``, ``retrain/top1``); ``search/<metric>`` per evaluated candidate, at the
number of candidates evaluated so far (reward, GMACs, params_M, latency_ms, failed);
``round/<stat>`` per search round (best so far, mean reward, controller entropy, ...);
``retrain/<metric>`` per retrained architecture.

TensorBoard is optional (``pip install 'nasx[tensorboard]'``; ``make test`` installs it):
without it the run says so once and goes on without event files.
"""
from __future__ import annotations

import logging
import math
from typing import Mapping

__all__ = ["RunLog"]

log = logging.getLogger(__name__)

_CANDIDATE = {"reward": 1.0, "macs": 1e-9, "params": 1e-6, "latency_ms": 1.0}
_NAMES = {"macs": "GMACs", "params": "params_M"}


class RunLog:
    """Args: logdir (the run's ``tb/``), enabled (False: a no-op, e.g. for tests)."""

    def __init__(self, logdir, *, enabled: bool = True):
        self.writer = None
        self.candidates = 0
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("TensorBoard is not installed: no event files for this run "
                        "(pip install 'nasx[tensorboard]' to watch it with tensorboard --logdir)")
            return
        self.writer = SummaryWriter(str(logdir))

    def _scalars(self, prefix: str, values: Mapping, step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
        self.writer.flush()

    def training(self, stage: str):
        """An ``on_log(step, losses)`` callback for :func:`nasx.pipelines.training.train_steps`."""
        return lambda step, values: self._scalars(f"train/{stage}", values, step)

    def candidate(self, record: Mapping) -> None:
        """A finished evaluation (a ``results.jsonl`` record)."""
        self.candidates += 1
        values = {_NAMES.get(k, k): record[k] * scale for k, scale in _CANDIDATE.items()
                  if isinstance(record.get(k), (int, float))}
        values["failed"] = float(record.get("status") != "ok")
        self._scalars("search", values, self.candidates)

    def round(self, entry: Mapping) -> None:
        """A search round's history entry (``best``, ``reward_mean``, ``entropy``, ...)."""
        self._scalars("round", {k: v for k, v in entry.items() if k != "round"}, int(entry["round"]))

    def retrained(self, index: int, row: Mapping) -> None:
        self._scalars("retrain", {"mAP": row["map"], "AP50": row["metrics"]["AP50"], "GMACs": row["macs"] / 1e9,
                                  "latency_ms": row["latency_ms"]}, index)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
