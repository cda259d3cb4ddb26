"""``nasx info``: parameters, multiply-accumulates (per backbone / neck / head) and optionally
the latency of a detector built from a backbone encoding."""
from __future__ import annotations

import argparse
import json
import re

__all__ = ["add_two_stage_arguments", "arch_kwargs", "parse_input_size", "register", "two_stage_kwargs"]

# Each detector's usual test-time input (H x W): COCO's 800 px short side at the 1333 px-ish
# long side the FPN detectors are reported at (NAS-FCOS Table 2), SSDLite's 320 x 320.
DEFAULT_INPUT = {"fcos": (800, 1088), "nas_fcos": (800, 1088), "retinanet": (800, 1088), "ssdlite": (320, 320),
                 "fpnlite": (320, 320), "faster_rcnn": (800, 1088), "cascade_rcnn": (800, 1088)}
TWO_STAGE = ("faster_rcnn", "cascade_rcnn")


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


def add_two_stage_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of the two-stage detectors (``nasx info`` and ``nasx train``)."""
    p.add_argument("--rpn", choices=("rpn", "ga"), default=None,
                   help="faster_rcnn / cascade_rcnn: region proposals by an RPN (default) or a guided-anchoring RPN")
    p.add_argument("--cascade-stages", type=int, default=None, metavar="N",
                   help="cascade_rcnn: R-CNN stages, 2-4 (default 3)")
    p.add_argument("--fc-channels", type=int, default=None, metavar="C",
                   help="faster_rcnn / cascade_rcnn: width of the two-FC RoI head (default 1024)")
    p.add_argument("--rois-per-image", type=int, default=None, metavar="N",
                   help="faster_rcnn / cascade_rcnn: RoIs sampled per image per stage in training (default 512)")


def two_stage_kwargs(args: argparse.Namespace) -> dict:
    """The builder keywords of the two-stage flags that were given; an error for a detector they do not fit."""
    given = {"rpn": args.rpn, "cascade_stages": args.cascade_stages, "fc_channels": args.fc_channels,
             "batch_size_per_image": args.rois_per_image}
    given = {k: v for k, v in given.items() if v is not None}
    flag = {"rpn": "--rpn", "cascade_stages": "--cascade-stages", "fc_channels": "--fc-channels",
            "batch_size_per_image": "--rois-per-image"}
    if given and args.detector not in TWO_STAGE:
        raise ValueError(f"{', '.join(flag[k] for k in given)}: only for --detector faster_rcnn / cascade_rcnn, "
                         f"not {args.detector}")
    if "cascade_stages" in given and args.detector != "cascade_rcnn":
        raise ValueError("--cascade-stages: only for --detector cascade_rcnn (faster_rcnn has one stage)")
    for key in ("fc_channels", "batch_size_per_image"):
        if key in given and given[key] < 1:
            raise ValueError(f"{flag[key]}: expected a positive number, got {given[key]}")
    return given


def register(subparsers) -> None:
    from nasx.evaluate.cost import RUNTIMES
    from nasx.models.layers import NORMS
    from nasx.spaces.detectors import DETECTORS
    from nasx.spaces.sm_nas_models import SM_NAS_MODELS

    p = subparsers.add_parser(
        "info", help="parameters, MACs and latency of a detector",
        description="Build a detector from a backbone encoding and print its parameters and multiply-accumulates "
                    "(conv and linear layers, per backbone / neck / head, at batch 1), and its latency if asked.")
    p.add_argument("--detector", choices=sorted(DETECTORS), default="fcos", help="detector (default fcos)")
    p.add_argument("--backbone", default=None, metavar="ENCODING",
                   help="backbone encoding or name, e.g. resnet50, bottleneck_64_111-2111-211111-211, mobilenet_v2")
    p.add_argument("--model", default=None, choices=sorted(SM_NAS_MODELS), metavar="NAME",
                   help=f"a published detector instead of --detector / --backbone: {', '.join(sorted(SM_NAS_MODELS))} "
                        "(at its own input size unless --input is given)")
    p.add_argument("--classes", type=int, default=80, metavar="N", help="foreground classes (default 80)")
    p.add_argument("--input", default=None, metavar="HxW",
                   help="input size (default 800x1088; 320x320 for ssdlite; a --model's own)")
    p.add_argument("--fpn-channels", type=int, default=None, metavar="C", help="FPN channels (default 256)")
    p.add_argument("--norm", choices=NORMS, default="bn", help="backbone norm (default bn)")
    p.add_argument("--arch", default=None, metavar="DECODER",
                   help="nas_fcos only: the decoder's text, or baseline / nas_fcos (default baseline)")
    add_two_stage_arguments(p)
    p.add_argument("--rois", type=int, default=1000, metavar="N",
                   help="two-stage detectors: RoIs per image the MACs are counted at (default 1000)")
    p.add_argument("--latency", action="store_true", help="also time a forward pass (batch 1, median of runs)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device for --latency (default cpu)")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch",
                   help="where --latency runs the model: torch (default), or onnxruntime: its ONNX export, post-processing "
                        "included, on ONNX Runtime's CPU provider (needs pip install nasx[export])")
    p.add_argument("--repeats", type=int, default=10, metavar="R", help="timed runs for --latency (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run_info)


def _build_kwargs(args: argparse.Namespace) -> tuple[dict, tuple[int, int]]:
    """(builder keywords with "detector", default input size) from the flags."""
    if args.model is not None:
        from nasx.spaces.sm_nas_models import sm_nas_model_spec

        given = [f for f, v in (("--backbone", args.backbone), ("--arch", args.arch), ("--rpn", args.rpn),
                               ("--cascade-stages", args.cascade_stages), ("--fpn-channels", args.fpn_channels),
                               ("--fc-channels", args.fc_channels), ("--rois-per-image", args.rois_per_image))
                 if v is not None]
        if given:
            raise ValueError(f"--model {args.model} fixes the architecture; drop {', '.join(given)}")
        return sm_nas_model_spec(args.model, num_classes=args.classes, norm=args.norm)
    if args.backbone is None:
        raise ValueError("--backbone is required (or --model NAME for a published detector)")
    kwargs = dict(detector=args.detector, backbone=args.backbone, num_classes=args.classes, norm=args.norm)
    if args.fpn_channels is not None:
        kwargs["fpn_channels"] = args.fpn_channels
    kwargs.update(arch_kwargs(args.detector, args.arch))
    kwargs.update(two_stage_kwargs(args))
    return kwargs, DEFAULT_INPUT[args.detector]


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
    if args.runtime != "torch" and not args.latency:
        raise ValueError(f"--runtime {args.runtime}: it says where --latency times the model; add --latency")
    if args.runtime == "onnxruntime" and args.device != "cpu":
        raise ValueError(f"--runtime onnxruntime runs on ONNX Runtime's CPU provider; drop --device {args.device}")
    if args.rois < 1:
        raise ValueError(f"--rois: expected a positive number of RoIs, got {args.rois}")
    kwargs, size = _build_kwargs(args)
    h, w = parse_input_size(args.input) if args.input is not None else size
    detector = kwargs.pop("detector")
    # Counting needs only shapes: build on the meta device unless the model has to run for real.
    with torch.device(args.device if args.latency else "meta"):
        model = build_detector(detector, **kwargs)
    macs = count_detector_macs(model, (h, w), num_rois=args.rois)
    by_part = macs.by_prefix()
    parts = {name: {"params": count_params(child), "macs": by_part.get(name, 0)}
             for name, child in model.named_children() if child is not None}
    report = {"detector": detector, "backbone": kwargs["backbone"], "num_classes": args.classes, "input": [h, w],
              "norm": args.norm, "params": count_params(model), "macs": macs.total, "parts": parts}
    if args.model is not None:
        report["model"] = args.model
    if hasattr(model, "forward_dense"):
        report["macs_at_rois"] = args.rois
    if args.latency:
        images = torch.randn(1, 3, h, w, device=args.device)
        lat = measure_latency(model, images, [(h, w)], device=args.device, warmup=3, repeats=args.repeats,
                              runtime=args.runtime)
        report["latency_ms"] = {"median": lat.median_ms, "iqr": lat.iqr_ms, "min": lat.min_ms,
                                "repeats": lat.repeats, "device": lat.device, "runtime": lat.runtime}
    if args.json:
        print(json.dumps(report))
        return 0
    title = args.model or detector
    print(f"{title} with backbone {kwargs['backbone']} (norm {args.norm}), {args.classes} classes, input {h}x{w}"
          + (f", MACs at {args.rois} RoIs per image" if "macs_at_rois" in report else ""))
    print(f"  {'part':<10}{'params':>12}{'GMACs':>10}")
    for name, part in parts.items():
        print(f"  {name:<10}{part['params'] / 1e6:>11.2f}M{part['macs'] / 1e9:>10.2f}")
    print(f"  {'total':<10}{report['params'] / 1e6:>11.2f}M{report['macs'] / 1e9:>10.2f}")
    if args.latency:
        lat = report["latency_ms"]
        print(f"  latency   {lat['median']:.1f} ms median (IQR {lat['iqr']:.1f} ms) over {lat['repeats']} runs "
              f"on {lat['device']} in {lat['runtime']}, batch 1")
    return 0
