"""Faster R-CNN R-50-FPN on CPU: one training step and inference latency, nasx's against torchvision's,
and the time in each one's ops -- matching, sampling, RoIAlign (forward and backward), NMS.

    python benchmarks/bench_two_stage.py            # writes benchmarks/results/two_stage-cpu.json
    python benchmarks/bench_two_stage.py --quick    # fewer steps and repeats (two_stage-quick-cpu.json)
    python benchmarks/bench_two_stage.py --no-write # print only

The models: ``nasx.spaces.detectors.build_faster_rcnn(backbone="resnet50", num_classes=90)`` and
torchvision's ``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)``, with
the same weights (torchvision's, copied into nasx's: both declare their parameters in the same order,
as tests/test_two_stage.py does). torchvision's model is called below its ``transform`` (no resizing
or normalisation; nasx's detector has none either): ``backbone`` -> ``rpn`` -> ``roi_heads``.

The data: one fixed batch of 2 random 512 x 512 images with 1-6 random GT boxes each (labels 0..89 for
nasx, +1 for torchvision, whose 0 is the background), and one 512 x 512 image for inference.

Rows:
  * training: forward, the RPN and R-CNN losses, and backward (gradients zeroed before each step, no
    optimizer update, so every step of either model sees the same weights and batch); the median step;
  * the time per step inside the ops by category, each side's own:
      matching   nasx ``match_anchors`` (rpn.py, roi_heads.py; IoU included) | torchvision ``box_iou``
                 (``rpn.box_similarity`` and ``box_ops.box_iou`` in roi_heads.py) + ``Matcher.__call__``
      sampling   nasx ``balanced_sample`` | torchvision ``BalancedPositiveNegativeSampler.__call__``
      roi_align  nasx ``roi_align`` (roi_pool.py) | ``torchvision.ops.poolers.roi_align`` (what
                 ``MultiScaleRoIAlign`` calls per level), forward and backward
      nms        nasx ``batched_nms`` (rpn.py, roi_heads.py) | torchvision ``box_ops.batched_nms``
    and their total, share of the step and the ratio torchvision / nasx;
  * inference at batch 1 (eval mode, no gradient): latency, and the time inside NMS and RoIAlign.

How: the names those modules look up are replaced by timing wrappers for the duration of a measurement
and restored afterwards (torchvision's matcher and sampler at class level, its ``box_iou`` bound into
``rpn.box_similarity`` on the instance). RoIAlign's backward is timed with bench_train.py's autograd
markers. The two models alternate in rounds, in one process.

Sampling is random and the two draw from different streams, so the sampled anchors and RoIs -- hence
the losses -- differ by sampling only. Before anything is timed, what is deterministic is checked to
agree, or the benchmark exits: eval-mode proposals and detections; the RPN's anchors, their matching
and the sampled counts; the pooled RoI features.

No speed goal: the shares and ratios are recorded. Speed is only ever compared as a ratio measured
in the same run (the machines are shared and noisy).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import contextmanager

# As bench_train.py: on a shared machine spinning OpenMP threads steal the working ones' cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import nasx  # noqa: E402
import nasx.models.detectors.roi_heads as nx_roi_heads  # noqa: E402
import nasx.models.detectors.roi_pool as nx_roi_pool  # noqa: E402
import nasx.models.detectors.rpn as nx_rpn  # noqa: E402
from bench_train import OpClock, timed  # noqa: E402
from harness import Row, write_results  # noqa: E402
from nasx.models.detectors.sampling import balanced_sample  # noqa: E402
from nasx.spaces.detectors import build_faster_rcnn  # noqa: E402

try:
    import torchvision.models.detection._utils as tv_utils
    import torchvision.ops.boxes as tv_boxes
    import torchvision.ops.poolers as tv_poolers
    from torchvision.models.detection import fasterrcnn_resnet50_fpn
    from torchvision.models.detection.image_list import ImageList
except ImportError:  # pragma: no cover
    sys.exit("bench_two_stage compares against torchvision: pip install torchvision")

SIZE, BATCH, NUM_CLASSES = 512, 2, 90
CATEGORIES = ("matching", "sampling", "roi_align", "nms")
INFER_OPS = ("nms", "roi_align")
VARIANTS = ("nasx", "torchvision")


# -- timing wrappers ---------------------------------------------------------------------------
def timed_call(fn, clock: OpClock, name: str):
    """fn with its (forward) time on clock, whatever its arguments; for the ops without a gradient."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        clock.seconds[f"{name} fwd"] += time.perf_counter() - start
        clock.calls[name] += 1
        return out

    return wrapper


