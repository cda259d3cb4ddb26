"""Rank correlation of two score lists: how well a proxy (a cheap reward, a predicted latency)
orders architectures the way the real measure (mAP after retraining, measured latency) does.

Both functions take two equally long 1-D sequences of numbers and return a float in [-1, 1],
computed by :mod:`scipy.stats` with ties corrected for. They return NaN, without a warning,
when the correlation is undefined: fewer than two items, or one side constant. A missing value
(None or NaN) is an error, not something to skip silently: drop the item from both lists first.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["kendall_tau", "spearman_rho"]


def _pair(name: str, x, y):
    x, y = (np.asarray(v, dtype=float) for v in (x, y))  # None becomes NaN, caught below
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"{name}: expected 1-D sequences, got shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{name}: expected sequences of equal length, got {len(x)} and {len(y)}")
    for side, v in (("x", x), ("y", y)):
        bad = np.flatnonzero(np.isnan(v))
        if bad.size:
            raise ValueError(f"{name}: {side}[{bad[0]}] is missing (None or NaN)"
                             + (f", and {bad.size - 1} more" if bad.size > 1 else ""))
    return x, y


def _undefined(x, y) -> bool:
    return len(x) < 2 or bool(np.all(x == x[0])) or bool(np.all(y == y[0]))


def kendall_tau(x, y) -> float:
    """Kendall's tau-b of ``x`` and ``y``: (concordant - discordant pairs) over the geometric mean
    of the pairs not tied in x and not tied in y (a pair tied in both counts in neither).

    Returns NaN with fewer than two items or a constant side. Raises ValueError on unequal
    lengths or a None / NaN entry (naming its index).
    """
    from scipy import stats

    x, y = _pair("kendall_tau", x, y)
    if _undefined(x, y):
        return math.nan
    return float(stats.kendalltau(x, y, variant="b")[0])


def spearman_rho(x, y) -> float:
    """Spearman's rank correlation of ``x`` and ``y``: Pearson's correlation of their ranks, ties
    given their average rank.

    Returns NaN with fewer than two items or a constant side. Raises ValueError on unequal
    lengths or a None / NaN entry (naming its index).
    """
    from scipy import stats

    x, y = _pair("spearman_rho", x, y)
    if _undefined(x, y):
        return math.nan
    return float(stats.spearmanr(x, y)[0])
