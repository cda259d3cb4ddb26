"""Random search: every architecture drawn uniformly from the space, independently.

The baseline every pipeline can report against (Li & Talwalkar 2019 found it hard to beat in
several NAS benchmarks), and the proof that the search loop is not shaped after one strategy.
"""
from __future__ import annotations

import random
from typing import Mapping, Sequence

from nasx.search.strategy import Strategy, objective_value

__all__ = ["RandomSearch"]


class RandomSearch(Strategy):
    """Args: space, seed (the only state is the generator), objective (for the round statistics)."""

    name = "random"

    def __init__(self, space, *, seed: int = 0, objective: str = "reward"):
        super().__init__(space, objective=objective)
        self.rng = random.Random(int(seed))

    def ask(self, n: int) -> list[dict]:
        return [self.space.sample(self.rng) for _ in range(n)]

    def tell(self, records: Sequence[Mapping]) -> dict:
        values = [v for v in (objective_value(r, self.objective) for r in records) if v is not None]
        return {"reward_mean": sum(values) / len(values) if values else float("nan"),
                "reward_max": max(values, default=float("nan"))}

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        if "rng" not in state:
            raise ValueError(f"RandomSearch.load_state_dict: expected a dict with 'rng', got {sorted(state)}")
        rng = state["rng"]   # torch.save keeps the tuple; a JSON round trip would make lists of it
        self.rng.setstate((rng[0], tuple(rng[1]), rng[2]))