def timed_method(method, clock: OpClock, name: str):
    """An unbound method timed as :func:`timed_call`, to set on its class."""
    call = timed_call(method, clock, name)
    return lambda self, *args, **kwargs: call(self, *args, **kwargs)


# (module or class, attribute, expected original, category, wrapper)
NASX_PATCHES = [
    (nx_rpn, "match_anchors", nasx.ops.match_anchors, "matching", timed_call),
    (nx_roi_heads, "match_anchors", nasx.ops.match_anchors, "matching", timed_call),
    (nx_rpn, "balanced_sample", balanced_sample, "sampling", timed_call),
    (nx_roi_heads, "balanced_sample", balanced_sample, "sampling", timed_call),
    (nx_roi_pool, "roi_align", nasx.ops.roi_align, "roi_align", timed),  # forward and backward
    (nx_rpn, "batched_nms", nasx.ops.batched_nms, "nms", timed_call),
    (nx_roi_heads, "batched_nms", nasx.ops.batched_nms, "nms", timed_call),
]
TV_PATCHES = [
    (tv_boxes, "box_iou", tv_boxes.box_iou, "matching", timed_call),  # roi_heads.py: box_ops.box_iou
    (tv_utils.Matcher, "__call__", tv_utils.Matcher.__call__, "matching", timed_method),
    (tv_utils.BalancedPositiveNegativeSampler, "__call__", tv_utils.BalancedPositiveNegativeSampler.__call__,
     "sampling", timed_method),
    (tv_poolers, "roi_align", tv_poolers.roi_align, "roi_align", timed),  # forward and backward
    (tv_boxes, "batched_nms", tv_boxes.batched_nms, "nms", timed_call),  # rpn.py, roi_heads.py: box_ops.batched_nms
]


@contextmanager
def instrumented(variant: str, clock: OpClock, tv_model: nn.Module):
    """Replace the op names ``variant``'s detector looks up by timed wrappers on clock; restore them."""
    patches = NASX_PATCHES if variant == "nasx" else TV_PATCHES
    for owner, attr, original, _, _ in patches:
        if owner.__dict__.get(attr) is not original:
            raise SystemExit(f"bench_two_stage: {owner.__name__}.{attr} is not what this benchmark patches -- "
                             "the detector no longer looks the op up by that name; update this benchmark")
    similarity = tv_model.rpn.box_similarity
    try:
        for owner, attr, original, category, wrap in patches:
            setattr(owner, attr, wrap(original, clock, category))
        if variant == "torchvision":  # rpn.py binds box_ops.box_iou at construction
            tv_model.rpn.box_similarity = timed_call(similarity, clock, "matching")
        yield
    finally:
        for owner, attr, original, _, _ in patches:
            setattr(owner, attr, original)
        tv_model.rpn.box_similarity = similarity


# -- models and data ---------------------------------------------------------------------------
def build_models() -> tuple[nn.Module, nn.Module]:
    """torchvision's Faster R-CNN R-50-FPN and nasx's, with torchvision's (random) weights in both."""
    torch.manual_seed(0)
    tv = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1)
    nx = build_faster_rcnn(backbone="resnet50", num_classes=NUM_CLASSES)
    tv_sd = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    nx_sd = nx.state_dict()
    nx_keys = [k for k in nx_sd if not k.endswith("num_batches_tracked")]
    if len(tv_sd) != len(nx_keys) or any(v.shape != nx_sd[k].shape for v, k in zip(tv_sd.values(), nx_keys)):
        raise SystemExit("bench_two_stage: nasx's and torchvision's Faster R-CNN no longer declare the same "
                         "parameters in the same order")
    nx.load_state_dict(dict(zip(nx_keys, tv_sd.values())), strict=False)
    n_tv = sum(p.numel() for p in tv.parameters() if p.requires_grad)
    n_nx = sum(p.numel() for p in nx.parameters() if p.requires_grad)
    if n_tv != n_nx:
        raise SystemExit(f"bench_two_stage: {n_nx} trainable parameters in nasx's model, {n_tv} in torchvision's")
    return nx, tv


