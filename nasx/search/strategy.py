"""The strategy interface: ask for architectures, tell how they scored (as Optuna and Nevergrad
do), with the whole state in a dict so that the search loop can checkpoint it after every round.

A strategy sees architectures only as ``{label: choice}`` mappings of its ``space`` (see
:mod:`nasx.spaces.space`) and scores only as the records of ``results.jsonl``; it never
evaluates anything, never writes files and never reads the clock — :func:`nasx.search.loop.run_search`
does those for every strategy.

Contract with the loop:

- ``ask(n)`` returns ``n`` architectures (repeats allowed: the loop evaluates each distinct
  one once, and one already in ``results.jsonl`` never again).
- ``tell(records)`` gets one record per asked architecture, in the order asked, once all of
  them are finished; a record whose ``status`` is not ``"ok"`` failed. It returns statistics
  for the round (floats), which the loop keeps in the search history.
- ``state_dict()`` / ``load_state_dict()``: after ``load_state_dict(s)`` the next ``ask`` must
  return what it returned after the state ``s`` was taken (save random generators), because
  a search killed mid-round resumes by asking again and taking the finished evaluations of
  that round from the log.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

__all__ = ["Strategy", "scored", "objective_value"]


def scored(record: Mapping, objective: str = "reward") -> bool:
    """A record that finished with a finite value of ``objective`` (not failed)."""
    value = record.get(objective)
    return record.get("status") == "ok" and isinstance(value, (int, float)) and math.isfinite(value)


def objective_value(record: Optional[Mapping], objective: str = "reward") -> Optional[float]:
    return float(record[objective]) if record is not None and scored(record, objective) else None


class Strategy:
    """Base class. ``space``: the :class:`nasx.spaces.space.Space` it proposes from.
    ``objective``: the record field it maximises (``"reward"`` unless said otherwise)."""

    name = "strategy"

    def __init__(self, space, *, objective: str = "reward"):
        self.space, self.objective = space, objective

    def ask(self, n: int) -> list[dict]:
        raise NotImplementedError

    def tell(self, records: Sequence[Mapping]) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError
