"""torchvision's own detectors with and without nasx's ops (``nasx.torchvision_ops``): a training step
and inference, and the time inside the routed ops, in one run.

    python benchmarks/bench_torchvision_switch.py             # writes benchmarks/results/torchvision_switch-cpu.json
    python benchmarks/bench_torchvision_switch.py --quick     # fewer steps (torchvision_switch-quick-cpu.json)
    python benchmarks/bench_torchvision_switch.py --no-write  # print only
    python benchmarks/bench_torchvision_switch.py --device cuda

The models: ``fasterrcnn_resnet50_fpn``, ``retinanet_resnet50_fpn`` and ``fcos_resnet50_fpn`` from
``torchvision.models.detection``, ``weights=None, weights_backbone=None``, 91 classes, their transform
set to ``min_size = max_size = SIZE`` (320): the images are SIZE x SIZE, so it resizes nothing.
RetinaNet's and FCOS's score thresholds are lowered (0.005, 0.05) because their random heads start at
the focal-loss prior of 0.01 and would otherwise hand NMS nothing; Faster R-CNN keeps its defaults.
Each model is run unchanged twice per round: plain ("torchvision") and inside ``use_nasx_ops()``
("nasx"); the rounds alternate, in one process.

The data: one fixed batch of BATCH random images with 1-6 random GT boxes each (training), one image
(inference).

Rows, per model:
  * training step: forward, the model's own losses, backward (gradients zeroed before each step, no
    optimizer update and BatchNorm in eval mode, so every step sees the same weights; the
    sampling is re-seeded per step, so both variants sample the same anchors and RoIs);
  * the time per step inside each routed op, by category -- ``nms`` (batched_nms), ``box_iou``
    (the IoU matrices the matchers take, incl. ``rpn.box_similarity``), ``matcher``
    (``Matcher.__call__``; routed: nasx's ``match_anchors``, which recomputes the IoU from the
    boxes), ``roi_align`` (what ``MultiScaleRoIAlign`` calls per level, forward and backward),
    ``focal_loss`` (forward and backward) -- their total and share of the step;
  * inference at batch 1 (eval mode, no gradient): latency and the time inside the routed ops.

How the ops are timed: for the measurement, the attributes the switch routes (or, plain, the same
attributes holding torchvision's functions) are wrapped by timers and restored afterwards; a
backward is timed between autograd markers placed on the op's output and input (as bench_train.py
does). On CUDA every timed call is synchronised before and after.

Before anything is timed the two variants are checked to agree, or the benchmark exits: the same
eval-mode detections (boxes, labels; scores within 1e-6) and training losses within 1e-5.

No speed goal: the times, shares and ratios (torchvision / nasx) are recorded.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

# As bench_train.py: on a shared machine spinning OpenMP threads steal the working ones' cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import nasx  # noqa: E402
import nasx.torchvision_ops as tvo  # noqa: E402
from harness import Row, write_results  # noqa: E402

try:
    import torchvision.models.detection as detection
    import torchvision.models.detection._utils as det_utils
    import torchvision.ops.boxes as tv_boxes
    import torchvision.ops.poolers as tv_poolers
except ImportError:  # pragma: no cover
    sys.exit("bench_torchvision_switch runs torchvision's detectors: pip install torchvision")

SIZE, BATCH = 320, 2
MODELS = {
    "fasterrcnn_resnet50_fpn": lambda: detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=SIZE, max_size=SIZE),
    "retinanet_resnet50_fpn": lambda: detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=SIZE, max_size=SIZE, score_thresh=0.005),
    "fcos_resnet50_fpn": lambda: detection.fcos_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=SIZE, max_size=SIZE, score_thresh=0.05),
}
CATEGORIES = ("nms", "box_iou", "matcher", "roi_align", "focal_loss")
VARIANTS = ("torchvision", "nasx")


# -- timers --------------------------------------------------------------------------------------
class Clock:
    """Seconds inside each category (forward and backward) since the last reset, and calls."""

    def __init__(self, device: str):
        self.sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        self.reset()

    def reset(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.bwd_start: dict[str, float] = {}


class _BackwardMark(torch.autograd.Function):
    """Identity; its backward starts (on the op's output) or stops (on its input) the op's clock.
    The CPU autograd engine runs the most recently created ready node first, so only the op's own
    backward runs between the two marks."""

    @staticmethod
    def forward(ctx, x, clock, name, start):
        ctx.clock, ctx.name, ctx.start = clock, name, start
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.clock.sync()
        now = time.perf_counter()
        if ctx.start:
            ctx.clock.bwd_start[ctx.name] = now
        else:
            ctx.clock.seconds[ctx.name] += now - ctx.clock.bwd_start.pop(ctx.name)
        return grad, None, None, None


def timed(fn, clock: Clock, name: str, backward: bool = False):
    """fn with its time on clock; with ``backward``, also its backward's when its first argument needs a gradient."""

    def wrapper(*args, **kwargs):
        track = backward and torch.is_grad_enabled() and args[0].requires_grad
        if track:
            args = (_BackwardMark.apply(args[0], clock, name, False),) + args[1:]
        clock.sync()
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        clock.sync()
        clock.seconds[name] += time.perf_counter() - start
        clock.calls[name] += 1
        return _BackwardMark.apply(out, clock, name, True) if track else out

    return wrapper


def timed_method(method, clock: Clock, name: str):
    call = timed(method, clock, name)
    return lambda self, *args, **kwargs: call(self, *args, **kwargs)


@contextmanager
def instrumented(clock: Clock, model):
    """Wrap what the model reaches the ops through -- torchvision's functions, or nasx's while routed --
    with timers on clock; restore the attributes afterwards."""
    import torchvision.models.detection.fcos as tv_fcos
    import torchvision.models.detection.retinanet as tv_retinanet

    patches = [  # (owner, attribute, category, wrapper)
        (tv_boxes, "batched_nms", "nms", timed),
        (tv_boxes, "box_iou", "box_iou", timed),  # roi_heads.py, retinanet.py: box_ops.box_iou
        (tv_poolers, "roi_align", "roi_align", lambda f, c, n: timed(f, c, n, backward=True)),
        (tv_retinanet, "sigmoid_focal_loss", "focal_loss", lambda f, c, n: timed(f, c, n, backward=True)),
        (tv_fcos, "sigmoid_focal_loss", "focal_loss", lambda f, c, n: timed(f, c, n, backward=True)),
        (det_utils.Matcher, "__call__", "matcher", timed_method),
    ]
    saved = [(owner, attr, owner.__dict__[attr]) for owner, attr, _, _ in patches]
    rpn = getattr(model, "rpn", None)
    try:
        for owner, attr, category, wrap in patches:
            setattr(owner, attr, wrap(owner.__dict__[attr], clock, category))
        if rpn is not None:  # bound at construction; read through the switch's descriptor while routed
            rpn.box_similarity = timed(rpn.box_similarity, clock, "box_iou")
        yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)
        if rpn is not None:  # torchvision's box_iou (while routed the descriptor stores it for the routed one)
            rpn.box_similarity = tv_boxes.box_iou


