"""Pareto ops against the plain references, moocore and pymoo, on fresh random inputs."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nasx
from nasx.ops import _reference as ref

from conftest import needs_cuda


@st.composite
def objective_sets(draw, min_n=0, max_n=40, min_m=1, max_m=5):
    """[N, M] objectives; often on a coarse grid, so ties and exact duplicates abound."""
    n = draw(st.integers(min_n, max_n))
    m = draw(st.integers(min_m, max_m))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    levels = draw(st.sampled_from([2, 3, 5, 20, 0]))  # 0: continuous values
    x = torch.randint(0, levels, (n, m), generator=g).double() if levels else torch.rand(n, m, generator=g, dtype=torch.float64)
    if n and draw(st.booleans()):  # repeat some rows verbatim
        x = x[torch.randint(0, n, (n,), generator=g)]
    if n and m > 1 and draw(st.booleans()):  # a correlated front: all points mutually non-dominated
        x[:, 1] = -x[:, 0] + 0.01 * x[:, 1]
    return x


dtypes = st.sampled_from([torch.float32, torch.float64])


# ---- non_dominated_sort -------------------------------------------------------


@given(x=objective_sets(), dtype=dtypes)
def test_nds_matches_reference(x, dtype):
    x = x.to(dtype)
    assert torch.equal(nasx.ops.non_dominated_sort(x), ref.non_dominated_sort(x))


@given(x=objective_sets(min_n=1, max_n=1500, max_m=6), dtype=dtypes)
def test_nds_matches_moocore(x, dtype):
    moocore = pytest.importorskip("moocore")
    x = x.to(dtype)
    expected = torch.from_numpy(moocore.pareto_rank(x.double().numpy()).astype(np.int64))
    assert torch.equal(nasx.ops.non_dominated_sort(x), expected)


@pytest.mark.parametrize("m", [2, 3, 4, 5])
def test_nds_large_many_fronts_matches_moocore(m):
    """Past the parallel sort threshold and over many 256-point blocks (M >= 4)."""
    moocore = pytest.importorskip("moocore")
    g = torch.Generator().manual_seed(m)
    x = torch.randint(0, 1000, (40_000 if m <= 3 else 6_000, m), generator=g).double()
    assert torch.equal(nasx.ops.non_dominated_sort(x), torch.from_numpy(moocore.pareto_rank(x.numpy()).astype(np.int64)))


def test_nds_small_cases():
    nds = nasx.ops.non_dominated_sort
    assert nds(torch.empty(0, 3)).tolist() == []
    assert nds(torch.tensor([[1.0, 2.0]])).tolist() == [0]
    assert nds(torch.tensor([[3.0], [1.0], [3.0], [2.0]])).tolist() == [2, 0, 2, 1]  # M = 1: dense rank
    # Equal points share a front; (2, 2) is dominated by (1, 2) only.
    assert nds(torch.tensor([[1.0, 2], [1, 2], [2, 1], [2, 2], [3, 3]])).tolist() == [0, 0, 0, 1, 2]
    inf = math.inf
    assert nds(torch.tensor([[inf, 0.0], [0, inf], [inf, inf], [-inf, -inf]])).tolist() == [1, 1, 2, 0]
    assert nds(torch.tensor([[1.0, 2], [2, 1]], dtype=torch.float16)).tolist() == [0, 0]


def test_nds_maximise_by_negating():
    acc = torch.tensor([0.5, 0.7, 0.6, 0.7])
    latency = torch.tensor([10.0, 30.0, 40.0, 20.0])
    assert nasx.ops.non_dominated_sort(torch.stack([-acc, latency], 1)).tolist() == [0, 1, 2, 0]


# ---- crowding_distance --------------------------------------------------------


@st.composite
def ranked_sets(draw, max_n=40, max_m=5):
    x = draw(objective_sets(max_n=max_n, max_m=max_m))
    if draw(st.booleans()):
        r = nasx.ops.non_dominated_sort(x)
    else:  # arbitrary (also negative, sparse) front labels
        r = torch.randint(-3, 4, (len(x),), generator=torch.Generator().manual_seed(len(x))) * 5
    return x, r


@given(data=ranked_sets(), dtype=dtypes)
def test_crowding_matches_reference(data, dtype):
    x, r = data
    x = x.to(dtype)
    assert torch.equal(nasx.ops.crowding_distance(x, r), ref.crowding_distance(x, r))


@given(data=ranked_sets(max_n=300, max_m=10))
def test_crowding_matches_pymoo(data):
    pytest.importorskip("pymoo")
    from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function

    x, r = data
    cd = nasx.ops.crowding_distance(x, r)
    pymoo_cd = get_crowding_function("cd")
    for front in torch.unique(r):
        idx = (r == front).nonzero().flatten()
        expected = torch.from_numpy(pymoo_cd.do(x[idx].numpy()))
        assert torch.equal(cd[idx], expected), f"front {front}"


def test_crowding_small_cases():
    cd = nasx.ops.crowding_distance
    assert cd(torch.empty(0, 2), torch.empty(0, dtype=torch.long)).tolist() == []
    assert cd(torch.tensor([[1.0, 2.0]]), torch.tensor([0])).tolist() == [math.inf]
    x = torch.tensor([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0]], dtype=torch.float64)
    # Interior points: ((2 - 0) / 4 + (4 - 1) / 4) / 2 per objective pair.
    assert cd(x, torch.zeros(4, dtype=torch.long)).tolist() == [math.inf, 0.75, 0.75, math.inf]
    # Two fronts are independent: the second has two points, so both are infinite.
    r = torch.tensor([0, 0, 0, 1])
    assert cd(x, r).tolist() == [math.inf, 1.0, math.inf, math.inf]
    assert cd(x.float(), r).dtype == torch.float32


# ---- hypervolume --------------------------------------------------------------


@st.composite
def hv_sets(draw, max_n=12, max_m=4):
    x = draw(objective_sets(max_n=max_n, min_m=1, max_m=max_m))
    m = x.shape[1]
    reference = torch.full((m,), draw(st.sampled_from([0.5, 1.0, 1.5, 25.0])), dtype=torch.float64)
    return x, reference


@given(data=hv_sets())
def test_hypervolume_matches_reference(data):
    x, reference = data
    assert nasx.ops.hypervolume(x, reference) == pytest.approx(ref.hypervolume(x, reference), rel=1e-12, abs=1e-12)


@given(data=hv_sets(max_n=120, max_m=5))
def test_hypervolume_matches_moocore(data):
    moocore = pytest.importorskip("moocore")
    x, reference = data
    if x.shape[1] < 2:
        return  # moocore's hypervolume needs M >= 2
    expected = moocore.hypervolume(x.numpy(), ref=reference.numpy())
    assert nasx.ops.hypervolume(x, reference) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("m,n", [(2, 5000), (3, 3000), (4, 3000), (5, 120), (6, 40), (7, 25)])
def test_hypervolume_integer_grid_is_exact(m, n):
    """On an integer grid every partial sum is exact, so the answer is moocore's to the bit."""
    moocore = pytest.importorskip("moocore")
    g = torch.Generator().manual_seed(m)
    x = torch.randint(0, 64, (n, m), generator=g).double()
    reference = torch.full((m,), 60.0, dtype=torch.float64)
    assert nasx.ops.hypervolume(x, reference) == moocore.hypervolume(x.numpy(), ref=reference.numpy())


