"""A cost limit in a search's reward (nasx.evaluate.cost_penalty): the hinge and linear terms by hand,
the wrapper's record fields, failed records passed through, bad settings refused, pickling."""
import math
import pickle

import pytest

from nasx.evaluate.cost_penalty import CostPenalized, cost_term
from nasx.evaluate.eod_reward import latency_term


def test_cost_term_by_hand():
    assert cost_term(80, limit=100) == 0.0                        # below the limit: free
    assert cost_term(150, limit=100, beta=2.0) == pytest.approx(1.0)   # 2 * (1.5 - 1)
    assert cost_term(50, limit=100, form="linear") == pytest.approx(0.5)
    # NAS-EOD's latency term is the same function
    assert latency_term(30.0, target_ms=20.0, beta=0.5) == cost_term(30.0, limit=20.0, beta=0.5)
    for kwargs, match in (({"limit": 0}, "limit must be > 0"), ({"limit": 1, "beta": -1}, "beta must be"),
                          ({"limit": 1, "form": "square"}, "form must be one of"),
                          ({"limit": math.nan}, "limit must be a finite number")):
        with pytest.raises(ValueError, match=match):
            cost_term(1.0, **kwargs)


def _evaluator(encoding):
    if encoding == "broken":
        return {"status": "failed", "error": "diverged"}
    return {"status": "ok", "reward": -1.0, "macs": {"cheap": 5e7, "dear": 1e8}[encoding]}


def test_penalised_records_keep_the_loss_reward():
    wrapped = CostPenalized(_evaluator, limit=5e7, beta=1.0)
    cheap, dear = wrapped("cheap"), wrapped("dear")
    assert cheap == {"status": "ok", "reward": -1.0, "loss_reward": -1.0, "cost_penalty": 0.0, "macs": 5e7}
    assert dear["loss_reward"] == -1.0 and dear["cost_penalty"] == pytest.approx(1.0)
    assert dear["reward"] == pytest.approx(-2.0)
    assert wrapped("broken") == {"status": "failed", "error": "diverged"}
    again = pickle.loads(pickle.dumps(wrapped))                   # workers get it by pickling
    assert again("dear") == dear
    with pytest.raises(KeyError, match="no 'latency_ms' to limit"):
        CostPenalized(_evaluator, limit=10.0, key="latency_ms")("cheap")
    with pytest.raises(ValueError, match="limit must be > 0"):
        CostPenalized(_evaluator, limit=0)


def test_over_the_limit_is_scored_without_training():
    """With ``cost_of``, a candidate over the limit is never trained: the baseline's reward less its
    penalty; one within it is trained and penalised as usual (not at all, under the hinge)."""
    trained = []

    def evaluator(encoding):
        trained.append(encoding)
        return _evaluator(encoding)

    wrapped = CostPenalized(evaluator, limit=6e7, cost_of=lambda e: {"macs": {"cheap": 5e7, "dear": 1.2e8}[e],
                                                                     "params": 1.0}, untrained_reward=-1.5)
    dear = wrapped("dear")
    assert trained == [] and dear["trained"] is False and dear["params"] == 1.0
    assert dear["loss_reward"] == -1.5 and dear["reward"] == pytest.approx(-1.5 - 1.0)
    assert wrapped("cheap")["reward"] == -1.0 and trained == ["cheap"]
    with pytest.raises(ValueError, match="go together"):
        CostPenalized(evaluator, limit=1.0, cost_of=lambda e: {"macs": 1.0})
