"""A wall-clock budget that survives resumes.

The seconds of earlier runs of the same run directory are kept in a small JSON file, saved
atomically whenever a run reaches a point it would resume from (a stage's end, a search round,
a training checkpoint), so a run resumed after a kill spends what is left of its budget, not a
fresh one. Time between the last save and a kill is not counted: at most a round or a
checkpoint interval.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

from nasx.atomic import read_json, write_json

__all__ = ["BudgetClock"]


class BudgetClock:
    """Args: path (None: not persisted), budget_seconds (math.inf: no budget)."""

    def __init__(self, path=None, budget_seconds: float = math.inf):
        self.path = None if path is None else Path(path)
        self.budget_seconds = float(budget_seconds)
        self.before = 0.0
        if self.path is not None and self.path.exists():
            self.before = float(read_json(self.path)["seconds"])
        self._t0 = time.monotonic()

    def spent(self) -> float:
        """Seconds spent by this run directory, earlier runs included."""
        return self.before + time.monotonic() - self._t0

    def left(self) -> float:
        return self.budget_seconds - self.spent()

    def save(self) -> None:
        if self.path is not None:
            write_json(self.path, {"seconds": self.spent(), "budget_seconds": self.budget_seconds})

    def tick(self, _: Optional[object] = None) -> None:
        """``save`` with an ignored argument: usable as a training loop's checkpoint hook."""
        self.save()
