"""Plainly written pure-torch references for every nasx op.

Slow on purpose: one obvious loop or broadcast per op, no cleverness, so that the
tests can trust them. They follow the same arithmetic as the kernels (and as
torchvision): area = (x2 - x1) * (y2 - y1), IoU = inter / (area_a + area_b - inter),
thresholds compared in float64.
"""
import math

import torch
from torch import Tensor


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.float64 if dtype == torch.float64 else torch.float32


def box_area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    return inter, union


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    out_dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    dtype = _compute_dtype(boxes1, boxes2)
    inter, union = _inter_union(boxes1.to(dtype), boxes2.to(dtype))
    return (inter / union).to(out_dtype)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    out_dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    dtype = _compute_dtype(boxes1, boxes2)
    b1, b2 = boxes1.to(dtype), boxes2.to(dtype)
    inter, union = _inter_union(b1, b2)
    iou = inter / union
    lt = torch.min(b1[:, None, :2], b2[None, :, :2])
    rb = torch.max(b1[:, None, 2:], b2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return (iou - (enclosing - union) / enclosing).to(out_dtype)


def _score_order(scores: Tensor) -> list[int]:
    """Indices of non-NaN scores, by decreasing score then increasing index."""
    values = scores.tolist()
    keep = [i for i, s in enumerate(values) if not math.isnan(s)]
    return sorted(keep, key=lambda i: (-values[i], i))


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    dtype = _compute_dtype(boxes, scores)
    boxes = boxes.to(dtype)
    order = _score_order(scores.to(dtype))
    keep: list[int] = []
    suppressed = [False] * len(order)
    for pos, i in enumerate(order):
        if suppressed[pos]:
            continue
        keep.append(i)
        rest = order[pos + 1 :]
        if not rest:
            continue
        ious = box_iou(boxes[i : i + 1], boxes[rest])[0].double()
        for k, over in enumerate((ious > iou_threshold).tolist()):
            if over:
                suppressed[pos + 1 + k] = True
    return torch.tensor(keep, dtype=torch.int64)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    keep: list[int] = []
    for c in torch.unique(idxs).tolist():
        members = torch.nonzero(idxs == c).flatten()
        keep += members[nms(boxes[members], scores[members], iou_threshold)].tolist()
    values = scores.to(_compute_dtype(boxes, scores)).tolist()
    keep.sort(key=lambda i: (-values[i], i))
    return torch.tensor(keep, dtype=torch.int64)


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "gaussian",
) -> tuple[Tensor, Tensor]:
    dtype = _compute_dtype(boxes, scores)
    boxes = boxes.to(dtype)
    current = scores.to(dtype).clone()
    thr = torch.tensor(score_threshold, dtype=dtype)
    alive = [i for i in range(len(current)) if not torch.isnan(current[i]) and current[i] >= thr]
    keep: list[int] = []
    kept_scores: list[Tensor] = []
    while alive:
        best = max(alive, key=lambda i: (current[i].item(), -i))
        keep.append(best)
        kept_scores.append(current[best].clone())
        alive.remove(best)
        if not alive:
            break
        ious = box_iou(boxes[best : best + 1], boxes[alive])[0]
        ious = torch.where(ious > 0, ious, torch.zeros_like(ious))  # NaN IoU counts as no overlap
        if method == "gaussian":
            weight = torch.exp(-(ious * ious) / torch.tensor(sigma, dtype=dtype))
        else:
            nt = torch.tensor(iou_threshold, dtype=dtype)
            weight = torch.where(ious > nt, 1 - ious, torch.ones_like(ious))
        current[alive] = current[alive] * weight
        alive = [i for i in alive if current[i] >= thr]
    out_scores = torch.stack(kept_scores) if kept_scores else current.new_empty(0)
    return torch.tensor(keep, dtype=torch.int64), out_scores.to(scores.dtype)


# ---------------------------------------------------------------------------
# Pareto ops (objectives minimised)
# ---------------------------------------------------------------------------


def _dominates(p: list, q: list) -> bool:
    return all(a <= b for a, b in zip(p, q)) and p != q


