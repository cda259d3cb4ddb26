"""``nasx export``: a checkpoint's detector to an ONNX file (``nasx train`` and every search write
checkpoints that say how to rebuild their detector, in ``meta["build"]``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register"]


def _input_size(args, meta: dict) -> tuple[int, int]:
    """--input, else the size the checkpoint was trained at (a search's ``input_size``, or ``nasx train``'s
    square ``size``)."""
    from nasx.commands.info import parse_input_size

    if args.input is not None:
        return parse_input_size(args.input)
    if "input_size" in meta:
        h, w = meta["input_size"]
        return int(h), int(w)
    if "size" in meta:
        return int(meta["size"]), int(meta["size"])
    raise ValueError(f"checkpoint {args.checkpoint} records no input size; give --input HxW")


def _compare(model, exported, size, batch: int) -> str:
    """One line: the ONNX Runtime outputs against PyTorch's on a random batch."""
    import torch

    from nasx.export import OnnxDetector
    from nasx.export.runtime import detection_difference

    images = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0))
    onnx_out = OnnxDetector(exported)(images)
    if not exported.postprocess:
        return f"verify: ONNX Runtime ran the graph, {len(onnx_out)} raw outputs"
    with torch.no_grad():
        torch_out = model.eval()(images)
    counts = ", ".join(f"{t['boxes'].shape[0]}/{o['boxes'].shape[0]}" for o, t in zip(onnx_out, torch_out))
    worst = max(detection_difference(o, t) for o, t in zip(onnx_out, torch_out))
    return f"verify: {counts} detections (PyTorch/ONNX Runtime) per image, largest difference {worst:.2e}"


def run_export(args: argparse.Namespace) -> int:
    from nasx.commands.train import build_from_meta
    from nasx.export import export_onnx
    from nasx.export.errors import require
    from nasx.train import load_checkpoint

    require("onnx", "onnxscript", *(("onnxruntime",) if args.verify else ()))
    state = load_checkpoint(args.checkpoint, required_keys=("model", "meta"))
    meta = state["meta"]
    if "build" not in meta:
        raise ValueError(f"checkpoint {args.checkpoint} does not say how to build its model (no meta['build'])")
    if args.batch < 1:
        raise ValueError(f"--batch: expected a positive number of images, got {args.batch}")
    size = _input_size(args, meta)
    model = build_from_meta(meta)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:  # missing / unexpected / mis-shaped weights: the first lines say which
        detail = " ".join(str(e).split())[:300]
        raise ValueError(f"checkpoint {args.checkpoint}: its weights do not fit the detector its meta['build'] "
                         f"describes ({detail})") from None
    model.eval()
    metadata = {"build": json.dumps(meta["build"]), "input_size": json.dumps(list(size))}
    if "class_names" in meta:
        metadata["class_names"] = json.dumps(meta["class_names"])
    exported = export_onnx(model, args.out, image_size=size, batch=args.batch, opset=args.opset, dynamic=args.dynamic,
                           postprocess=not args.no_postprocess, optimize=not args.no_optimize, metadata=metadata)
    dims = {2: "H", 3: "W", 0: "B"}
    shape = ["B" if 0 in exported.dynamic else str(args.batch), "3",
             *(dims[a] if a in exported.dynamic else str(v) for a, v in ((2, size[0]), (3, size[1])))]
    print(f"{meta['build']['detector']} -> {args.out} (opset {exported.opset}, input images [{', '.join(shape)}], "
          f"{'with' if exported.postprocess else 'without'} post-processing)")
    print(f"  outputs: {', '.join(exported.output_names)}")
    if args.verify:
        print("  " + _compare(model, exported, size, args.batch))
    return 0


def register(subparsers) -> None:
    from nasx.export.exporter import DEFAULT_OPSET, OPSETS

    p = subparsers.add_parser(
        "export", help="export a checkpoint's detector to ONNX",
        description="Rebuild the detector a checkpoint describes and export it to ONNX: nasx's ops as ONNX "
                    "NonMaxSuppression, RoiAlign and DeformConv, post-processing included (outputs boxes, scores, "
                    "labels, batch_index) or left out (the head's raw outputs). Needs pip install nasx[export].")
    p.add_argument("--checkpoint", required=True, type=Path, metavar="PT", help="a checkpoint nasx wrote (last.pt)")
    p.add_argument("--out", required=True, type=Path, metavar="ONNX", help="the .onnx file to write")
    p.add_argument("--input", default=None, metavar="HxW",
                   help="input size (default: the size the checkpoint was trained at)")
    p.add_argument("--batch", type=int, default=1, metavar="B",
                   help="images per call (default 1; with --dynamic any number works)")
    p.add_argument("--opset", type=int, choices=OPSETS, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset, {OPSETS.start}-{OPSETS.stop - 1} (default {DEFAULT_OPSET}; "
                        "deformable convolutions need 19)")
    p.add_argument("--dynamic", action="store_true",
                   help="any batch, height and width at run time (every detector nasx builds; one exported through its "
                        "own forward keeps its batch)")
    p.add_argument("--no-postprocess", action="store_true",
                   help="leave out decoding, top-k and NMS: the head's raw outputs level by level")
    p.add_argument("--no-optimize", action="store_true",
                   help="skip onnxscript's graph optimizer: a quicker export of a larger graph that runs slower")
    p.add_argument("--verify", action="store_true",
                   help="run the export in ONNX Runtime and compare it with PyTorch on a random batch")
    p.set_defaults(func=run_export)
