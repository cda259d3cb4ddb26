"""FCOS training throughput and inference latency on CPU, and the share of a step in nasx ops.

    python benchmarks/bench_train.py            # writes benchmarks/results/train-cpu.json
    python benchmarks/bench_train.py --quick    # fewer steps and repeats (train-quick-cpu.json)
    python benchmarks/bench_train.py --no-write # print only

The model: FCOS with the MobileNetV2 backbone (BN), an FPN of 64 channels, 8 classes, at
320 x 320, built as ``nasx train --detector fcos --backbone mobilenet_v2 --size 320`` builds it
(FCOS' own regression ranges). The data: fixed synthetic batches of 8 random
images with 1-6 random GT boxes each (loading is bench_data.py's business, not this one's).

Rows:
  * training: SGD steps (forward, the real FCOS losses, backward, gradient clipping, update),
    median step time after warm-up, and images/s;
  * the time per step inside the ops nasx provides to that step -- ``fcos_targets_batched``
    and ``sigmoid_focal_loss`` (forward and backward) -- against the SAME step with pure-torch
    peers swapped in: the vectorised P x G form of the FCOS authors' code looped over the
    images (``fcos_vectorised`` from bench_targets.py) and ``torchvision.ops.sigmoid_focal_loss``;
  * inference latency at batch 1 (eval mode, post-processing included) with ``nasx.ops.batched_nms``
    and with ``torchvision.ops.batched_nms``, via ``nasx.evaluate.measure_latency``, and the time
    inside NMS.

The peers are swapped in by replacing the names nasx/models/detectors/fcos.py and postprocess.py
imported (restored afterwards); both variants run through the same timing wrappers, start from the
same weights and see the same batches. Before anything is timed the two variants are checked to
agree: the same targets, the same losses and gradients on one batch, the same detections.

Goals (ratios on the same machine, this run): the nasx ops take less time per training step than
the peers (>= 1x), and NMS too (>= 1x). The share of the step in the ops is recorded, not a goal:
on a 320 x 320 MobileNetV2 FCOS the convolutions dominate either way.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

# As bench_conv_ops.py: on a shared machine spinning OpenMP threads steal the working ones' cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import nasx  # noqa: E402
import nasx.models.detectors.fcos as fcos_module  # noqa: E402
import nasx.models.detectors.postprocess as postprocess_module  # noqa: E402
from bench_targets import fcos_vectorised  # noqa: E402
from harness import Row, write_results  # noqa: E402
from nasx.evaluate import measure_latency  # noqa: E402
from nasx.spaces.detectors import build_detector  # noqa: E402
from nasx.train import build_sgd  # noqa: E402

try:
    import torchvision.ops as tv
except ImportError:  # pragma: no cover
    sys.exit("bench_train compares against torchvision: pip install torchvision")

SIZE, BATCH, NUM_CLASSES, FPN_CHANNELS, NORM = 320, 8, 8, 64, "bn"
LR, GRAD_CLIP = 0.01, 10.0  # nasx train's defaults: SGD, momentum 0.9, clipping at 10


# -- the peers ---------------------------------------------------------------------------------
def fcos_targets_looped(points, strides, size_ranges, gt_boxes, gt_valid, center_radius=1.5):
    """``nasx.ops.fcos_targets_batched`` (per-image counts) as the FCOS authors' vectorised code, per image."""
    if gt_valid.dtype == torch.bool:
        raise NotImplementedError("fcos_targets_looped takes per-image GT counts, as FCOS.losses passes them")
    per_image = [fcos_vectorised(points, strides, size_ranges, gt_boxes[i, : int(n)], center_radius)
                 for i, n in enumerate(gt_valid.tolist())]
    return tuple(torch.stack(t) for t in zip(*per_image))


VARIANTS = {
    "nasx ops": {"fcos_targets_batched": nasx.ops.fcos_targets_batched,
                 "sigmoid_focal_loss": nasx.ops.sigmoid_focal_loss, "batched_nms": nasx.ops.batched_nms},
    "pure-torch peers": {"fcos_targets_batched": fcos_targets_looped,
                         "sigmoid_focal_loss": tv.sigmoid_focal_loss, "batched_nms": tv.batched_nms},
}
TRAIN_OPS = ("fcos_targets_batched", "sigmoid_focal_loss")
PATCHED = {"fcos_targets_batched": fcos_module, "sigmoid_focal_loss": fcos_module, "batched_nms": postprocess_module}