def hv_front(seed, n, m, kind):
    """Fresh sets where every M >= 4 path is exercised: a front on the unit sphere
    (most points non-dominated), or uniform points (most dominated); both with
    repeated rows and rows on or beyond the reference's boundary (ignored)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "sphere":
        x = torch.randn(n, m, generator=g, dtype=torch.float64).abs()
        x = x / x.norm(dim=1, keepdim=True)
    else:
        x = torch.rand(n, m, generator=g, dtype=torch.float64)
    k = max(n // 10, 1)
    repeats = x[torch.randint(0, n, (k,), generator=g)]
    outside = torch.rand(k, m, generator=g, dtype=torch.float64) * 0.5
    outside[torch.arange(k), torch.randint(0, m, (k,), generator=g)] = 1.1  # on the boundary: nothing
    outside[: k // 2, 0] = 1.5  # beyond it
    x = torch.cat([x, repeats, outside])
    return x[torch.randperm(len(x), generator=g)], torch.full((m,), 1.1, dtype=torch.float64)


@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1))
@pytest.mark.parametrize("kind", ["sphere", "uniform"])
@pytest.mark.parametrize("m,n", [(4, 400), (5, 120), (6, 50)])
def test_hypervolume_many_objectives_matches_moocore(m, n, kind, seed):
    moocore = pytest.importorskip("moocore")
    x, reference = hv_front(seed, n, m, kind)
    expected = moocore.hypervolume(x.numpy(), ref=reference.numpy())
    assert nasx.ops.hypervolume(x, reference) == pytest.approx(expected, rel=1e-12, abs=0)


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1))
@pytest.mark.parametrize("kind", ["sphere", "uniform"])
@pytest.mark.parametrize("m,n", [(4, 12), (5, 8), (6, 6)])
def test_hypervolume_many_objectives_matches_reference(m, n, kind, seed):
    x, reference = hv_front(seed, n, m, kind)
    assert nasx.ops.hypervolume(x, reference) == pytest.approx(ref.hypervolume(x, reference), rel=1e-12, abs=0)


def test_hypervolume_4d_large_matches_moocore():
    moocore = pytest.importorskip("moocore")
    for kind in ["sphere", "uniform"]:
        x, reference = hv_front(int(torch.randint(0, 2**31 - 1, ())), 3000, 4, kind)
        expected = moocore.hypervolume(x.numpy(), ref=reference.numpy())
        assert nasx.ops.hypervolume(x, reference) == pytest.approx(expected, rel=1e-12, abs=0)


def test_hypervolume_4d_ties():
    """Equal coordinates in every position of the sweeps (a grid), checked by dimension
    symmetry: permuting the objectives must not change the volume."""
    moocore = pytest.importorskip("moocore")
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    x = torch.randint(0, 5, (200, 4), generator=g).double() / 4
    reference = torch.full((4,), 1.0, dtype=torch.float64)
    expected = moocore.hypervolume(x.numpy(), ref=reference.numpy())
    for perm in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]]:
        assert nasx.ops.hypervolume(x[:, perm], reference) == expected


def test_hypervolume_small_cases():
    hv = nasx.ops.hypervolume
    assert hv(torch.empty(0, 3), torch.ones(3)) == 0.0
    assert hv(torch.tensor([[0.5, 0.25]]), torch.ones(2)) == 0.375
    assert hv(torch.tensor([[1.0, 0.0]]), torch.ones(2)) == 0.0  # on the reference's boundary: nothing
    assert hv(torch.tensor([[0.25], [0.5]]), torch.ones(1)) == 0.75  # M = 1
    out = torch.ops.nasx.hypervolume(torch.tensor([[0.5, 0.5]]), torch.ones(2))
    assert out.dim() == 0 and out.dtype == torch.float32


# ---- partial_order_prune --------------------------------------------------------


@st.composite
def prune_sets(draw, max_k=60, max_n=40, max_d=5):
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    k, n, d = draw(st.integers(0, max_k)), draw(st.integers(0, max_n)), draw(st.integers(0, max_d))
    hi = draw(st.sampled_from([2, 3, 6, 1000]))
    cand = torch.randint(0, hi, (k, d), generator=g)
    ev = torch.randint(0, hi, (n, d), generator=g)
    levels = draw(st.sampled_from([3, 50]))  # few levels: equal costs and accuracies
    return (cand, torch.randint(0, levels, (k,), generator=g).double(), ev,
            torch.randint(0, levels, (n,), generator=g).double(), torch.randint(0, levels, (n,), generator=g).double())


@given(args=prune_sets())
def test_prune_matches_brute_force(args):
    assert torch.equal(nasx.ops.partial_order_prune(*args), ref.partial_order_prune(*args))


def test_prune_large_matches_brute_force():
    """Evaluated sets spanning several 64-bit words; realistic channel-like values."""
    g = torch.Generator().manual_seed(0)
    ev = torch.randint(1, 9, (700, 6), generator=g) * 16
    cand = torch.randint(1, 9, (3000, 6), generator=g) * 16
    size = lambda a: a.double().sum(1)  # noqa: E731 -- cost grows with the descriptor
    acc = size(ev) / 300 + torch.rand(700, generator=g, dtype=torch.float64) * 0.2
    args = (cand, size(cand) + torch.randn(3000, generator=g, dtype=torch.float64), ev, size(ev), acc)
    pruned = nasx.ops.partial_order_prune(*args)
    assert torch.equal(pruned, ref.partial_order_prune(*args)) and 0 < int(pruned.sum()) < 3000


def test_prune_small_cases():
    prune = nasx.ops.partial_order_prune
    # c = [2, 2] is cheaper and as accurate as b = [3, 3] >= a = [1, 2]: a cannot beat c.
    ev = torch.tensor([[3, 3], [2, 2]])
    out = prune(torch.tensor([[1, 2], [3, 4]]), torch.tensor([5.0, 5.0]), ev, torch.tensor([4.0, 2.0]),
                torch.tensor([0.5, 0.5]))
    assert out.tolist() == [True, False]  # [3, 4] has no evaluated b above it: unbounded
    assert prune(torch.empty(0, 2, dtype=torch.long), torch.empty(0), ev, torch.ones(2), torch.ones(2)).tolist() == []
    assert prune(torch.tensor([[1, 1]]), torch.ones(1), ev[:0], torch.empty(0), torch.empty(0)).tolist() == [False]


# ---- NaN policy and bad input -------------------------------------------------

nan = math.nan


@pytest.mark.parametrize(
    "call,exc,fragment",
    [
        (lambda: nasx.ops.non_dominated_sort(torch.tensor([[1.0, nan]])), ValueError, "objectives contains NaN"),
        (lambda: nasx.ops.non_dominated_sort(torch.tensor([[1, 2]])), TypeError, "expected objectives to be a floating-point"),
        (lambda: nasx.ops.non_dominated_sort(torch.ones(3)), ValueError, "objectives of shape [N, M] with M >= 1"),
        (lambda: nasx.ops.non_dominated_sort(torch.ones(3, 0)), ValueError, "got shape [3, 0]"),
        (lambda: nasx.ops.crowding_distance(torch.tensor([[nan]]), torch.zeros(1, dtype=torch.long)), ValueError,
         "crowding_distance: objectives contains NaN"),
        (lambda: nasx.ops.crowding_distance(torch.ones(3, 2), torch.zeros(3)), TypeError,
         "expected ranks to be an integer tensor, got Float"),
        (lambda: nasx.ops.crowding_distance(torch.ones(3, 2), torch.zeros(2, dtype=torch.long)), ValueError,
         "expected ranks of shape [N] = [3], got shape [2]"),
        (lambda: nasx.ops.hypervolume(torch.ones(3, 2), torch.ones(3)), ValueError,
         "expected reference of shape [M] = [2], got shape [3]"),
        (lambda: nasx.ops.hypervolume(torch.ones(3, 2), torch.tensor([1.0, nan])), ValueError,
         "hypervolume: reference contains NaN"),
        (lambda: nasx.ops.hypervolume(torch.tensor([[nan, 1.0]]), torch.ones(2)), ValueError, "points contains NaN"),
        (lambda: nasx.ops.partial_order_prune(torch.ones(2, 3), torch.ones(2), torch.ones(1, 3, dtype=torch.long),
                                              torch.ones(1), torch.ones(1)), TypeError,
         "expected candidates to be an integer tensor, got Float"),
        (lambda: nasx.ops.partial_order_prune(torch.ones(2, 3, dtype=torch.long), torch.ones(2),
                                              torch.ones(1, 4, dtype=torch.long), torch.ones(1), torch.ones(1)),
         ValueError, "expected evaluated of shape [N, D] with D = candidates.size(1) = 3, got shape [1, 4]"),
        (lambda: nasx.ops.partial_order_prune(torch.ones(2, 3, dtype=torch.long), torch.ones(2),
                                              torch.ones(1, 3, dtype=torch.long), torch.ones(1), torch.tensor([nan])),
         ValueError, "evaluated_acc contains NaN"),
        (lambda: nasx.ops.partial_order_prune(torch.ones(2, 3, dtype=torch.long), torch.ones(3),
                                              torch.ones(1, 3, dtype=torch.long), torch.ones(1), torch.ones(1)),
         ValueError, "expected candidate_cost of shape [K] = [2], got shape [3]"),
    ],
)
def test_bad_input_message(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)


# ---- opcheck and devices ------------------------------------------------------


def _calls(device):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (60, 3), generator=g).double().to(device)
    cand = torch.randint(0, 5, (40, 4), generator=g).to(device)
    ev = torch.randint(0, 5, (20, 4), generator=g).to(device)
    return [
        (torch.ops.nasx.non_dominated_sort.default, (x,)),
        (torch.ops.nasx.non_dominated_sort.default, (x[:, :2].float(),)),
        (torch.ops.nasx.crowding_distance.default, (x, torch.ops.nasx.non_dominated_sort(x))),
        (torch.ops.nasx.hypervolume.default, (x, torch.full((3,), 6.0, dtype=torch.float64, device=device))),
        (torch.ops.nasx.partial_order_prune.default,
         (cand, torch.rand(40, generator=g).to(device), ev, torch.rand(20, generator=g).to(device),
          torch.rand(20, generator=g).to(device))),
    ]


@pytest.mark.parametrize("i", range(5))
def test_opcheck(i, device):
    op, args = _calls(device)[i]
    torch.library.opcheck(op, args)


def test_compile_fullgraph_nsga2_step():
    def step(objectives):
        ranks = nasx.ops.non_dominated_sort(objectives)
        return ranks, nasx.ops.crowding_distance(objectives, ranks)

    x = torch.rand(100, 3, dtype=torch.float64)
    ranks, cd = torch.compile(step, fullgraph=True, backend="eager")(x)
    assert torch.equal(ranks, ref.non_dominated_sort(x)) and torch.equal(cd, ref.crowding_distance(x, ranks))


@needs_cuda
@given(x=objective_sets(max_n=3000, max_m=6), dtype=dtypes)
def test_cuda_matches_cpu(x, dtype):
    x = x.to(dtype)
    ranks = nasx.ops.non_dominated_sort(x)
    assert torch.equal(nasx.ops.non_dominated_sort(x.cuda()).cpu(), ranks)
    assert torch.equal(nasx.ops.crowding_distance(x.cuda(), ranks.cuda()).cpu(), nasx.ops.crowding_distance(x, ranks))
    reference = torch.full((x.shape[1],), 25.0, dtype=dtype)
    out = torch.ops.nasx.hypervolume(x.cuda(), reference.cuda())
    assert out.device.type == "cuda" and out.cpu() == torch.ops.nasx.hypervolume(x, reference)


@needs_cuda
@given(args=prune_sets(max_k=3000, max_n=500, max_d=10))
def test_cuda_prune_matches_cpu(args):
    assert torch.equal(nasx.ops.partial_order_prune(*[a.cuda() for a in args]).cpu(), nasx.ops.partial_order_prune(*args))


@needs_cuda
def test_cuda_nan_and_mixed_devices():
    with pytest.raises(ValueError, match="objectives contains NaN"):
        nasx.ops.non_dominated_sort(torch.tensor([[1.0, nan]], device="cuda"))
    with pytest.raises(ValueError, match="points on cuda:0 and reference on cpu"):
        nasx.ops.hypervolume(torch.ones(2, 2, device="cuda"), torch.ones(2))
