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

# Target assignment (fcos_targets, match_anchors, atss_assign) and sigmoid focal loss
# ---------------------------------------------------------------------------


def fcos_targets(
    points: Tensor, strides: Tensor, size_ranges: Tensor, gt_boxes: Tensor, center_radius=1.5
) -> tuple[Tensor, Tensor, Tensor]:
    """One GT at a time over all points; the smallest-area candidate so far is kept."""
    out_dtype = torch.promote_types(points.dtype, gt_boxes.dtype)
    dtype = _compute_dtype(points, gt_boxes)
    x, y = points.to(dtype).unbind(1)
    lo, hi = size_ranges.to(dtype).unbind(1)
    half = None if center_radius is None else strides.to(dtype) * torch.tensor(center_radius, dtype=dtype)
    gts = gt_boxes.to(dtype)
    n = len(x)
    best = torch.full((n,), -1, dtype=torch.int64)
    best_area = torch.zeros(n, dtype=dtype)
    for g in range(len(gts)):
        x1, y1, x2, y2 = gts[g]
        l, t, r, b = x - x1, y - y1, x2 - x, y2 - y
        if half is None:
            inside = (l > 0) & (t > 0) & (r > 0) & (b > 0)
        else:
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            sx1 = torch.where(cx - half > x1, cx - half, x1)
            sy1 = torch.where(cy - half > y1, cy - half, y1)
            sx2 = torch.where(cx + half > x2, x2, cx + half)
            sy2 = torch.where(cy + half > y2, y2, cy + half)
            inside = (x - sx1 > 0) & (y - sy1 > 0) & (sx2 - x > 0) & (sy2 - y > 0)
        longest = torch.maximum(torch.maximum(l, t), torch.maximum(r, b))
        candidate = inside & (longest >= lo) & (longest <= hi)
        area = (x2 - x1) * (y2 - y1)
        take = candidate & ((best < 0) | (area < best_area))
        best[take] = g
        best_area[take] = area
    fg = best >= 0
    reg = torch.zeros(n, 4, dtype=dtype)
    centerness = torch.zeros(n, dtype=dtype)
    if fg.any():
        box = gts[best[fg]]
        l, t = x[fg] - box[:, 0], y[fg] - box[:, 1]
        r, b = box[:, 2] - x[fg], box[:, 3] - y[fg]
        reg[fg] = torch.stack([l, t, r, b], 1)
        centerness[fg] = torch.sqrt(
            (torch.minimum(l, r) / torch.maximum(l, r)) * (torch.minimum(t, b) / torch.maximum(t, b))
        )
    return best, reg.to(out_dtype), centerness.to(out_dtype)


def match_anchors(
    anchors: Tensor, gt_boxes: Tensor, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool
) -> tuple[Tensor, Tensor]:
    """The Matcher rules over the full G x N IoU matrix."""
    out_dtype = torch.promote_types(anchors.dtype, gt_boxes.dtype)
    n = len(anchors)
    if len(gt_boxes) == 0:
        return torch.full((n,), -1, dtype=torch.int64), torch.zeros(n, dtype=out_dtype)
    dtype = _compute_dtype(anchors, gt_boxes)
    iou = box_iou(gt_boxes.to(dtype), anchors.to(dtype))
    if n == 0:
        return torch.empty(0, dtype=torch.int64), iou.new_empty(0).to(out_dtype)
    best_iou, best_gt = iou.max(dim=0)  # first maximum; NaN counts as the maximum
    matched = best_gt.clone()
    matched[best_iou < low_threshold] = -1
    matched[(best_iou >= low_threshold) & (best_iou < high_threshold)] = -2
    if allow_low_quality_matches:
        gt_best = iou.max(dim=1).values
        for g in range(len(gt_boxes)):
            hits = (iou[g] == gt_best[g]).nonzero().flatten()
            matched[hits] = best_gt[hits]
    return matched, best_iou.to(out_dtype)


def atss_assign(anchors: Tensor, num_anchors_per_level, gt_boxes: Tensor, topk: int = 9) -> tuple[Tensor, Tensor]:
    """One GT at a time: sorted distances per level, IoU statistics, then highest-IoU resolution."""
    out_dtype = torch.promote_types(anchors.dtype, gt_boxes.dtype)
    dtype = _compute_dtype(anchors, gt_boxes)
    a, gts = anchors.to(dtype), gt_boxes.to(dtype)
    n = len(a)
    matched = torch.full((n,), -1, dtype=torch.int64)
    assigned = torch.zeros(n, dtype=dtype)
    acx, acy = (a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2
    starts = [0]
    for c in num_anchors_per_level:
        starts.append(starts[-1] + int(c))
    eps = torch.tensor(0.01, dtype=dtype)
    for g in range(len(gts)):
        box = gts[g]
        gcx, gcy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        dx, dy = acx - gcx, acy - gcy
        dist = torch.sqrt(dx * dx + dy * dy)
        candidates = []
        for lb, le in zip(starts[:-1], starts[1:]):
            order = torch.sort(dist[lb:le], stable=True).indices  # NaN last, ties by index
            candidates.append(order[: min(topk, le - lb)] + lb)
        cand = torch.cat(candidates)
        if len(cand) == 0:
            continue
        ious = box_iou(a[cand], box[None])[:, 0]
        d = ious.double()
        # mean + unbiased std, shifted by the first IoU so that equal IoUs give exactly
        # that IoU (std 0); a single candidate has no std (NaN), as torch.std.
        shifted = d - d[0]
        spread = shifted.std() if len(d) > 1 else torch.tensor(math.nan, dtype=torch.float64)
        threshold = d[0] + shifted.mean() + spread
        cx, cy = acx[cand], acy[cand]
        inside = (cx - box[0] > eps) & (cy - box[1] > eps) & (box[2] - cx > eps) & (box[3] - cy > eps)
        for j, v in zip(cand[(d >= threshold) & inside].tolist(), ious[(d >= threshold) & inside].tolist()):
            if matched[j] < 0 or v > assigned[j]:
                matched[j] = g
                assigned[j] = v
    return matched, assigned.to(out_dtype)


def sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2, reduction: str = "none"
) -> Tensor:
    """Lin et al. 2017, term by term, differentiable through autograd."""
    p = torch.sigmoid(inputs)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss

# Feature-map ops: roi_align, deform_conv2d (torchvision's semantics)
# ---------------------------------------------------------------------------


def _roi_bilinear(plane: Tensor, y: float, x: float) -> Tensor:
    """Bilinear sample of every channel of plane[C, H, W] at (y, x), RoIAlign's border rules."""
    _, height, width = plane.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return plane.new_zeros(plane.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (
        hy * hx * plane[:, y_low, x_low]
        + hy * lx * plane[:, y_low, x_high]
        + ly * hx * plane[:, y_high, x_low]
        + ly * lx * plane[:, y_high, x_high]
    )


def roi_align(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float = 1.0,
    sampling_ratio: int = -1, aligned: bool = False,
) -> Tensor:
    """rois: [K, 5] (batch index, x1, y1, x2, y2). Differentiable with respect to input."""
    ph, pw = output_size
    offset = 0.5 if aligned else 0.0
    out = []
    for roi in rois.tolist():
        plane = input[int(roi[0])]
        x1, y1, x2, y2 = (v * spatial_scale - offset for v in roi[1:])
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / ph, roi_w / pw
        grid_h = sampling_ratio if sampling_ratio > 0 else max(math.ceil(roi_h / ph), 0)
        grid_w = sampling_ratio if sampling_ratio > 0 else max(math.ceil(roi_w / pw), 0)
        count = max(grid_h * grid_w, 1)
        bins = []
        for i in range(ph):
            for j in range(pw):
                acc = input.new_zeros(input.shape[1])
                for iy in range(grid_h):
                    y = y1 + i * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + j * bin_w + (ix + 0.5) * bin_w / grid_w
                        acc = acc + _roi_bilinear(plane, y, x)
                bins.append(acc / count)
        out.append(torch.stack(bins, dim=1).view(-1, ph, pw) if bins else input.new_zeros(input.shape[1], ph, pw))
    if not out:
        return input.new_zeros((0, input.shape[1], ph, pw))
    return torch.stack(out)


def _deform_bilinear(input: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """input[N, C, H, W] sampled at y, x of shape [N, C, ...]; 0 unless -1 < y < H and -1 < x < W,
    corners outside the map read 0. Differentiable in input, y and x."""
    n, c, height, width = input.shape
    inside = (y > -1) & (y < height) & (x > -1) & (x < width)
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0
    flat = input.reshape(n, c, height * width)

    def corner(yi: Tensor, xi: Tensor) -> Tensor:
        valid = inside & (yi >= 0) & (yi <= height - 1) & (xi >= 0) & (xi <= width - 1)
        index = (yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).long()
        value = flat.gather(2, index.reshape(n, c, -1)).reshape(y.shape)
        return torch.where(valid, value, torch.zeros_like(value))

    return ((1 - ly) * (1 - lx) * corner(y0, x0) + (1 - ly) * lx * corner(y0, x0 + 1)
            + ly * (1 - lx) * corner(y0 + 1, x0) + ly * lx * corner(y0 + 1, x0 + 1))


def deform_conv2d(
    input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None, stride=(1, 1), padding=(0, 0),
    dilation=(1, 1), mask: Tensor | None = None,
) -> Tensor:
    """torchvision.ops.deform_conv2d's semantics: sample every tap of every output pixel, then convolve."""
    n, c_in, _, _ = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    groups, taps = c_in // c_per_group, kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    out_h, out_w = offset.shape[2:]
    off = offset.reshape(n, offset_groups, taps, 2, out_h, out_w)
    tap_y = (torch.arange(kh) * dilation[0]).repeat_interleave(kw).to(offset)  # [K]
    tap_x = (torch.arange(kw) * dilation[1]).repeat(kh).to(offset)
    base_y = (torch.arange(out_h) * stride[0] - padding[0]).to(offset)  # [H_out]
    base_x = (torch.arange(out_w) * stride[1] - padding[1]).to(offset)
    y = base_y[:, None] + tap_y[:, None, None] + off[:, :, :, 0]  # [N, O, K, H_out, W_out]
    x = base_x[None, :] + tap_x[:, None, None] + off[:, :, :, 1]
    per_offset_group = c_in // offset_groups
    y = y.repeat_interleave(per_offset_group, dim=1)  # [N, C_in, K, H_out, W_out]
    x = x.repeat_interleave(per_offset_group, dim=1)
    columns = _deform_bilinear(input, y, x)
    if mask is not None:
        columns = columns * mask.reshape(n, offset_groups, taps, out_h, out_w).repeat_interleave(per_offset_group, 1)
    columns = columns.reshape(n, groups, c_per_group * taps, out_h * out_w)
    w = weight.reshape(groups, c_out // groups, c_per_group * taps)
    out = torch.einsum("gok,ngkp->ngop", w, columns).reshape(n, c_out, out_h, out_w)
    return out if bias is None else out + bias[None, :, None, None]