def synthetic_batch(seed: int = 0):
    """(images [BATCH, 3, SIZE, SIZE], sizes, nasx targets, torchvision targets)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)
    nx_targets, tv_targets = [], []
    for _ in range(BATCH):
        g = int(torch.randint(1, 7, (1,), generator=gen))
        wh = torch.rand(g, 2, generator=gen) * (SIZE * 0.75 - 16) + 16
        xy = torch.rand(g, 2, generator=gen) * (SIZE - wh)
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(0, NUM_CLASSES, (g,), generator=gen)
        nx_targets.append({"boxes": boxes, "labels": labels})
        tv_targets.append({"boxes": boxes.clone(), "labels": labels + 1})
    return images, [(SIZE, SIZE)] * BATCH, nx_targets, tv_targets


def tv_forward(tv: nn.Module, images, sizes, targets=None):
    """torchvision's Faster R-CNN below its transform: losses in training mode, detections otherwise."""
    features = tv.backbone(images)
    proposals, rpn_losses = tv.rpn(ImageList(images, sizes), features, targets)
    dets, roi_losses = tv.roi_heads(features, proposals, sizes, targets)
    return {**rpn_losses, **roi_losses} if tv.training else dets


def train_step(variant: str, model: nn.Module, batch) -> dict:
    images, sizes, nx_targets, tv_targets = batch
    model.zero_grad(set_to_none=True)
    if variant == "nasx":
        losses = model(images, sizes, nx_targets)
    else:
        losses = tv_forward(model, images, sizes, tv_targets)
    sum(losses.values()).backward()
    return {k: float(v.detach()) for k, v in losses.items()}


def infer(variant: str, model: nn.Module, image):
    with torch.no_grad():
        return model(image) if variant == "nasx" else tv_forward(model, image, [tuple(image.shape[-2:])])


