"""``nasx info``: parameters, multiply-accumulates (per backbone / neck / head) and optionally
the latency of a detector built from a backbone encoding."""
from __future__ import annotations

import argparse
import json
import re

__all__ = ["register", "parse_input_size", "arch_kwargs"]

# Each detector's usual test-time input (H x W): COCO's 800 px short side at the 1333 px-ish
# long side the FPN detectors are reported at (NAS-FCOS Table 2), SSDLite's 320 x 320.
DEFAULT_INPUT = {"fcos": (800, 1088), "nas_fcos": (800, 1088), "retinanet": (800, 1088), "ssdlite": (320, 320)}
PARTS = ("backbone", "neck", "head")


def parse_input_size(text: str) -> tuple[int, int]:
    """``"800x1088"`` -> (800, 1088); one number means a square."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise ValueError(f"--input: expected HxW in pixels like 800x1088 (or one number for a square), got {text!r}")
    h = int(m.group(1))
    return h, int(m.group(2)) if m.group(2) else h


def arch_kwargs(detector: str, arch) -> dict:
    """``{"arch": arch}`` for a NAS-FCOS detector; an error if ``--arch`` is given to another."""
    if arch is None:
        return {}
    if detector != "nas_fcos":
        raise ValueError(f"--arch is the decoder of --detector nas_fcos; {detector} has no searched decoder")
    return {"arch": arch}


def register(subparsers) -> None:
    from nasx.models.layers import NORMS
    from nasx.spaces.detectors import DETECTORS

    p = subparsers.add_parser(
        "info", help="parameters, MACs and latency of a detector",
        description="Build a detector from a backbone encoding and print its parameters and multiply-accumulates "
                    "(conv and linear layers, per backbone / neck / head, at batch 1), and its latency if asked.")
    p.add_argument("--detector", choices=sorted(DETECTORS), default="fcos", help="detector (default fcos)")
    p.add_argument("--backbone", required=True, metavar="ENCODING",
                   help="backbone encoding or name, e.g. resnet50, bottleneck_64_111-2111-211111-211, mobilenet_v2")
    p.add_argument("--classes", type=int, default=80, metavar="N", help="foreground classes (default 80)")
    p.add_argument("--input", default=None, metavar="HxW",
                   help="input size (default 800x1088 for fcos / retinanet, 320x320 for ssdlite)")
    p.add_argument("--fpn-channels", type=int, default=None, metavar="C", help="FPN channels (default 256)")
    p.add_argument("--norm", choices=NORMS, default="bn", help="backbone norm (default bn)")
    p.add_argument("--arch", default=None, metavar="DECODER",
                   help="nas_fcos only: the decoder's text, or baseline / nas_fcos (default baseline)")
    p.add_argument("--latency", action="store_true", help="also time a forward pass (batch 1, median of runs)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device for --latency (default cpu)")
    p.add_argument("--repeats", type=int, default=10, metavar="R", help="timed runs for --latency (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    import torch

    from nasx.evaluate import count_detector_macs, count_params, measure_latency
    from nasx.spaces.detectors import build_detector

    if args.classes < 1:
        raise ValueError(f"--classes: expected a positive number of classes, got {args.classes}")
    if args.fpn_channels is not None and args.fpn_channels < 1:
        raise ValueError(f"--fpn-channels: expected a positive channel count, got {args.fpn_channels}")
    if args.latency and args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA GPU on this machine")
    h, w = parse_input_size(args.input) if args.input is not None else DEFAULT_INPUT[args.detector]
    kwargs = dict(backbone=args.backbone, num_classes=args.classes, norm=args.norm)
    if args.fpn_channels is not None:
        kwargs["fpn_channels"] = args.fpn_channels
    kwargs.update(arch_kwargs(args.detector, args.arch))
    # Counting needs only shapes: build on the meta device unless the model has to run for real.
    with torch.device(args.device if args.latency else "meta"):
        model = build_detector(args.detector, **kwargs)
    macs = count_detector_macs(model, (h, w))
    by_part = macs.by_prefix()
    parts = {name: {"params": count_params(getattr(model, name)), "macs": by_part.get(name, 0)} for name in PARTS}
    report = {"detector": args.detector, "backbone": args.backbone, "num_classes": args.classes, "input": [h, w],
              "norm": args.norm, "params": count_params(model), "macs": macs.total, "parts": parts}
    if args.latency:
        images = torch.randn(1, 3, h, w, device=args.device)
        lat = measure_latency(model, images, [(h, w)], device=args.device, warmup=3, repeats=args.repeats)
        report["latency_ms"] = {"median": lat.median_ms, "iqr": lat.iqr_ms, "min": lat.min_ms,
                                "repeats": lat.repeats, "device": lat.device}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.detector} with backbone {args.backbone} (norm {args.norm}), {args.classes} classes, input {h}x{w}")
    print(f"  {'part':<10}{'params':>12}{'GMACs':>10}")
    for name in PARTS:
        print(f"  {name:<10}{parts[name]['params'] / 1e6:>11.2f}M{parts[name]['macs'] / 1e9:>10.2f}")
    print(f"  {'total':<10}{report['params'] / 1e6:>11.2f}M{report['macs'] / 1e9:>10.2f}")
    if args.latency:
        lat = report["latency_ms"]
        print(f"  latency   {lat['median']:.1f} ms median (IQR {lat['iqr']:.1f} ms) over {lat['repeats']} runs "
              f"on {lat['device']}, batch 1")
    return 0
