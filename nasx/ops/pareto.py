"""Pareto ops for multi-objective search: non-dominated sorting, crowding distance,
hypervolume and SM-NAS's partial-order pruning.

Every objective is **minimised**. To maximise one (accuracy, mAP), negate its
column first: ``objectives = torch.stack([-acc, latency], 1)``.

NaN policy (all ops, both devices): a NaN objective, reference, cost or accuracy
has no place in an order, so the op raises ``ValueError`` naming the argument
(drop or replace such rows first). Infinite values are ordinary, ordered values.
float16/bfloat16 inputs are compared in float32 (exactly).
"""
import torch
from torch import Tensor

from nasx.ops._checks import check_pareto_floats, check_pareto_integers

__all__ = ["non_dominated_sort", "crowding_distance", "hypervolume", "partial_order_prune"]


def non_dominated_sort(objectives: Tensor) -> Tensor:
    """Pareto rank of every point; identical to ``moocore.pareto_rank``.

    Point p dominates q when p <= q in every objective and p != q. Rank 0 is the
    set of points no other point dominates; rank r + 1 is what remains
    non-dominated once ranks 0..r are removed. Equal points do not dominate each
    other and share a rank.

    CPU: O(N log N) for M = 2, an (f1, f2) staircase per front for M = 3, ENS with
    binary search over fronts on integer ranks for M >= 4 (parallel over points).
    CUDA: dominator counts and front peeling with all N^2 tests on the device;
    the host reads one number per front.

    Args:
        objectives (Tensor[N, M]): one row per point, floating point, M >= 1; minimised.

    Returns:
        Tensor[N] int64: the rank of each point, 0 for the first front.
    """
    return torch.ops.nasx.non_dominated_sort(objectives)


def crowding_distance(objectives: Tensor, ranks: Tensor) -> Tensor:
    """NSGA-II crowding distance within each front, identical to pymoo's ``"cd"``.

    Points with equal ``ranks`` form a front. A front of one or two points gets
    +inf everywhere. Otherwise, per objective, the front is sorted stably by value
    (ties: lower index first); the first and last points get +inf, every other
    point the gap between its neighbours divided by the front's range in that
    objective (an objective with zero range contributes 0); the M terms are summed
    and divided by M. Computed in float64 in pymoo's (and numpy's) order, so the
    results equal pymoo's ``calc_crowding_distance`` on ``objectives[front]``
    (front indices increasing) bit for bit. Duplicate points are not filtered out.

    Args:
        objectives (Tensor[N, M]): floating point, M >= 1.
        ranks (Tensor[N]): integer front of each point (e.g. from :func:`non_dominated_sort`).

    Returns:
        Tensor[N]: crowding distance of each point, float64 for float64 input, else float32.
    """
    return torch.ops.nasx.crowding_distance(objectives, ranks)


def hypervolume(points: Tensor, reference: Tensor) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference``.

    Same value as ``moocore.hypervolume`` (up to float64 rounding of the sum).
    Points that do not strictly dominate the reference (p_j < r_j for every j)
    contribute nothing. Computed in float64: O(N log N) for M = 2 and M = 3 (HV3D),
    O(N^2) for M = 4 (HV4D+, a sweep in the 4th objective adding 3-D contributions),
    slicing in the WFG manner down to HV4D+ for M >= 5, each term recursing on
    the non-dominated points of the later ones limited to it. On CUDA tensors the points
    are copied to the host and the CPU algorithm runs (exact sweeps have no good
    GPU form at archive sizes); the op itself returns a 0-dim tensor on the points'
    device, see ``torch.ops.nasx.hypervolume``.

    Args:
        points (Tensor[N, M]): floating point, minimised.
        reference (Tensor[M]): the reference (nadir) point, floating point, same device.

    Returns:
        float: the hypervolume (0.0 when no point dominates the reference).
    """
    return float(torch.ops.nasx.hypervolume(points, reference))


def partial_order_prune(
    candidates: Tensor,
    candidate_cost: Tensor,
    evaluated: Tensor,
    evaluated_cost: Tensor,
    evaluated_acc: Tensor,
) -> Tensor:
    """SM-NAS partial-order pruning (Li et al. 2019): which candidates cannot reach the front.

    Architectures are integer descriptors (blocks per stage, channels per stage,
    ...). The partial-order assumption: if a <= b in every component then
    acc(a) <= acc(b). So a candidate's accuracy is bounded by
    ``ub(a) = min{acc(b) : b evaluated, a <= b}`` (unbounded when no such b), and a
    is pruned when some evaluated c has ``cost(c) <= cost(a)`` and
    ``acc(c) >= ub(a)``: c is at least as cheap and at least as accurate, so a is
    never trained. Exact (the brute-force answer) but indexed: per-dimension
    bitsets of the evaluated set on CPU, one thread per candidate on CUDA.

    Args:
        candidates (Tensor[K, D]): integer descriptors of the untrained candidates.
        candidate_cost (Tensor[K]): their cost (latency, FLOPs), floating point; lower is better.
        evaluated (Tensor[N, D]): integer descriptors of the trained architectures.
        evaluated_cost (Tensor[N]): their cost, floating point.
        evaluated_acc (Tensor[N]): their accuracy, floating point; higher is better.

    Returns:
        Tensor[K] bool: True where the candidate is pruned.
    """
    return torch.ops.nasx.partial_order_prune(
        candidates, candidate_cost, evaluated, evaluated_cost, evaluated_acc
    )


# Fake kernels, with the dtype and rank checks of csrc/ops/pareto_checks.h (same words).
def _out_float(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.register_fake("nasx::non_dominated_sort")
def _non_dominated_sort_fake(objectives):
    check_pareto_floats("non_dominated_sort", objectives=(objectives, 2))
    return objectives.new_empty((objectives.shape[0],), dtype=torch.int64)


@torch.library.register_fake("nasx::crowding_distance")
def _crowding_distance_fake(objectives, ranks):
    check_pareto_floats("crowding_distance", objectives=(objectives, 2))
    check_pareto_integers("crowding_distance", ranks=(ranks, 1))
    return objectives.new_empty((objectives.shape[0],), dtype=_out_float(objectives.dtype))


@torch.library.register_fake("nasx::hypervolume")
def _hypervolume_fake(points, reference):
    check_pareto_floats("hypervolume", points=(points, 2), reference=(reference, 1))
    return points.new_empty((), dtype=_out_float(torch.promote_types(points.dtype, reference.dtype)))


@torch.library.register_fake("nasx::partial_order_prune")
def _partial_order_prune_fake(candidates, candidate_cost, evaluated, evaluated_cost, evaluated_acc):
    check_pareto_integers("partial_order_prune", candidates=(candidates, 2), evaluated=(evaluated, 2))
    check_pareto_floats(
        "partial_order_prune", candidate_cost=(candidate_cost, 1), evaluated_cost=(evaluated_cost, 1),
        evaluated_acc=(evaluated_acc, 1),
    )
    return candidates.new_empty((candidates.shape[0],), dtype=torch.bool)
