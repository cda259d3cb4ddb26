"""The one search loop every strategy runs on.

Per round: the strategy is asked for ``round_size`` architectures; each distinct one not yet in
``results.jsonl`` is evaluated by the workers (inline, local processes or Ray) and written to
the log the moment it finishes; then the strategy is told the round's records and its state is
saved, atomically, with the loop's own (round, history) in ``state_path``.

Resumable at any moment. A search killed mid-round restarts from the state of its last
finished round: the strategy, restored, asks for the same architectures again, and those the
log already holds are taken from it instead of being evaluated twice — so nothing is lost and
nothing is repeated.

Stops at the first of: ``max_evaluations`` distinct architectures of this search (``source``)
in the log; ``time_left()`` <= 0 once at least ``min_evaluations`` are in; ``max_stale_rounds``
rounds in a row that proposed nothing new (a converged controller, an exhausted space); past the
budget, ``max_stale_rounds`` rounds in a row that added nothing ``counted`` (every proposal over a
cost limit, scored untrained: ``min_evaluations`` cannot be reached). A round, once begun, is finished.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Mapping, Optional

from nasx.atomic import save_torch
from nasx.progress import Progress
from nasx.search.results import ResultsLog
from nasx.search.strategy import Strategy, scored
from nasx.search.workers import InlineWorkers, Workers

__all__ = ["run_search", "best_records", "load_search_state", "trained"]

log = logging.getLogger(__name__)


def trained(record: Mapping) -> bool:
    """Whether a search record was trained: a candidate over a cost limit may be scored without
    training (``"trained": False``, e.g. NAS-FCOS's MACs limit, NAS-EOD's latency target)."""
    return record.get("trained", True)


def best_records(results, k: int = 1, *, objective: str = "reward", source: Optional[str] = None) -> list[dict]:
    """The ``k`` scored records with the highest ``objective`` (of ``source`` only, if given)."""
    pool = (r for r in results if scored(r, objective) and (source is None or r.get("source") == source))
    return sorted(pool, key=lambda r: -r[objective])[:k]


def load_search_state(path) -> Optional[dict]:
    """The loop's saved state (``None`` if there is none yet)."""
    from nasx.train.checkpoint import load_checkpoint

    if not Path(path).exists():
        return None
    return load_checkpoint(path, required_keys=("strategy", "round", "history"))


def run_search(strategy: Strategy, evaluator: Callable[[str], Mapping], results: ResultsLog, *, state_path,
               round_size: int, workers: Optional[Workers] = None, time_left: Callable[[], float] = lambda: math.inf,
               max_evaluations: Optional[int] = None, min_evaluations: int = 0, max_stale_rounds: int = 50,
               source: str = "search", progress: bool = True,
               on_round: Optional[Callable[[dict], None]] = None,
               on_record: Optional[Callable[[dict], None]] = None,
               counted: Optional[Callable[[Mapping], bool]] = None) -> dict:
    """Run (or resume) a search; returns ``{"rounds", "evaluated", "stopped", "history"}``.

    Args:
        strategy: any :class:`~nasx.search.strategy.Strategy`; its ``space.encode`` gives the
            canonical text that the evaluator receives and the log is keyed on.
        evaluator: a picklable callable ``encoding -> dict`` (``status``, the objective, costs);
            one that raises is recorded as failed (see :mod:`nasx.search.workers`).
        results: the run's ``results.jsonl``; each record gets ``encoding``, ``source``, ``round``.
        state_path: where the strategy and the loop are checkpointed after every round.
        round_size: architectures asked per round (must stay the same across resumes).
        time_left: seconds left for the search, asked before every round (e.g. from a
            :class:`~nasx.search.clock.BudgetClock`).
        on_round: called with each round's history entry (after it is saved).
        on_record: called with each new record once it is in the log.
        counted: which records count toward ``min_evaluations`` / ``max_evaluations`` (default all;
            e.g. only the trained ones when a cost limit rejects candidates before training).
    """
    if round_size < 1:
        raise ValueError(f"run_search: round_size must be >= 1, got {round_size}")
    workers = workers or InlineWorkers()
    space = strategy.space
    round_no, history = 0, []
    state = load_search_state(state_path)
    if state is not None:
        if state.get("round_size") != round_size or state.get("strategy_name") != strategy.name:
            raise ValueError(f"{state_path}: the saved search is {state.get('strategy_name')!r} with round_size "
                             f"{state.get('round_size')}, this one {strategy.name!r} with {round_size}; resume with the "
                             f"same settings or start a new run")
        strategy.load_state_dict(state["strategy"])
        round_no, history = int(state["round"]), list(state["history"])
    counted = counted or (lambda record: True)
    mine = {r["encoding"] for r in results if r.get("source") == source and counted(r)}
    objective = strategy.objective
    bar = Progress(max_evaluations, f"search ({strategy.name})", unit="arch", initial=len(mine), enabled=progress)
    stopped, stale, dry = "budget", 0, 0

    def best_so_far() -> float:
        return max((r[objective] for r in results if scored(r, objective)), default=math.nan)

    try:
        while True:
            if max_evaluations is not None and len(mine) >= max_evaluations:
                stopped = "max_evaluations"
                break
            if len(mine) >= min_evaluations and time_left() <= 0:
                stopped = "budget"
                break
            if stale >= max_stale_rounds:
                stopped = "stale"
                log.warning("search: %d rounds in a row proposed no new architecture; stopping with %d evaluated",
                            stale, len(mine))
                break
            if dry >= max_stale_rounds:
                stopped = "stale"
                log.warning("search: past the budget, %d rounds in a row added no counted architecture; stopping with "
                            "%d of the %d asked for", dry, len(mine), min_evaluations)
                break
            encodings = [space.encode(a) for a in strategy.ask(round_size)]
            todo = sorted({e for e in encodings if e not in results})
            for i, out in workers.map_unordered(evaluator, todo):
                record = {"encoding": todo[i], "source": source, "round": round_no, **out}
                record.setdefault("status", "ok")
                record = results.append(record)
                if counted(record):
                    mine.add(todo[i])
                if on_record is not None:
                    on_record(record)
                bar.update(1 if counted(record) else 0, best=best_so_far())  # the bar counts what counts
            stats = strategy.tell([results.get(e) for e in encodings])
            stale = 0 if todo else stale + 1
            dry = 0 if any(e in mine for e in todo) or time_left() > 0 else dry + 1  # todo: this round's new ones
            round_no += 1
            entry = {"round": round_no, "evaluated": len(mine), "new": len(todo), "best": best_so_far(),
                     **{k: float(v) for k, v in stats.items()}}
            history.append(entry)
            save_torch({"strategy": strategy.state_dict(), "strategy_name": strategy.name, "round": round_no,
                        "round_size": round_size, "history": history}, state_path)
            if on_round is not None:
                on_round(entry)
    finally:
        bar.close()
    return {"rounds": round_no, "evaluated": len(mine), "stopped": stopped, "history": history}
