"""nasx target assignment and focal loss against their peers, in one process.

    python benchmarks/bench_targets.py            # CPU, and CUDA when a GPU is there
    python benchmarks/bench_targets.py --quick    # fewer repeats

Peers: for fcos_targets the vectorised pure-torch form of the FCOS authors' code
(P x G broadcast, below); for match_anchors torchvision's box_iou + detection
Matcher; for atss_assign the authors' vectorised form (N x G distances, topk per
level, below); for sigmoid_focal_loss torchvision.ops.sigmoid_focal_loss with autograd.
Goals (speed-up on the same machine): CPU fcos_targets >= 10x at P = 22.3k
(800 x 1333, P3-P7), G = 50; CPU match_anchors >= 3x at N = 100k, G = 100; CPU
sigmoid_focal_loss fwd+bwd >= 2x at 20k x 80; CUDA fcos_targets >= 10x.
"""
from __future__ import annotations

import math
import sys

import torch

import nasx
from harness import compare, run_benchmark

INF = float("inf")


def fcos_vectorised(points, strides, size_ranges, gt_boxes, center_radius=1.5):
    """FCOS targets as the authors compute them: P x G tensors and an argmin over GTs."""
    if len(gt_boxes) == 0:
        n = len(points)
        return points.new_full((n,), -1, dtype=torch.int64), points.new_zeros(n, 4), points.new_zeros(n)
    xs, ys = points[:, 0, None], points[:, 1, None]  # (P, 1)
    x1, y1, x2, y2 = gt_boxes[None, :, 0], gt_boxes[None, :, 1], gt_boxes[None, :, 2], gt_boxes[None, :, 3]
    reg = torch.stack([xs - x1, ys - y1, x2 - xs, y2 - ys], dim=2)  # (P, G, 4)
    if center_radius is None:
        inside = reg.min(dim=2).values > 0
    else:
        half = (strides * center_radius)[:, None]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        sx1 = torch.where(cx - half > x1, cx - half, x1)
        sy1 = torch.where(cy - half > y1, cy - half, y1)
        sx2 = torch.where(cx + half > x2, x2, cx + half)
        sy2 = torch.where(cy + half > y2, y2, cy + half)
        inside = torch.stack([xs - sx1, ys - sy1, sx2 - xs, sy2 - ys], dim=2).min(dim=2).values > 0
    longest = reg.max(dim=2).values
    cared = (longest >= size_ranges[:, 0, None]) & (longest <= size_ranges[:, 1, None])
    area = ((x2 - x1) * (y2 - y1)).expand(len(points), -1).clone()
    area[~(inside & cared)] = INF
    min_area, gt_index = area.min(dim=1)
    fg = min_area != INF
    gt_index = torch.where(fg, gt_index, torch.full_like(gt_index, -1))
    reg = reg[torch.arange(len(points), device=points.device), gt_index.clamp(min=0)] * fg[:, None]
    lr, tb = reg[:, [0, 2]], reg[:, [1, 3]]
    centerness = torch.sqrt((lr.min(dim=1).values / lr.max(dim=1).values) * (tb.min(dim=1).values / tb.max(dim=1).values))
    return gt_index, reg, torch.where(fg, centerness, torch.zeros_like(centerness))


