"""NAS-EOD's reward: the negative of its multi-objective loss (seed 000, "Multi-objective loss"),

    Loss(m) = λc · Loss_c(m) + λr · Loss_r(m) + Lat(m),    reward = −Loss(m).

The poster gives only this sum. nasx's choices (``round2-spec.md`` §2.1): Loss_c and Loss_r are the
detector's classification (sigmoid focal) and box-regression losses on held-out images after short
training; λc = λr = 1; the latency term, with T the target latency on the device and β its weight,

- ``form="hinge"``: Lat(m) = β · max(0, lat / T − 1) — no cost below the target, a linear penalty
  above it (MnasNet-like in spirit: a soft constraint);
- ``form="linear"``: Lat(m) = β · lat / T — every millisecond counts.

β should make the term comparable with the losses (O(1) for detection losses after a short run):
the default 1 costs as much as one unit of loss per target latency over the target.
"""
from __future__ import annotations

from nasx.evaluate.cost_penalty import COST_FORMS, cost_term
from nasx.evaluate.cost_penalty import finite as _finite

__all__ = ["LATENCY_FORMS", "eod_reward", "latency_term"]

LATENCY_FORMS = COST_FORMS


def latency_term(latency_ms: float, *, target_ms: float, beta: float = 1.0, form: str = "hinge") -> float:
    """Lat(m): ``beta * max(0, latency_ms / target_ms - 1)`` (hinge) or ``beta * latency_ms / target_ms`` (linear)."""
    if form not in LATENCY_FORMS:
        raise ValueError(f"latency_term: form must be one of {LATENCY_FORMS}, got {form!r}")
    latency = _finite("latency_term", "latency_ms", latency_ms, 0)
    target = _finite("latency_term", "target_ms", target_ms, 0)
    if target == 0:
        raise ValueError(f"latency_term: target_ms must be > 0 milliseconds, got {target_ms!r}")
    return cost_term(latency, limit=target, beta=_finite("latency_term", "beta", beta, 0), form=form)


def eod_reward(cls_loss: float, reg_loss: float, latency_ms: float, *, target_ms: float, lambda_c: float = 1.0,
               lambda_r: float = 1.0, beta: float = 1.0, form: str = "hinge") -> float:
    """−(λc · cls_loss + λr · reg_loss + Lat(latency_ms)); see the module docstring and :func:`latency_term`.

    Raises ValueError on a non-finite loss (a diverged candidate is a failure, not a reward)."""
    cls_loss, reg_loss = _finite("eod_reward", "cls_loss", cls_loss), _finite("eod_reward", "reg_loss", reg_loss)
    lambda_c, lambda_r = _finite("eod_reward", "lambda_c", lambda_c), _finite("eod_reward", "lambda_r", lambda_r)
    return -(lambda_c * cls_loss + lambda_r * reg_loss
             + latency_term(latency_ms, target_ms=target_ms, beta=beta, form=form))