# -- timing inside the ops ---------------------------------------------------------------------
class OpClock:
    """Seconds spent inside each op (forward and backward) since the last reset, and calls."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.sizes: dict[str, tuple] = {}  # the shape of each op's first argument, last call
        self._bwd_start: dict[str, float] = {}

    def total_ms(self, names) -> float:
        return sum(v for k, v in self.seconds.items() if k.split(" ")[0] in names) * 1e3


class _BackwardMark(torch.autograd.Function):
    """Identity; in backward it starts (``start=True``, placed on an op's output, so it runs first)
    or stops (placed on the op's input, so it runs right after the op's own backward) the op's clock.

    The CPU autograd engine runs the ready node created last first, so every node between the
    two markers -- the op's own, and only those -- runs between their backwards."""

    @staticmethod
    def forward(ctx, x, clock, name, start):
        ctx.clock, ctx.name, ctx.start = clock, name, start
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        clock, now = ctx.clock, time.perf_counter()
        if ctx.start:
            clock._bwd_start[ctx.name] = now
        else:
            clock.seconds[f"{ctx.name} bwd"] += now - clock._bwd_start.pop(ctx.name)
        return grad, None, None, None


def timed(fn, clock: OpClock, name: str):
    """fn with its forward time (and, when its first argument needs a gradient, its backward's) on clock."""

    def wrapper(*args, **kwargs):
        first, rest = args[0], args[1:]
        track_bwd = torch.is_grad_enabled() and first.requires_grad
        if track_bwd:
            first = _BackwardMark.apply(first, clock, name, False)
        start = time.perf_counter()
        out = fn(first, *rest, **kwargs)
        clock.seconds[f"{name} fwd"] += time.perf_counter() - start
        clock.calls[name] += 1
        clock.sizes[name] = tuple(first.shape)
        if track_bwd:
            out = _BackwardMark.apply(out, clock, name, True)
        return out

    return wrapper


@contextmanager
def use_ops(variant: str, clock: OpClock):
    """Replace the op names fcos.py and postprocess.py imported by ``variant``'s, timed; restore them."""
    saved = {name: getattr(module, name) for name, module in PATCHED.items()}
    for name, fn in saved.items():
        if fn is not VARIANTS["nasx ops"][name]:
            raise SystemExit(f"bench_train: {PATCHED[name].__name__}.{name} is not nasx.ops.{name} -- "
                             "the detector no longer imports it by that name; update this benchmark")
    try:
        for name, module in PATCHED.items():
            setattr(module, name, timed(VARIANTS[variant][name], clock, name))
        yield
    finally:
        for name, fn in saved.items():
            setattr(PATCHED[name], name, fn)


# -- model and data ----------------------------------------------------------------------------
def build_model() -> nn.Module:
    torch.manual_seed(0)
    return build_detector("fcos", backbone="mobilenet_v2", num_classes=NUM_CLASSES, fpn_channels=FPN_CHANNELS,
                          norm=NORM)


def synthetic_batches(n: int, seed: int = 0) -> list:
    """n batches of (images [BATCH, 3, SIZE, SIZE], image_sizes, targets with 1-6 random boxes each)."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        images = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)
        targets = []
        for _ in range(BATCH):
            g = int(torch.randint(1, 7, (1,), generator=gen))
            wh = torch.rand(g, 2, generator=gen) * (SIZE * 0.75 - 16) + 16
            xy = torch.rand(g, 2, generator=gen) * (SIZE - wh)
            targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                            "labels": torch.randint(0, NUM_CLASSES, (g,), generator=gen)})
        batches.append((images, [(SIZE, SIZE)] * BATCH, targets))
    return batches


def train_step(model, optimizer, batch) -> dict:
    images, sizes, targets = batch
    losses = model(images, sizes, targets)
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    return losses


# -- agreement before timing -------------------------------------------------------------------
def check_agreement(model, state, batch, image) -> None:
    """Same targets, losses, gradients and detections with either variant, or exit."""
    clock = OpClock()
    images, sizes, targets = batch
    captured = []

    def capture(*args):  # the arguments FCOS.losses passes to the targets op
        captured.append(args)
        return nasx.ops.fcos_targets_batched(*args)

    model.load_state_dict(state)
    model.train()
    fcos_module.fcos_targets_batched = capture
    try:
        with torch.no_grad():
            model(images, sizes, targets)
    finally:
        fcos_module.fcos_targets_batched = nasx.ops.fcos_targets_batched
    points, strides, ranges, gt_boxes, counts, radius = captured[0]
    ours = nasx.ops.fcos_targets_batched(points, strides, ranges, gt_boxes, counts, radius)
    peer = fcos_targets_looped(points, strides, ranges, gt_boxes, counts, radius)
    if not (torch.equal(ours[0], peer[0]) and torch.equal(ours[1], peer[1])):
        raise SystemExit("fcos targets: nasx and the peer disagree -- not timing a wrong answer")
    torch.testing.assert_close(ours[2], peer[2])
    if int((ours[0] >= 0).sum()) == 0:
        raise SystemExit("bench_train: the synthetic batch has no foreground point; the loss check would be empty")

    results = {}
    for variant in VARIANTS:
        model.load_state_dict(state)
        model.train()
        model.zero_grad(set_to_none=True)
        with use_ops(variant, clock):
            losses = model(images, sizes, targets)
            sum(losses.values()).backward()
            model.eval()
            with torch.no_grad():
                dets = model(image)
        results[variant] = ({k: v.detach() for k, v in losses.items()},
                            [p.grad.clone() for p in model.parameters() if p.grad is not None], dets)
    (l0, g0, d0), (l1, g1, d1) = results.values()
    for k in l0:
        torch.testing.assert_close(l0[k], l1[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"loss {k}: {m}")
    if len(g0) != len(g1):
        raise SystemExit("bench_train: the variants give gradients to different parameters")
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(d0, d1):
        if not all(torch.equal(a[f], b[f]) for f in ("boxes", "scores", "labels")):
            raise SystemExit("detections: nasx NMS and torchvision NMS disagree -- not timing a wrong answer")
    model.load_state_dict(state)


# -- measurements ------------------------------------------------------------------------------
def measure_training(model, state, batches, warmup: int, steps: int, rounds: int) -> dict:
    """Per variant: step times and ms in the ops per step, over ``rounds`` alternating blocks."""
    out = {v: {"step_s": [], "ops_ms": [], "per_op_ms": defaultdict(list)} for v in VARIANTS}
    trained = None
    for _ in range(rounds):
        for variant in VARIANTS:
            model.load_state_dict(state)
            model.train()
            optimizer = build_sgd(model, lr=LR)
            clock = OpClock()
            with use_ops(variant, clock):
                for i in range(warmup + steps):
                    clock.reset()
                    start = time.perf_counter()
                    train_step(model, optimizer, batches[i % len(batches)])
                    took = time.perf_counter() - start
                    if i < warmup:
                        continue
                    rec = out[variant]
                    rec["step_s"].append(took)
                    rec["ops_ms"].append(clock.total_ms(TRAIN_OPS))
                    for key, sec in clock.seconds.items():
                        rec["per_op_ms"][key].append(sec * 1e3)
                    rec["sizes"] = dict(clock.sizes)
            if trained is None:
                trained = copy.deepcopy(model.state_dict())
    for rec in out.values():
        rec["step_ms"] = statistics.median(rec["step_s"]) * 1e3
        rec["op_ms"] = statistics.median(rec["ops_ms"])
        rec["per_op"] = {k: statistics.median(v) for k, v in sorted(rec["per_op_ms"].items())}
    out["trained_state"] = trained
    return out


def measure_inference(model, image, warmup: int, repeats: int, rounds: int) -> dict:
    out = {v: {"samples": [], "nms_ms": []} for v in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            clock = OpClock()
            with use_ops(variant, clock):
                report = measure_latency(model, image, device="cpu", warmup=warmup, repeats=repeats)
            out[variant]["samples"] += report.samples_ms
            out[variant]["nms_ms"].append(clock.total_ms(["batched_nms"]) / clock.calls["batched_nms"])
            out[variant]["nms_boxes"] = clock.sizes["batched_nms"][0]
    for rec in out.values():
        rec["latency_ms"] = statistics.median(rec["samples"])
        rec["nms_ms"] = statistics.median(rec["nms_ms"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update benchmarks/results/")
    args = parser.parse_args(argv)
    warmup, steps, rounds = (1, 2, 1) if args.quick else (2, 8, 2)
    lat_warmup, lat_repeats = (2, 5) if args.quick else (3, 20)

    model = build_model()
    state = copy.deepcopy(model.state_dict())
    batches = synthetic_batches(3)
    image = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    check_agreement(model, state, batches[0], image)
    print("agreement: same targets, losses, gradients and detections with nasx ops and with the peers")

    train = measure_training(model, state, batches, warmup, steps, rounds)
    model.load_state_dict(train.pop("trained_state"))  # inference on the weights after a few steps
    infer = measure_inference(model, image, lat_warmup, lat_repeats, rounds)

    nasx_t, peer_t = train["nasx ops"], train["pure-torch peers"]
    focal_shape = list(nasx_t["sizes"]["sigmoid_focal_loss"])  # (B, P, K)
    title = (f"FCOS MobileNetV2 {SIZE}x{SIZE}, batch {BATCH}, {NUM_CLASSES} classes, FPN {FPN_CHANNELS}, on cpu "
             f"({torch.get_num_threads()} threads, torch {torch.__version__}); {steps * rounds} timed steps per variant")
    print(f"\n{title}")
    header = f"{'variant':<18}{'step ms':>10}{'ops ms/step':>13}{'share %':>9}{'images/s':>10}{'ops peer/nasx':>15}"
    print(header)
    print("-" * len(header))
    for name, rec in train.items():
        ratio = rec["op_ms"] / nasx_t["op_ms"]
        print(f"{name:<18}{rec['step_ms']:>10.1f}{rec['op_ms']:>13.2f}{100 * rec['op_ms'] / rec['step_ms']:>9.2f}"
              f"{BATCH / (rec['step_ms'] / 1e3):>10.2f}{ratio:>14.2f}x")
    print("per op, ms per step (median): " + "; ".join(
        f"{k}: {nasx_t['per_op'][k]:.2f} vs {peer_t['per_op'][k]:.2f}" for k in nasx_t["per_op"]))

    n_nms = infer["nasx ops"]["nms_boxes"]
    print(f"\ninference latency, batch 1, eval mode with post-processing ({n_nms} boxes into NMS)")
    header = f"{'NMS':<18}{'latency ms':>12}{'NMS ms':>10}{'NMS peer/nasx':>15}"
    print(header)
    print("-" * len(header))
    for name, label in (("nasx ops", "nasx"), ("pure-torch peers", "torchvision")):
        rec = infer[name]
        print(f"{label:<18}{rec['latency_ms']:>12.2f}{rec['nms_ms']:>10.3f}"
              f"{rec['nms_ms'] / infer['nasx ops']['nms_ms']:>14.2f}x")

    case = f"{SIZE}px, batch {BATCH}"
    rows = [
        Row("train step", case, nasx_t["step_ms"], "pure-torch peers", peer_t["step_ms"],
            extra={"images_per_s": BATCH / (nasx_t["step_ms"] / 1e3),
                   "peer_images_per_s": BATCH / (peer_t["step_ms"] / 1e3),
                   "steps": steps * rounds, "warmup_steps": warmup}),
        Row("ops in train step", "fcos targets + focal loss fwd/bwd", nasx_t["op_ms"], "pure-torch peers",
            peer_t["op_ms"], goal=1,
            extra={"share": nasx_t["op_ms"] / nasx_t["step_ms"], "peer_share": peer_t["op_ms"] / peer_t["step_ms"],
                   "per_op_ms": nasx_t["per_op"], "peer_per_op_ms": peer_t["per_op"],
                   "focal_loss_shape": focal_shape,
                   "gts_per_batch": [sum(len(t["boxes"]) for t in b[2]) for b in batches]}),
        Row("inference latency", f"{SIZE}px, batch 1, with NMS", infer["nasx ops"]["latency_ms"], "torchvision NMS",
            infer["pure-torch peers"]["latency_ms"], extra={"repeats": lat_repeats * rounds}),
        Row("batched_nms", f"{n_nms} boxes, in inference", infer["nasx ops"]["nms_ms"], "torchvision",
            infer["pure-torch peers"]["nms_ms"], goal=1),
    ]
    missed = [r for r in rows if r.met is False]
    if missed:
        print(f"\n{len(missed)} speed goal(s) missed on this run: " + ", ".join(f"{r.op} {r.case}" for r in missed))
    if not args.no_write:
        print("results:", write_results("train" + ("-quick" if args.quick else ""), "cpu", rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