# -- agreement before timing -------------------------------------------------------------------
def check_agreement(nx: nn.Module, tv: nn.Module, batch, image) -> dict:
    """Eval-mode proposals and detections equal; in training mode the same anchors, matching, sampled
    counts and pooled features; or exit. Returns a few counts for the record."""
    images, sizes, nx_targets, tv_targets = batch
    nx.eval()
    tv.eval()
    record = {}
    with torch.no_grad():
        for imgs, szs in ((images, sizes), (image, [tuple(image.shape[-2:])])):
            tv_levels = tv.backbone(imgs)
            nx_levels = list(nx.levels(imgs).values())
            for a, b in zip(tv_levels.values(), nx_levels):
                torch.testing.assert_close(b, a)
            tv_props, _ = tv.rpn(ImageList(imgs, szs), tv_levels)
            nx_props, _ = nx.rpn(nx_levels, szs)
            tv_dets, _ = tv.roi_heads(tv_levels, tv_props, szs)
            nx_dets = nx(imgs, szs)
            for a, b in zip(tv_props, nx_props):
                if a.shape != b.shape or not torch.allclose(a, b, rtol=1.3e-6, atol=1e-5):
                    raise SystemExit("proposals: nasx and torchvision disagree -- not timing a wrong answer")
            for a, b in zip(tv_dets, nx_dets):
                if (a["boxes"].shape != b["boxes"].shape or not torch.equal(a["labels"] - 1, b["labels"])
                        or not torch.allclose(a["boxes"], b["boxes"], rtol=1.3e-6, atol=1e-5)
                        or not torch.allclose(a["scores"], b["scores"], rtol=1.3e-6, atol=1e-5)):
                    raise SystemExit("detections: nasx and torchvision disagree -- not timing a wrong answer")
            if min(len(p) for p in tv_props) < 100 or min(len(d["boxes"]) for d in tv_dets) == 0:
                raise SystemExit("bench_two_stage: too few proposals or no detection -- the check would be empty")
            record.setdefault("eval_proposals_per_image", [len(p) for p in tv_props])
            record.setdefault("eval_detections_per_image", [len(d["boxes"]) for d in tv_dets])

        # Training mode, the deterministic parts: anchors, matching (RPN and R-CNN rules), sampled
        # counts, and RoIAlign on the proposals.
        image_list = ImageList(images, sizes)
        tv_levels = tv.backbone(images)
        nx_levels = list(tv_levels.values())
        tv_anchors = tv.rpn.anchor_generator(image_list, nx_levels)
        nx_anchors = torch.cat(nx.rpn.anchor_generator([tuple(x.shape[-2:]) for x in nx_levels], images.device))
        torch.testing.assert_close(nx_anchors, tv_anchors[0])
        tv_props, _ = tv.rpn(image_list, tv_levels)
        for i, (nt, tt) in enumerate(zip(nx_targets, tv_targets)):
            for cand, (fg, bg, low), matcher in (
                    (nx_anchors, (0.7, 0.3, True), tv.rpn.proposal_matcher),
                    (torch.cat([tv_props[i], nt["boxes"]]), (0.5, 0.5, False), tv.roi_heads.proposal_matcher)):
                ours, _ = nasx.ops.match_anchors(cand, nt["boxes"], fg, bg, low)
                theirs = matcher(tv_boxes.box_iou(tt["boxes"], cand))
                if not torch.equal(ours, theirs):
                    raise SystemExit("matching: nasx and torchvision disagree -- not timing a wrong answer")
                num, frac = (256, 0.5) if low else (512, 0.25)
                pos, neg = balanced_sample(ours, num, frac)
                labels = (ours >= 0).to(torch.int64)
                labels[ours == -2] = -1
                tv_pos, tv_neg = tv_utils.BalancedPositiveNegativeSampler(num, frac)([labels])
                if (pos.numel(), neg.numel()) != (int(tv_pos[0].sum()), int(tv_neg[0].sum())):
                    raise SystemExit("sampling: nasx and torchvision sample different counts -- not timing a "
                                     "wrong answer")
                record.setdefault("sampled_pos_neg", []).append([pos.numel(), neg.numel()])
        pooled_tv = tv.roi_heads.box_roi_pool(tv_levels, tv_props, sizes)
        _, roi_levels, strides = nx._split(nx.levels(images))  # the levels and strides nasx's forward pools from
        pooled_nx = nx.roi_heads.box_pool(roi_levels, strides, tv_props)
        torch.testing.assert_close(pooled_nx, pooled_tv)
    return record


# -- measurements ------------------------------------------------------------------------------
def _median(values):
    return statistics.median(values) if values else 0.0


