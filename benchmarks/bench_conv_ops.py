"""nasx roi_align and deform_conv2d against torchvision.ops, in one process.

    python benchmarks/bench_conv_ops.py            # CPU, and CUDA when a GPU is there
    python benchmarks/bench_conv_ops.py --quick    # fewer repeats

Goals (speed-up over torchvision on the same machine, forward + backward):
CPU roi_align (512 RoIs, 256 channels) >= 1.5x; CPU deform_conv2d at 2 x 64 x 64 x 64,
64 channels, 3x3: dense >= 2x, depthwise >= 10x; CUDA >= 1x.
"""
from __future__ import annotations

import os
import sys

# On a shared, loaded machine, OpenMP threads that spin while waiting take the cores
# from the threads doing the work (measured here: nasx's 2-thread depthwise fwd+bwd
# 2x slower under the default ACTIVE policy). Both nasx and torchvision run under the
# same policy in this process; set OMP_WAIT_POLICY=ACTIVE to measure the other way.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import nasx  # noqa: E402
from harness import compare, run_benchmark  # noqa: E402

try:
    import torchvision.ops as tv
except ImportError:  # pragma: no cover
    sys.exit("bench_conv_ops compares against torchvision: pip install torchvision")


def rois_case(device, num_rois=512, channels=256, seed=0):
    """An FPN level at stride 16 of two 800 x 1333 images, with proposal-like boxes."""
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(2, channels, 50, 84, generator=g)
    centre = torch.rand(num_rois, 2, generator=g) * torch.tensor([1333.0, 800.0])
    half = torch.rand(num_rois, 2, generator=g) * 150 + 8
    idx = torch.randint(0, 2, (num_rois, 1), generator=g).float()
    rois = torch.cat([idx, centre - half, centre + half], 1)
    return feat.to(device), rois.to(device)


def deform_case(device, depthwise, use_mask=True, batch=2, channels=64, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=g)
    offset = torch.randn(batch, 18, size, size, generator=g) * 2
    weight = torch.randn(channels, 1 if depthwise else channels, 3, 3, generator=g) * 0.1
    mask = torch.rand(batch, 9, size, size, generator=g) if use_mask else None
    bias = torch.randn(channels, generator=g)
    to = lambda t: None if t is None else t.to(device).requires_grad_()  # noqa: E731
    return dict(input=to(x), offset=to(offset), weight=to(weight), bias=to(bias), padding=1, mask=to(mask))


def fwd_bwd(fn, tensors, grad):
    def run():
        for t in tensors:
            t.grad = None
        fn().backward(grad)
    return run


def grads(fn, tensors, grad):
    fwd_bwd(fn, tensors, grad)()
    return [t.grad.clone() for t in tensors]


def check_close(a, b, what, exact=False):
    for x, y in zip(a, b):
        ok = torch.equal(x, y) if exact else torch.allclose(x, y, rtol=1e-3, atol=1e-3)
        if not ok:
            raise SystemExit(f"{what}: nasx and torchvision disagree -- not timing a wrong answer")


def rows_for(device, quick):
    reps = 3 if quick else 7
    rows = []
    feat, rois = rois_case(device)
    feat.requires_grad_()
    args = ((7, 7), 1 / 16, 2, True)
    ours = lambda: nasx.ops.roi_align(feat, rois, *args)  # noqa: E731
    theirs = lambda: tv.roi_align(feat, rois, *args)  # noqa: E731
    grad = torch.randn(512, 256, 7, 7, device=device)
    check_close([ours()] + grads(ours, [feat], grad), [theirs()] + grads(theirs, [feat], grad), "roi_align",
                exact=device == "cpu")
    rows.append(compare("roi_align", "512 RoIs, 256 ch, fwd", ours, "torchvision", theirs, device, repeats=reps))
    rows.append(compare("roi_align", "512 RoIs, 256 ch, fwd+bwd", fwd_bwd(ours, [feat], grad), "torchvision",
                        fwd_bwd(theirs, [feat], grad), device, goal=1.5 if device == "cpu" else 1, repeats=reps))
    for name, depthwise, use_mask, goal in (("dense v2", False, True, 2), ("dense v1", False, False, None),
                                            ("depthwise v2", True, True, 10), ("depthwise v1", True, False, None)):
        case = deform_case(device, depthwise, use_mask)
        tensors = [t for t in case.values() if isinstance(t, torch.Tensor)]
        ours = lambda c=case: nasx.ops.deform_conv2d(**c)  # noqa: E731
        theirs = lambda c=case: tv.deform_conv2d(**c)  # noqa: E731
        grad = torch.randn(2, 64, 64, 64, device=device)
        check_close([ours()] + grads(ours, tensors, grad), [theirs()] + grads(theirs, tensors, grad),
                    f"deform_conv2d {name}")
        if device == "cuda":
            goal = 1 if goal else None
        rows.append(compare("deform_conv2d", f"{name}, fwd", ours, "torchvision", theirs, device, repeats=reps))
        rows.append(compare("deform_conv2d", f"{name}, fwd+bwd", fwd_bwd(ours, tensors, grad), "torchvision",
                            fwd_bwd(theirs, tensors, grad), device, goal=goal, repeats=reps))
    return rows


def rows_with_policy(device, quick):
    rows = rows_for(device, quick)
    for r in rows:
        r.extra["omp_wait_policy"] = os.environ["OMP_WAIT_POLICY"]
    return rows


def main(argv=None) -> int:
    return run_benchmark("conv_ops", "nasx vs torchvision.ops", rows_with_policy, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