def atss_vectorised(anchors, num_anchors_per_level, gt_boxes, topk=9):
    """ATSS as the authors compute it (N x G distances and IoUs); mean/std in float64, shifted."""
    import torchvision.ops as tv

    num_gt = len(gt_boxes)
    ious = tv.box_iou(anchors, gt_boxes)  # (N, G)
    acx, acy = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    gcx, gcy = (gt_boxes[:, 0] + gt_boxes[:, 2]) / 2, (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2
    dx, dy = acx[:, None] - gcx[None], acy[:, None] - gcy[None]
    distances = torch.sqrt(dx * dx + dy * dy)
    candidates, start = [], 0
    for count in num_anchors_per_level:
        k = min(topk, count)
        candidates.append(distances[start : start + count].topk(k, dim=0, largest=False).indices + start)
        start += count
    cand = torch.cat(candidates)  # (K, G)
    cand_ious = ious[cand, torch.arange(num_gt, device=anchors.device)].double()
    shifted = cand_ious - cand_ious[:1]  # exact for equal IoUs (see nasx.ops.atss_assign)
    threshold = cand_ious[0] + shifted.mean(0) + shifted.std(0)
    is_pos = cand_ious >= threshold[None]
    cx, cy = acx[cand], acy[cand]
    inside = torch.stack([cx - gt_boxes[:, 0], cy - gt_boxes[:, 1], gt_boxes[:, 2] - cx, gt_boxes[:, 3] - cy]).amin(0) > 0.01
    is_pos &= inside
    masked = torch.full_like(ious, -INF)
    gt_col = torch.arange(num_gt, device=anchors.device).expand_as(cand)
    masked[cand[is_pos], gt_col[is_pos]] = ious[cand[is_pos], gt_col[is_pos]]
    value, index = masked.max(dim=1)
    bg = value == -INF
    return torch.where(bg, torch.full_like(index, -1), index), torch.where(bg, torch.zeros_like(value), value)


def fcos_scene(g: int, device: str, seed: int = 0, image=(800, 1333), strides=(8, 16, 32, 64, 128)):
    """All FCOS points of an image (P3-P7) with the authors' size ranges, and g GT boxes."""
    gen = torch.Generator().manual_seed(seed)
    bounds = [-1, 64, 128, 256, 512, INF]
    pts, st, rng = [], [], []
    for level, s in enumerate(strides):
        h, w = math.ceil(image[0] / s), math.ceil(image[1] / s)
        ys, xs = torch.meshgrid(torch.arange(h) * s + s // 2, torch.arange(w) * s + s // 2, indexing="ij")
        pts.append(torch.stack([xs.flatten(), ys.flatten()], 1).float())
        st.append(torch.full((h * w,), float(s)))
        rng.append(torch.tensor([[bounds[level], bounds[level + 1]]]).expand(h * w, 2))
    wh = torch.rand(g, 2, generator=gen) ** 2 * torch.tensor([image[1], image[0]]) * 0.6 + 8
    xy = torch.rand(g, 2, generator=gen) * (torch.tensor([image[1], image[0]]) - wh)
    gts = torch.cat([xy, xy + wh], 1)
    return tuple(t.to(device) for t in (torch.cat(pts), torch.cat(st), torch.cat(rng).float(), gts))


def anchors_and_gts(n: int, g: int, device: str, seed: int = 0, extent: float = 1333.0):
    gen = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=gen) * extent
    half = (torch.rand(n, 2, generator=gen) * 240 + 16) / 2
    anchors = torch.cat([centre - half, centre + half], 1)
    centre = torch.rand(g, 2, generator=gen) * extent
    half = (torch.rand(g, 2, generator=gen) * 300 + 10) / 2
    return anchors.to(device), torch.cat([centre - half, centre + half], 1).to(device)


def atss_scene(g: int, device: str, seed: int = 0, image=(800, 1333)):
    """One square anchor (8 x stride... scale 8) per FCOS point, levels P3-P7, and g GTs."""
    points, strides, _, gts = fcos_scene(g, device, seed, image)
    half = strides[:, None] * 4
    anchors = torch.cat([points - half, points + half], 1)
    counts = torch.unique_consecutive(strides, return_counts=True)[1].tolist()
    return anchors, counts, gts


def check_same(a, b, what):
    for x, y in zip(a, b):
        if not torch.equal(x, y):
            raise SystemExit(f"{what}: nasx and the peer disagree -- not timing a wrong answer")


def rows_for(device: str, quick: bool) -> list:
    import torchvision.ops as tv
    from torchvision.models.detection._utils import Matcher

    rows, reps = [], 3 if quick else 7
    cpu = device == "cpu"

    # fcos_targets
    points, strides, ranges, gts = fcos_scene(50, device)
    ours = nasx.ops.fcos_targets(points, strides, ranges, gts, 1.5)
    peer = fcos_vectorised(points, strides, ranges, gts, 1.5)
    check_same(ours[:2], peer[:2], "fcos_targets")
    torch.testing.assert_close(ours[2], peer[2])
    rows.append(compare("fcos_targets", f"P={len(points)}, G=50", lambda: nasx.ops.fcos_targets(points, strides, ranges, gts, 1.5),
                        "vectorised torch", lambda: fcos_vectorised(points, strides, ranges, gts, 1.5), device,
                        goal=10, repeats=reps))
    _, _, _, many = fcos_scene(1000, device, seed=1)
    rows.append(compare("fcos_targets", f"P={len(points)}, G=1000", lambda: nasx.ops.fcos_targets(points, strides, ranges, many, 1.5),
                        "vectorised torch", lambda: fcos_vectorised(points, strides, ranges, many, 1.5), device,
                        repeats=3))
    batch = torch.stack([fcos_scene(50, device, seed=s)[3] for s in range(8)])
    counts = torch.randint(10, 51, (8,), generator=torch.Generator().manual_seed(0)).to(device)
    rows.append(compare("fcos_targets_batched", "8 images, G<=50",
                        lambda: nasx.ops.fcos_targets_batched(points, strides, ranges, batch, counts, 1.5),
                        "vectorised per image",
                        lambda: [fcos_vectorised(points, strides, ranges, batch[i, : counts[i]], 1.5) for i in range(8)],
                        device, repeats=reps))

    # match_anchors
    n = 100_000
    anchors, gt = anchors_and_gts(n, 100, device)
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)

    def tv_match():
        q = tv.box_iou(gt, anchors)
        return matcher(q), q.max(dim=0).values

    check_same(nasx.ops.match_anchors(anchors, gt, 0.5, 0.4, True), tv_match(), "match_anchors")
    rows.append(compare("match_anchors", f"N={n}, G=100", lambda: nasx.ops.match_anchors(anchors, gt, 0.5, 0.4, True),
                        "torchvision Matcher", tv_match, device, goal=3 if cpu else None, repeats=reps))

    # atss_assign
    anchors, counts_per_level, gt = atss_scene(50, device)
    check_same(nasx.ops.atss_assign(anchors, counts_per_level, gt, 9), atss_vectorised(anchors, counts_per_level, gt, 9),
               "atss_assign")
    rows.append(compare("atss_assign", f"N={len(anchors)}, G=50", lambda: nasx.ops.atss_assign(anchors, counts_per_level, gt, 9),
                        "vectorised torch", lambda: atss_vectorised(anchors, counts_per_level, gt, 9), device, repeats=reps))

    # sigmoid_focal_loss
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(20_000, 80, generator=gen) * 3).to(device)
    labels = (torch.rand(20_000, 80, generator=gen) < 0.01).float().to(device)
    torch.testing.assert_close(nasx.ops.sigmoid_focal_loss(logits, labels, reduction="sum"),
                               tv.sigmoid_focal_loss(logits, labels, reduction="sum"))

    def fwd_bwd(fn):
        def run():
            x = logits.detach().requires_grad_()
            fn(x, labels, reduction="sum").backward()
            return x.grad
        return run

    rows.append(compare("sigmoid_focal_loss", "20000 x 80, forward", lambda: nasx.ops.sigmoid_focal_loss(logits, labels),
                        "torchvision", lambda: tv.sigmoid_focal_loss(logits, labels), device, repeats=reps))
    rows.append(compare("sigmoid_focal_loss", "20000 x 80, fwd+bwd", fwd_bwd(nasx.ops.sigmoid_focal_loss), "torchvision",
                        fwd_bwd(tv.sigmoid_focal_loss), device, goal=2 if cpu else None, repeats=reps))
    return rows


def main(argv=None) -> int:
    try:
        import torchvision  # noqa: F401
    except ImportError:  # pragma: no cover
        sys.exit("bench_targets compares against torchvision: pip install torchvision")
    return run_benchmark("targets", "nasx target assignment and focal loss vs peers", rows_for, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