def non_dominated_sort(objectives: Tensor) -> Tensor:
    """Peel fronts: a point's rank is the number of fronts removed before it is undominated."""
    rows = objectives.double().tolist()
    rank = [-1] * len(rows)
    remaining = list(range(len(rows)))
    front = 0
    while remaining:
        current = [i for i in remaining if not any(_dominates(rows[j], rows[i]) for j in remaining)]
        for i in current:
            rank[i] = front
        remaining = [i for i in remaining if rank[i] < 0]
        front += 1
    return torch.tensor(rank, dtype=torch.int64)


def crowding_distance(objectives: Tensor, ranks: Tensor) -> Tensor:
    """pymoo's "cd" on each front (points in increasing index order), written out in float64."""
    out_dtype = torch.float64 if objectives.dtype == torch.float64 else torch.float32
    x = objectives.double().tolist()
    r = ranks.tolist()
    n, m = objectives.shape
    cd = [0.0] * n
    for front_rank in set(r):
        members = [i for i in range(n) if r[i] == front_rank]
        if len(members) <= 2:
            for i in members:
                cd[i] = math.inf
            continue
        terms = {i: [] for i in members}
        for j in range(m):
            order = sorted(members, key=lambda i: x[i][j])  # stable: ties keep index order
            norm = x[order[-1]][j] - x[order[0]][j]
            norm = math.nan if norm == 0 else norm
            for k, i in enumerate(order):
                prev = x[order[k - 1]][j] if k > 0 else -math.inf
                nxt = x[order[k + 1]][j] if k + 1 < len(order) else math.inf
                to_last, to_next = (x[i][j] - prev) / norm, (nxt - x[i][j]) / norm
                terms[i].append((0.0 if math.isnan(to_last) else to_last) + (0.0 if math.isnan(to_next) else to_next))
        for i in members:
            # numpy sums fewer than 8 terms left to right; more in its pairwise order.
            cd[i] = float(torch.tensor(terms[i], dtype=torch.float64).numpy().sum()) / m
    return torch.tensor(cd, dtype=torch.float64).to(out_dtype)


def hypervolume(points: Tensor, reference: Tensor) -> float:
    """Inclusion-exclusion free: volume of the union of boxes by a grid over all coordinates."""
    ref = reference.double().tolist()
    pts = [p for p in points.double().tolist() if all(a < b for a, b in zip(p, ref))]
    if not pts:
        return 0.0
    m = len(ref)
    # Every cell of the grid spanned by the points' coordinates and the reference is
    # either inside the union or not; sum the cells that some point covers.
    axes = [sorted(set([p[j] for p in pts] + [ref[j]])) for j in range(m)]
    cells = torch.cartesian_prod(*[torch.arange(len(a) - 1) for a in axes]).reshape(-1, m)
    lows = torch.stack([torch.tensor(axes[j], dtype=torch.float64)[cells[:, j]] for j in range(m)], 1)
    highs = torch.stack([torch.tensor(axes[j], dtype=torch.float64)[cells[:, j] + 1] for j in range(m)], 1)
    p = torch.tensor(pts, dtype=torch.float64)
    covered = (p[None, :, :] <= lows[:, None, :]).all(dim=2).any(dim=1)
    return float(((highs - lows).prod(dim=1) * covered).sum())


def partial_order_prune(
    candidates: Tensor, candidate_cost: Tensor, evaluated: Tensor, evaluated_cost: Tensor, evaluated_acc: Tensor
) -> Tensor:
    """The brute force: every candidate against every evaluated architecture."""
    if evaluated.shape[0] == 0:
        return torch.zeros(candidates.shape[0], dtype=torch.bool)
    a, b = candidates.long(), evaluated.long()
    below = (a[:, None, :] <= b[None, :, :]).all(dim=2)  # [K, N]: a <= b
    acc = evaluated_acc.double()
    ub = torch.where(below, acc[None, :], torch.full_like(acc, math.inf)[None, :]).amin(dim=1)
    cheaper = evaluated_cost.double()[None, :] <= candidate_cost.double()[:, None]  # [K, N]
    return (cheaper & (acc[None, :] >= ub[:, None])).any(dim=1)
