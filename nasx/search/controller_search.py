"""The NAS-FCOS search strategy: an LSTM controller samples a round of architectures, they are
evaluated (through any :class:`~nasx.search.workers.Workers`), and PPO moves the controller
towards the higher rewards; repeat until the budget is spent.

Resumable at any moment. After every round the controller, PPO's optimiser and baseline, the
round number, the sampling generator's state and the time spent are written atomically to
``state_path``; every evaluation is a durable line of a :class:`~nasx.search.results.ResultsLog`.
Started again after a kill, the search reloads the state of the last finished round, samples
the interrupted round again — the same architectures, from the saved generator — and takes every
evaluation already in the log from there instead of running it again.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from nasx.progress import Progress
from nasx.search.controller import LSTMController
from nasx.search.ppo import PPO
from nasx.search.results import ResultsLog
from nasx.search.workers import InlineWorkers, Workers
from nasx.train.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["ControllerSearch"]


def _scored(record: dict) -> bool:
    """An evaluation that finished with a reward (not failed)."""
    return record.get("status") == "ok" and record.get("reward") is not None


class ControllerSearch:
    """Args:
        space: needs ``decision_sizes``, ``valid_counts`` and ``decode(choices)`` returning an
            architecture with ``to_string()`` (e.g. :class:`nasx.spaces.nas_fcos.NasFcosSpace`).
        round_size: architectures sampled per PPO update.
        seed: the controller's initial weights and the sampling generator.
        controller_kwargs, ppo_kwargs: passed to :class:`LSTMController` and :class:`PPO`.
        failure_penalty: a failed candidate's reward is the worst reward seen minus this.
    """

    def __init__(self, space, *, round_size: int = 4, seed: int = 0, controller_kwargs: Optional[dict] = None,
                 ppo_kwargs: Optional[dict] = None, failure_penalty: float = 0.5):
        if round_size < 1:
            raise ValueError(f"ControllerSearch: round_size must be >= 1, got {round_size}")
        self.space, self.round_size, self.failure_penalty = space, int(round_size), float(failure_penalty)
        torch.manual_seed(seed)
        self.controller = LSTMController(space.decision_sizes, valid_counts=space.valid_counts,
                                         **(controller_kwargs or {}))
        self.ppo = PPO(self.controller, **(ppo_kwargs or {}))
        self.generator = torch.Generator().manual_seed(int(seed))
        self.round = 0
        self.elapsed = 0.0   # seconds spent in finished rounds, over all runs
        self.history: list[dict] = []

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"ppo": self.ppo.state_dict(), "generator": self.generator.get_state(), "round": self.round,
                "elapsed": self.elapsed, "history": self.history, "round_size": self.round_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("round_size") != self.round_size:
            raise ValueError(f"ControllerSearch: the saved search used round_size {state.get('round_size')}, "
                             f"this one {self.round_size}; resume with the same settings or start a new run")
        self.ppo.load_state_dict(state["ppo"])
        self.generator.set_state(state["generator"])
        self.round, self.elapsed = int(state["round"]), float(state["elapsed"])
        self.history = list(state["history"])

    def save(self, path) -> None:
        save_checkpoint(self.state_dict(), path)

    def load(self, path) -> bool:
        """Resume from ``path`` if it exists; returns whether it did."""
        if not Path(path).exists():
            return False
        self.load_state_dict(load_checkpoint(path, required_keys=("ppo", "generator", "round")))
        return True

    # -- the loop ----------------------------------------------------------------------------
    def run(self, evaluator: Callable[[str], dict], results: ResultsLog, *, state_path,
            workers: Optional[Workers] = None, budget_seconds: float = math.inf, max_evaluations: Optional[int] = None,
            min_evaluations: int = 0, progress: bool = True) -> dict:
        """Search until ``budget_seconds`` of search time or ``max_evaluations`` distinct evaluated
        architectures (``min_evaluations`` overrides the time budget). Returns a summary."""
        workers = workers or InlineWorkers()
        self.load(state_path)
        start = time.monotonic()
        done_keys = {r["encoding"] for r in results if r.get("source") == "search"}
        bar = Progress(max_evaluations, "search", unit="arch", initial=len(done_keys), enabled=progress)

        def spent() -> float:
            return self.elapsed + time.monotonic() - start

        def more() -> bool:
            n = len(done_keys)
            if max_evaluations is not None and n >= max_evaluations:
                return False
            return n < min_evaluations or spent() < budget_seconds

        try:
            while more():
                round_start = time.monotonic()
                choices, log_prob, _ = self.controller.sample(self.round_size, generator=self.generator)
                archs = [self.space.decode(c).to_string() for c in choices.tolist()]
                todo = sorted({a for a in archs if a not in results})
                for i, out in workers.map_unordered(evaluator, todo):
                    record = {"encoding": todo[i], "source": "search", "round": self.round, **out}
                    record.setdefault("status", "ok")
                    results.append(record)
                    done_keys.add(todo[i])
                    bar.update(1, best=max((r["reward"] for r in results if _scored(r)), default=float("nan")))
                rewards = self._rewards(archs, results)
                stats = self.ppo.update(choices, log_prob, rewards)
                self.round += 1
                self.elapsed += time.monotonic() - round_start
                self.history.append({"round": self.round, "reward_mean": stats["reward_mean"],
                                     "reward_max": max(rewards), "entropy": stats["entropy"], "evaluated": len(done_keys)})
                self.save(state_path)
        finally:
            bar.close()
        return {"rounds": self.round, "evaluated": len(done_keys), "seconds": spent()}

    def _rewards(self, archs: list[str], results: ResultsLog) -> list[float]:
        ok = [r["reward"] for r in results if _scored(r)]
        worst = (min(ok) if ok else -10.0) - self.failure_penalty
        records = [results.get(a) for a in archs]
        return [float(r["reward"]) if r is not None and _scored(r) else worst for r in records]

    def best(self, results: ResultsLog, k: int = 1) -> list[dict]:
        return sorted((r for r in results if _scored(r)), key=lambda r: -r["reward"])[:k]
