"""Rank correlations (nasx.evaluate.rank): values worked out by hand, ties, undefined cases, bad input."""
import math
import warnings
from itertools import combinations

import numpy as np
import pytest

from nasx.evaluate.rank import kendall_tau, spearman_rho


def _tau_b_by_definition(x, y):
    """Count the pairs: tau-b = (C - D) / sqrt((C + D + Tx) * (C + D + Ty)), Tx: tied in x only."""
    c = d = tx = ty = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tx += 1
        elif dy == 0:
            ty += 1
        elif dx == dy:
            c += 1
        else:
            d += 1
    return (c - d) / math.sqrt((c + d + tx) * (c + d + ty))


def test_kendall_tau_by_hand():
    # 6 pairs, one discordant (items 2 and 3): (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([0.5, 9.0], [2, 1]) == pytest.approx(-1.0)
    assert isinstance(kendall_tau((1, 2), np.array([1, 2])), float)


def test_kendall_tau_with_ties_is_tau_b():
    # x ties items 2,3; y ties items 3,4: C = 4, D = 0, one pair tied in x only, one in y only:
    # 4 / sqrt(5 * 5)
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    # a pair tied on both sides counts in neither: (1, 2) is; (1, 3) and (2, 3) concordant: 2 / sqrt(2 * 2)
    assert kendall_tau([1, 1, 2], [5, 5, 6]) == pytest.approx(1.0)


def test_kendall_tau_matches_the_definition():
    rng = np.random.default_rng(0)
    for n in (2, 5, 9, 30):
        x, y = rng.normal(size=n), rng.integers(0, 4, size=n).astype(float)  # many ties in y
        x[: n // 3] = x[0]  # and some in x
        if len(set(x)) > 1 and len(set(y)) > 1:
            assert kendall_tau(x, y) == pytest.approx(_tau_b_by_definition(x, y), abs=1e-12)


def test_spearman_rho_by_hand():
    # rank differences 0, 1, 1, 0: 1 - 6 * 2 / (4 * (16 - 1))
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman_rho([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman_rho([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties take their average rank: ranks (1, 2.5, 2.5, 4) and (1, 2, 3.5, 3.5); Pearson of those = 3.75 / 4.5
    assert spearman_rho([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(5 / 6)


@pytest.mark.parametrize("fn", [kendall_tau, spearman_rho])
@pytest.mark.parametrize("x, y", [([], []), ([1.0], [2.0]), ([1, 1, 1], [1, 2, 3]), ([1, 2, 3], [4, 4, 4])])
def test_undefined_is_nan_without_a_warning(fn, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(fn(x, y))


@pytest.mark.parametrize("fn", [kendall_tau, spearman_rho])
def test_bad_input(fn):
    with pytest.raises(ValueError, match="equal length, got 2 and 3"):
        fn([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"x\[1\] is missing"):
        fn([1, None, 3], [1, 2, 3])
    with pytest.raises(ValueError, match=r"y\[2\] is missing"):
        fn([1, 2, 3], [1, 2, float("nan")])
    with pytest.raises(ValueError, match="1-D"):
        fn([[1, 2], [3, 4]], [[1, 2], [3, 4]])