def measure_training(models: dict, batch, warmup: int, steps: int, rounds: int) -> dict:
    """Per variant, over ``rounds`` alternating blocks: step times and ms per step in each category."""
    out = {v: {"step_ms": [], "cat_ms": {}, "calls": {}, "losses": []} for v in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            model = models[variant]
            model.train()
            clock = OpClock()
            rec = out[variant]
            with instrumented(variant, clock, models["torchvision"]):
                for i in range(warmup + steps):
                    torch.manual_seed(100 + i)  # the sampling's stream (nasx's generator is None: the global one)
                    clock.reset()
                    start = time.perf_counter()
                    losses = train_step(variant, model, batch)
                    took = time.perf_counter() - start
                    if i < warmup:
                        continue
                    rec["step_ms"].append(took * 1e3)
                    rec["losses"].append(losses)
                    for key, sec in clock.seconds.items():
                        rec["cat_ms"].setdefault(key, []).append(sec * 1e3)
                    rec["calls"] = {k: v for k, v in clock.calls.items()}
            model.zero_grad(set_to_none=True)
    for rec in out.values():
        n = len(rec["step_ms"])
        for key in [f"{c} {d}" for c in CATEGORIES for d in ("fwd", "bwd")]:
            rec["cat_ms"].setdefault(key, [0.0] * n)
        rec["per_step_ops_ms"] = [sum(rec["cat_ms"][k][i] for k in rec["cat_ms"]) for i in range(n)]
        rec["step"] = _median(rec["step_ms"])
        rec["ops"] = _median(rec["per_step_ops_ms"])
        rec["cat_steps"] = {c: [rec["cat_ms"][f"{c} fwd"][i] + rec["cat_ms"][f"{c} bwd"][i] for i in range(n)]
                            for c in CATEGORIES}
        rec["cat"] = {c: _median(v) for c, v in rec["cat_steps"].items()}
        rec["roi_align_fwd"] = _median(rec["cat_ms"]["roi_align fwd"])
        rec["roi_align_bwd"] = _median(rec["cat_ms"]["roi_align bwd"])
        rec["mean_losses"] = {k: statistics.mean(s[k] for s in rec["losses"]) for k in rec["losses"][0]}
    return out


def measure_inference(models: dict, image, warmup: int, repeats: int, rounds: int) -> dict:
    out = {v: {"latency_ms": [], "nms_ms": [], "roi_align_ms": [], "calls": {}} for v in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            model = models[variant].eval()
            clock = OpClock()
            with instrumented(variant, clock, models["torchvision"]):
                for i in range(warmup + repeats):
                    clock.reset()
                    start = time.perf_counter()
                    infer(variant, model, image)
                    took = time.perf_counter() - start
                    if i < warmup:
                        continue
                    rec = out[variant]
                    rec["latency_ms"].append(took * 1e3)
                    rec["nms_ms"].append(clock.seconds["nms fwd"] * 1e3)
                    rec["roi_align_ms"].append(clock.seconds["roi_align fwd"] * 1e3)
                    rec["calls"] = dict(clock.calls)
    for rec in out.values():
        rec["ops_ms"] = [a + b for a, b in zip(rec["nms_ms"], rec["roi_align_ms"])]
        for key in ("latency_ms", "nms_ms", "roi_align_ms", "ops_ms"):
            rec[key.replace("_ms", "")] = _median(rec[key])
    return out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update benchmarks/results/")
    args = parser.parse_args(argv)
    warmup, steps, rounds = (1, 1, 1) if args.quick else (1, 3, 2)
    lat_warmup, lat_repeats = (1, 2) if args.quick else (1, 5)

    t0 = time.perf_counter()
    nx, tv = build_models()
    models = {"nasx": nx, "torchvision": tv}
    batch = synthetic_batch()
    image = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    try:
        agreement = check_agreement(nx, tv, batch, image)
    except AssertionError as e:
        raise SystemExit(f"nasx and torchvision disagree -- not timing a wrong answer:\n{e}")
    print("agreement: same eval-mode proposals and detections (batch 2 and batch 1), same anchors, matching, "
          "sampled counts and pooled RoI features; the training losses differ by sampling only")

    train = measure_training(models, batch, warmup, steps, rounds)
    infer_ = measure_inference(models, image, lat_warmup, lat_repeats, rounds)
    nxt, tvt = train["nasx"], train["torchvision"]

    threads = torch.get_num_threads()
    print(f"\nFaster R-CNN R-50-FPN, {SIZE}x{SIZE}, batch {BATCH}, one training step (forward + backward), on cpu "
          f"({threads} threads, torch {torch.__version__}); {steps * rounds} timed steps per model, "
          f"{rounds} alternating rounds")
    header = (f"{'ms per step':<22}{'nasx':>10}{'share %':>9}{'calls':>7}{'torchvision':>13}{'share %':>9}"
              f"{'calls':>7}{'tv/nasx':>9}")
    print(header)
    print("-" * len(header))

    def line(label, a, b, ca="", cb="", share=True):
        sa = f"{100 * a / nxt['step']:.2f}" if share else ""
        sb = f"{100 * b / tvt['step']:.2f}" if share else ""
        print(f"{label:<22}{a:>10.2f}{sa:>9}{ca!s:>7}{b:>13.2f}{sb:>9}{cb!s:>7}{_ratio(b, a):>9}")

    for c in CATEGORIES:
        line(c + (" fwd+bwd" if c == "roi_align" else ""), nxt["cat"][c], tvt["cat"][c],
             nxt["calls"].get(c, 0), tvt["calls"].get(c, 0))
        if c == "roi_align":
            line("  roi_align fwd", nxt["roi_align_fwd"], tvt["roi_align_fwd"])
            line("  roi_align bwd", nxt["roi_align_bwd"], tvt["roi_align_bwd"])
    line("ops total", nxt["ops"], tvt["ops"])
    line("whole step", nxt["step"], tvt["step"], share=False)
    print("mean losses (differ by sampling only): "
          + "; ".join(f"{name} " + ", ".join(f"{k} {v:.4f}" for k, v in rec["mean_losses"].items())
                      for name, rec in train.items()))

    ni, ti = infer_["nasx"], infer_["torchvision"]
    print(f"\ninference, batch 1, {SIZE}x{SIZE}, eval mode, no gradient; {lat_repeats * rounds} timed runs per model")
    header = f"{'ms per image':<22}{'nasx':>10}{'torchvision':>13}{'tv/nasx':>9}"
    print(header)
    print("-" * len(header))
    for label, key in (("nms", "nms"), ("roi_align", "roi_align"), ("nms + roi_align", "ops"), ("latency", "latency")):
        print(f"{label:<22}{ni[key]:>10.2f}{ti[key]:>13.2f}{_ratio(ti[key], ni[key]):>9}")

    case = f"{SIZE}px, batch {BATCH}"
    sampling_note = "losses differ by sampling only (different random streams)"
    rows = [Row("train step", f"{case}, fwd+bwd", nxt["step"], "torchvision", tvt["step"],
                extra={"steps": steps * rounds, "warmup_steps_per_round": warmup, "rounds": rounds,
                       "step_ms": nxt["step_ms"], "peer_step_ms": tvt["step_ms"],
                       "mean_losses": nxt["mean_losses"], "peer_mean_losses": tvt["mean_losses"],
                       "note": sampling_note, "gts_per_image": [len(t["boxes"]) for t in batch[2]]})]
    for c in CATEGORIES:
        extra = {"share": nxt["cat"][c] / nxt["step"], "peer_share": tvt["cat"][c] / tvt["step"],
                 "calls": nxt["calls"].get(c, 0), "peer_calls": tvt["calls"].get(c, 0),
                 "per_step_ms": [round(v, 3) for v in nxt["cat_steps"][c]],
                 "peer_per_step_ms": [round(v, 3) for v in tvt["cat_steps"][c]]}
        if c == "roi_align":
            extra.update(fwd_ms=nxt["roi_align_fwd"], bwd_ms=nxt["roi_align_bwd"],
                         peer_fwd_ms=tvt["roi_align_fwd"], peer_bwd_ms=tvt["roi_align_bwd"])
        rows.append(Row(c, f"in train step, {'fwd+bwd' if c == 'roi_align' else 'fwd'}, ms/step", nxt["cat"][c],
                        "torchvision", tvt["cat"][c], extra=extra))
    rows.append(Row("ops in train step", "matching+sampling+roi_align+nms", nxt["ops"], "torchvision", tvt["ops"],
                    extra={"share": nxt["ops"] / nxt["step"], "peer_share": tvt["ops"] / tvt["step"],
                           "per_step_ms": [round(v, 3) for v in nxt["per_step_ops_ms"]],
                           "peer_per_step_ms": [round(v, 3) for v in tvt["per_step_ops_ms"]]}))
    rows += [
        Row("inference latency", f"{SIZE}px, batch 1", ni["latency"], "torchvision", ti["latency"],
            extra={"repeats": lat_repeats * rounds, "samples_ms": ni["latency_ms"],
                   "peer_samples_ms": ti["latency_ms"]}),
        Row("nms", f"in inference, {SIZE}px, batch 1", ni["nms"], "torchvision", ti["nms"],
            extra={"calls": ni["calls"].get("nms", 0), "peer_calls": ti["calls"].get("nms", 0)}),
        Row("roi_align", f"in inference, {SIZE}px, batch 1", ni["roi_align"], "torchvision", ti["roi_align"],
            extra={"calls": ni["calls"].get("roi_align", 0), "peer_calls": ti["calls"].get("roi_align", 0)}),
        Row("nms + roi_align", f"in inference, {SIZE}px, batch 1", ni["ops"], "torchvision", ti["ops"],
            extra={"share": ni["ops"] / ni["latency"], "peer_share": ti["ops"] / ti["latency"],
                   "agreement": agreement, "threads": threads}),
    ]
    print(f"\ntotal run time {time.perf_counter() - t0:.0f} s")
    if not args.no_write:
        print("results:", write_results("two_stage" + ("-quick" if args.quick else ""), "cpu", rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