@contextmanager
def variant_context(variant: str):
    if variant == "nasx":
        with tvo.use_nasx_ops():
            yield
    else:
        yield


# -- models and data -----------------------------------------------------------------------------
def build(name: str, device: str):
    torch.manual_seed(0)
    model = MODELS[name]().to(device)
    # BatchNorm (no pretrained backbone: nn.BatchNorm2d) in eval mode: training steps leave the weights
    # and statistics alone, so every step of either variant computes the same thing.
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


def synthetic_data(device: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, SIZE, SIZE, generator=gen) for _ in range(BATCH)]
    targets = []
    for _ in range(BATCH):
        g = int(torch.randint(1, 7, (1,), generator=gen))
        wh = torch.rand(g, 2, generator=gen) * (SIZE * 0.6 - 16) + 16
        xy = torch.rand(g, 2, generator=gen) * (SIZE - wh)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(1, 91, (g,), generator=gen).to(device)})
    image = torch.rand(3, SIZE, SIZE, generator=gen)
    return [i.to(device) for i in images], targets, [image.to(device)]


def train_step(model, images, targets, seed: int) -> dict:
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the samplers' stream: the same anchors and RoIs in both variants
    losses = model(images, targets)
    sum(losses.values()).backward()
    return {k: float(v.detach()) for k, v in losses.items()}


