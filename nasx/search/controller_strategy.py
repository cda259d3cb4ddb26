"""An LSTM controller trained by PPO (Zoph & Le 2017 with PPO as in NAS-FCOS §3.3), as an
ask/tell strategy: ``ask`` samples a round of architectures from the controller, ``tell``
makes one PPO update from their rewards.

A failed candidate gets the worst reward told so far minus ``failure_penalty``, so the
controller learns to avoid what fails. The state (controller, PPO's optimiser and baseline, the
sampling generator, the worst reward) is one dict: restored, the next ``ask`` samples exactly
what it sampled when the state was taken.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch

from nasx.search.controller import LSTMController
from nasx.search.ppo import PPO
from nasx.search.strategy import Strategy, objective_value

__all__ = ["ControllerStrategy"]


class ControllerStrategy(Strategy):
    """Args:
        space: a :class:`nasx.spaces.space.Space` (its ``decision_sizes``, ``valid_counts``,
            ``from_indices`` and ``to_indices``).
        seed: the controller's initial weights and the sampling generator (the global torch
            generator is left as it was).
        controller_kwargs, ppo_kwargs: passed to :class:`LSTMController` and :class:`PPO`.
        failure_penalty: a failed candidate's reward is the worst reward told so far minus this.
        objective: the record field used as the reward.
    """

    name = "ppo"

    def __init__(self, space, *, seed: int = 0, controller_kwargs: Optional[dict] = None,
                 ppo_kwargs: Optional[dict] = None, failure_penalty: float = 0.5, objective: str = "reward"):
        super().__init__(space, objective=objective)
        self.failure_penalty = float(failure_penalty)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.controller = LSTMController(space.decision_sizes, valid_counts=space.valid_counts,
                                             **(controller_kwargs or {}))
        self.ppo = PPO(self.controller, **(ppo_kwargs or {}))
        self.generator = torch.Generator().manual_seed(int(seed))
        self.worst: Optional[float] = None
        self._asked: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def ask(self, n: int) -> list[dict]:
        choices, log_prob, _ = self.controller.sample(n, generator=self.generator)
        self._asked = (choices, log_prob.detach())
        return [self.space.from_indices(c) for c in choices.tolist()]

    def tell(self, records: Sequence[Mapping]) -> dict:
        if self._asked is None or len(records) != len(self._asked[0]):
            asked = 0 if self._asked is None else len(self._asked[0])
            raise ValueError(f"ControllerStrategy.tell: {len(records)} records for {asked} asked architectures")
        values = [objective_value(r, self.objective) for r in records]
        ok = [v for v in values if v is not None]
        if ok:
            self.worst = min(ok + ([self.worst] if self.worst is not None else []))
        floor = (self.worst if self.worst is not None else -10.0) - self.failure_penalty
        rewards = [v if v is not None else floor for v in values]
        choices, log_prob = self._asked
        self._asked = None
        stats = self.ppo.update(choices, log_prob, rewards)
        return {"reward_mean": stats["reward_mean"], "reward_max": max(rewards), "entropy": stats["entropy"],
                "failed": sum(v is None for v in values)}

    def state_dict(self) -> dict:
        return {"ppo": self.ppo.state_dict(), "generator": self.generator.get_state(), "worst": self.worst}

    def load_state_dict(self, state: dict) -> None:
        missing = {"ppo", "generator"} - set(state)
        if missing:
            raise ValueError(f"ControllerStrategy.load_state_dict: missing {sorted(missing)}")
        self.ppo.load_state_dict(state["ppo"])
        self.generator.set_state(state["generator"])
        worst = state.get("worst")
        self.worst = None if worst is None or not math.isfinite(worst) else float(worst)
