"""nasx box ops against torchvision.ops, in one process.

    python benchmarks/bench_boxes.py            # CPU, and CUDA when a GPU is there
    python benchmarks/bench_boxes.py --quick    # fewer sizes and repeats (make demo)

Goals (speed-up over torchvision on the same machine): CPU nms >= 10x at 20k boxes,
batched_nms (80 classes, 20k boxes) >= 2x, box_iou (100 x 100k) >= 3x; CUDA nms >= 1x
from 1k to 100k boxes.
"""
from __future__ import annotations

import sys

import torch

import nasx
from harness import compare, run_benchmark

try:
    import torchvision.ops as tv
except ImportError:  # pragma: no cover
    sys.exit("bench_boxes compares against torchvision: pip install torchvision")


def detections(n: int, device: str, seed: int = 0, extent: float = 1000.0):
    """Boxes like a detector's raw output: centres anywhere, sides 10-200 px, distinct
    uniform scores (torchvision orders equal scores arbitrarily, which would make the
    outputs incomparable)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * extent
    half = (torch.rand(n, 2, generator=g) * 190 + 10) / 2
    boxes = torch.cat([centre - half, centre + half], 1)
    scores = (torch.randperm(n, generator=g).float() + 0.5) / n
    classes = torch.randint(0, 80, (n,), generator=g)
    return boxes.to(device), scores.to(device), classes.to(device)


def check_same(a, b, what):
    if not torch.equal(a, b):
        raise SystemExit(f"{what}: nasx and torchvision disagree -- not timing a wrong answer")


def cpu_rows(quick: bool) -> list:
    rows, reps = [], 3 if quick else 7
    for n in ([20_000] if quick else [1_000, 5_000, 20_000]):
        b, s, _ = detections(n, "cpu")
        check_same(nasx.ops.nms(b, s, 0.5), tv.nms(b, s, 0.5), "nms")
        rows.append(compare("nms", f"{n} boxes", lambda: nasx.ops.nms(b, s, 0.5), "torchvision",
                            lambda: tv.nms(b, s, 0.5), "cpu", goal=10 if n == 20_000 else None, repeats=reps))
    b, s, c = detections(20_000, "cpu")
    check_same(nasx.ops.batched_nms(b, s, c, 0.5), tv.batched_nms(b, s, c, 0.5), "batched_nms")
    rows.append(compare("batched_nms", "20000 boxes, 80 classes", lambda: nasx.ops.batched_nms(b, s, c, 0.5),
                        "torchvision", lambda: tv.batched_nms(b, s, c, 0.5), "cpu", goal=2, repeats=reps))
    a, _, _ = detections(100, "cpu", seed=1)
    b, _, _ = detections(100_000, "cpu", seed=2)
    check_same(nasx.ops.box_iou(a, b), tv.box_iou(a, b), "box_iou")
    rows.append(compare("box_iou", "100 x 100000", lambda: nasx.ops.box_iou(a, b), "torchvision",
                        lambda: tv.box_iou(a, b), "cpu", goal=3, repeats=reps))
    rows.append(compare("generalized_box_iou", "100 x 100000", lambda: nasx.ops.generalized_box_iou(a, b),
                        "torchvision", lambda: tv.generalized_box_iou(a, b), "cpu", repeats=reps))
    if not quick:
        # torchvision has no Soft-NMS; the peer is the plain pure-torch loop users write.
        from nasx.ops import _reference as ref

        b, s, _ = detections(1_000, "cpu")
        rows.append(compare("soft_nms", "1000 boxes, gaussian", lambda: nasx.ops.soft_nms(b, s), "pure-torch loop",
                            lambda: ref.soft_nms(b, s), "cpu", repeats=3))
    return rows


def cuda_rows(quick: bool) -> list:
    rows = []
    for n in ([10_000] if quick else [1_000, 10_000, 30_000, 100_000]):
        b, s, c = detections(n, "cuda", extent=4000.0)
        check_same(nasx.ops.nms(b, s, 0.5), tv.nms(b, s, 0.5), "cuda nms")
        rows.append(compare("nms", f"{n} boxes", lambda: nasx.ops.nms(b, s, 0.5), "torchvision",
                            lambda: tv.nms(b, s, 0.5), "cuda", goal=1))
        rows.append(compare("batched_nms", f"{n} boxes, 80 classes", lambda: nasx.ops.batched_nms(b, s, c, 0.5),
                            "torchvision", lambda: tv.batched_nms(b, s, c, 0.5), "cuda"))
    a, _, _ = detections(1_000, "cuda", seed=1)
    b, _, _ = detections(100_000, "cuda", seed=2)
    rows.append(compare("box_iou", "1000 x 100000", lambda: nasx.ops.box_iou(a, b), "torchvision",
                        lambda: tv.box_iou(a, b), "cuda"))
    b, s, _ = detections(5_000, "cuda")
    rows.append(compare("soft_nms", "5000 boxes, gaussian", lambda: nasx.ops.soft_nms(b, s), "nasx CPU kernel",
                        lambda: nasx.ops.soft_nms(b.cpu(), s.cpu()), "cuda"))
    return rows


def main(argv=None) -> int:
    return run_benchmark("boxes", "nasx vs torchvision.ops",
                         lambda device, quick: cpu_rows(quick) if device == "cpu" else cuda_rows(quick), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