def infer(model, image):
    model.eval()
    with torch.no_grad():
        return model(image)


def check_agreement(name, model, images, targets, image) -> dict:
    results = {}
    for variant in VARIANTS:
        with variant_context(variant):
            results[variant] = (infer(model, image), train_step(model, images, targets, seed=100))
    (dets_tv, loss_tv), (dets_nx, loss_nx) = results["torchvision"], results["nasx"]
    for a, b in zip(dets_tv, dets_nx):
        if not (torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
                and torch.allclose(a["scores"], b["scores"], rtol=1e-6, atol=1e-7)):
            raise SystemExit(f"{name}: detections differ with nasx's ops -- not timing a wrong answer")
    for k, v in loss_tv.items():
        if abs(loss_nx[k] - v) > 1e-5 * abs(v) + 1e-6:
            raise SystemExit(f"{name}: loss {k} differs with nasx's ops ({loss_nx[k]} vs {v}) -- not timing a wrong answer")
    if not len(dets_tv[0]["boxes"]):
        raise SystemExit(f"{name}: no detections -- the inference check would be empty")
    return {"detections": len(dets_tv[0]["boxes"]), "losses": loss_tv, "nasx_losses": loss_nx}


# -- measurements --------------------------------------------------------------------------------
def measure(name, model, images, targets, image, device, steps, repeats, rounds) -> dict:
    out = {v: {"train_ms": [], "train_ops": defaultdict(list), "infer_ms": [], "infer_ops": defaultdict(list),
               "train_calls": {}, "infer_calls": {}} for v in VARIANTS}
    clock = Clock(device)
    for r in range(rounds):
        warm = 1 if r == 0 else 0  # check_agreement ran both variants once already
        for variant in VARIANTS:
            rec = out[variant]
            with variant_context(variant), instrumented(clock, model):
                for i in range(warm + steps):
                    clock.reset()
                    clock.sync()
                    start = time.perf_counter()
                    train_step(model, images, targets, seed=100 + i)
                    clock.sync()
                    took = time.perf_counter() - start
                    if i >= warm:
                        rec["train_ms"].append(took * 1e3)
                        for c in CATEGORIES:
                            rec["train_ops"][c].append(clock.seconds[c] * 1e3)
                        rec["train_calls"] = dict(clock.calls)
                for i in range(warm + repeats):
                    clock.reset()
                    clock.sync()
                    start = time.perf_counter()
                    infer(model, image)
                    clock.sync()
                    took = time.perf_counter() - start
                    if i >= warm:
                        rec["infer_ms"].append(took * 1e3)
                        for c in CATEGORIES:
                            rec["infer_ops"][c].append(clock.seconds[c] * 1e3)
                        rec["infer_calls"] = dict(clock.calls)
    for rec in out.values():
        for phase in ("train", "infer"):
            ops = rec[f"{phase}_ops"]
            per_run = [sum(ops[c][i] for c in CATEGORIES) for i in range(len(rec[f"{phase}_ms"]))]
            rec[f"{phase}_ops_total"] = per_run
            rec[f"{phase}"] = statistics.median(rec[f"{phase}_ms"])
            rec[f"{phase}_op"] = {c: statistics.median(ops[c]) for c in CATEGORIES}
            rec[f"{phase}_op_total"] = statistics.median(per_run)
    return out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def report(name: str, m: dict, agreement: dict, steps_total: int, repeats_total: int) -> list[Row]:
    tv, nx = m["torchvision"], m["nasx"]
    rows = []
    print(f"\n{name}, {SIZE}x{SIZE}: training step (batch {BATCH}, fwd + bwd) and inference (batch 1); "
          f"{steps_total} steps / {repeats_total} inferences per variant")
    header = f"{'ms':<26}{'nasx':>10}{'share %':>9}{'torchvision':>13}{'share %':>9}{'tv/nasx':>9}"
    print(header)
    print("-" * len(header))
    for phase, label in (("train", "train step"), ("infer", "inference")):
        a, b = nx[phase], tv[phase]
        for c in CATEGORIES:
            oa, ob = nx[f"{phase}_op"][c], tv[f"{phase}_op"][c]
            if oa == 0 and ob == 0:
                continue
            print(f"  {c:<24}{oa:>10.2f}{100 * oa / a:>9.2f}{ob:>13.2f}{100 * ob / b:>9.2f}{_ratio(ob, oa):>9}")
            rows.append(Row(c, f"{name}, in {label}, ms", oa, "torchvision", ob,
                            extra={"share": oa / a, "peer_share": ob / b,
                                   "calls": nx[f"{phase}_calls"].get(c, 0), "peer_calls": tv[f"{phase}_calls"].get(c, 0)}))
        ta, tb = nx[f"{phase}_op_total"], tv[f"{phase}_op_total"]
        print(f"  {'routed ops, total':<24}{ta:>10.2f}{100 * ta / a:>9.2f}{tb:>13.2f}{100 * tb / b:>9.2f}{_ratio(tb, ta):>9}")
        print(f"{label:<26}{a:>10.1f}{'':>9}{b:>13.1f}{'':>9}{_ratio(b, a):>9}")
        rows.append(Row("routed ops", f"{name}, in {label}, ms", ta, "torchvision", tb,
                        extra={"share": ta / a, "peer_share": tb / b,
                               "per_run_ms": [round(v, 3) for v in nx[f"{phase}_ops_total"]],
                               "peer_per_run_ms": [round(v, 3) for v in tv[f"{phase}_ops_total"]]}))
        rows.append(Row(label, f"{name}, {SIZE}px, batch {BATCH if phase == 'train' else 1}", a, "torchvision", b,
                        extra={"samples_ms": [round(v, 2) for v in nx[f"{phase}_ms"]],
                               "peer_samples_ms": [round(v, 2) for v in tv[f"{phase}_ms"]],
                               **({"agreement": agreement} if phase == "train" else {})}))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update benchmarks/results/")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not (torch.cuda.is_available() and nasx.cuda_enabled()):
        sys.exit("no CUDA GPU (or nasx was built without CUDA kernels)")
    steps, repeats, rounds = (1, 1, 1) if args.quick else (2, 3, 2)

    t0 = time.perf_counter()
    load = os.getloadavg()
    images, targets, image = synthetic_data(args.device)
    rows = []
    for name in MODELS:
        model = build(name, args.device)
        agreement = check_agreement(name, model, images, targets, image)
        m = measure(name, model, images, targets, image, args.device, steps, repeats, rounds)
        rows += report(name, m, agreement, steps * rounds, repeats * rounds)
        del model
    took = time.perf_counter() - t0
    print(f"\nagreement: the same detections and losses with and without nasx's ops, for every model; "
          f"total run time {took:.0f} s, load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, "
          f"{torch.get_num_threads()} threads")
    rows.append(Row("run", "whole benchmark", took * 1e3, "-", None,
                    extra={"size": SIZE, "batch": BATCH, "threads": torch.get_num_threads(),
                           "loadavg_start": load, "loadavg_end": os.getloadavg(),
                           "steps_per_variant": steps * rounds, "inferences_per_variant": repeats * rounds}))
    if not args.no_write:
        print("results:", write_results("torchvision_switch" + ("-quick" if args.quick else ""), args.device, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
