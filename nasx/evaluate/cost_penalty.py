"""A cost limit in a search's reward, as multi-objective NAS puts one (MnasNet's soft constraint,
NAS-EOD's latency term): ``reward − β·max(0, cost / limit − 1)`` (hinge: free below the limit) or
``reward − β·cost / limit`` (linear: every unit counts).

:class:`CostPenalized` wraps any picklable ``encoding -> dict`` evaluator whose records carry the
cost (``"macs"``, ``"latency_ms"``, ...): the record keeps the evaluator's own reward as
``loss_reward`` (what the proxy's ranking quality is judged on) and gets ``cost_penalty`` and the
penalised ``reward`` a strategy maximises. Given ``cost_of`` (the cost without training, e.g. MACs
counted on the meta device), a candidate over the limit is not trained at all — as evolutionary
NAS under a FLOPs constraint discards such candidates before evaluating them (SPOS, OFA): its
record says ``trained: False`` and its reward is ``untrained_reward`` (e.g. the baseline's) less
its penalty, so a strategy still learns how far over it was.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Optional

__all__ = ["COST_FORMS", "CostPenalized", "cost_term"]

COST_FORMS = ("hinge", "linear")


def finite(who: str, name: str, value, minimum=None) -> float:
    """``value`` as a float (numpy and 0-d torch numbers too), or ValueError saying what came."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out) or (minimum is not None and out < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{who}: {name} must be a finite number{bound}, got {value!r}")
    return out


def cost_term(cost: float, *, limit: float, beta: float = 1.0, form: str = "hinge") -> float:
    """``beta * max(0, cost / limit - 1)`` (hinge) or ``beta * cost / limit`` (linear)."""
    if form not in COST_FORMS:
        raise ValueError(f"cost_term: form must be one of {COST_FORMS}, got {form!r}")
    cost, limit, beta = (finite("cost_term", n, v, 0) for n, v in (("cost", cost), ("limit", limit), ("beta", beta)))
    if limit == 0:
        raise ValueError("cost_term: limit must be > 0")
    ratio = cost / limit
    return beta * (max(0.0, ratio - 1.0) if form == "hinge" else ratio)


class CostPenalized:
    """``CostPenalized(evaluator, key="macs", limit=L, beta=1.0, form="hinge")(encoding)``: the
    evaluator's record with ``loss_reward`` (its reward), ``cost_penalty`` and ``reward`` =
    loss_reward − penalty; failed records pass unchanged. Picklable when ``evaluator`` is.

    β is in the reward's units: with a detection loss as the reward (O(1), the best candidates
    apart by 1e-3 or less), the default 1 makes the limit all but hard — 1 % over costs more than
    the proxy's differences — while a search can still move through the dear region.
    """

    def __init__(self, evaluator: Callable[..., Mapping], *, limit: float, key: str = "macs", beta: float = 1.0,
                 form: str = "hinge", cost_of: Optional[Callable[..., Mapping]] = None,
                 untrained_reward: Optional[float] = None):
        cost_term(limit, limit=limit, beta=beta, form=form)   # checks the settings once, here
        if (cost_of is None) != (untrained_reward is None):
            raise ValueError("CostPenalized: cost_of and untrained_reward go together (skipping over-limit "
                             "candidates needs both)")
        self.evaluator, self.key, self.limit, self.beta, self.form = evaluator, key, float(limit), beta, form
        self.cost_of, self.untrained_reward = cost_of, untrained_reward

    def adjust(self, record: Mapping) -> dict:
        """The penalised copy of one record (already evaluated)."""
        record = dict(record)
        if record.get("status") != "ok":
            return record
        if self.key not in record:
            raise KeyError(f"CostPenalized: the evaluator's record has no {self.key!r} to limit (it has "
                           f"{sorted(record)})")
        penalty = cost_term(record[self.key], limit=self.limit, beta=self.beta, form=self.form)
        record.update(loss_reward=record["reward"], cost_penalty=penalty, reward=record["reward"] - penalty)
        return record

    def __call__(self, encoding) -> dict:
        if self.cost_of is not None:
            costs = dict(self.cost_of(encoding))
            if costs[self.key] > self.limit * (1 + 1e-9):
                return self.adjust({"status": "ok", "trained": False, "reward": self.untrained_reward, **costs})
        return self.adjust(self.evaluator(encoding))
