"""``nasx train`` and ``nasx eval``: train a detector on a COCO-format dataset, score a checkpoint.

The dataset directory is the layout ``nasx data synth`` writes (and COCO's):
``DIR/train``, ``DIR/val`` and ``DIR/annotations/instances_{train,val}.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _datasets(root: Path, size: int):
    from nasx.data import coco_layout_dataset
    from nasx.data.transforms import detection_transforms

    train = coco_layout_dataset(root, "train", transforms=detection_transforms(True, size))
    return train, coco_layout_dataset(root, "val", transforms=detection_transforms(False, size))


def build_from_meta(meta: dict):
    """The detector a checkpoint's ``meta["build"]`` describes."""
    from nasx.models.detectors import FCOS_SIZE_RANGES
    from nasx.spaces.detectors import build_from_spec

    spec = dict(meta["build"])
    # Checkpoints from before 2026-11-28 scaled FCOS' size ranges with the image size.
    scale = spec.pop("range_scale", None)
    if spec.get("detector") == "fcos" and scale is not None:
        spec["size_ranges"] = [(lo * scale, hi * scale) for lo, hi in FCOS_SIZE_RANGES]
    return build_from_spec(spec)


def _train(args) -> int:
    import torch

    from nasx.atomic import write_json
    from nasx.commands.info import arch_kwargs, two_stage_kwargs
    from nasx.data import build_loader
    from nasx.evaluate import count_params, evaluate_detector
    from nasx.train import TrainConfig, train
    from nasx.train.optim import optimizer_settings

    torch.manual_seed(args.seed)
    train_set, val_set = _datasets(args.data, args.size)
    build = {"detector": args.detector, "backbone": args.backbone, "num_classes": train_set.num_classes,
             "norm": args.norm, **arch_kwargs(args.detector, args.arch), **two_stage_kwargs(args)}
    if args.detector != "ssdlite":
        build["fpn_channels"] = args.fpn_channels
    meta = {"build": build, "size": args.size, "class_names": train_set.class_names}
    model = build_from_meta(meta)
    print(f"{args.detector} with backbone {args.backbone}: {count_params(model) / 1e6:.2f}M parameters, "
          f"{len(train_set)} training images")
    loader = build_loader(train_set, args.batch_size, shuffle=True, workers=args.workers, seed=args.seed,
                          drop_last=len(train_set) >= args.batch_size)
    config = TrainConfig(epochs=args.epochs, max_steps=args.max_steps, optimizer=args.optimizer,
                         **optimizer_settings(args.optimizer, args.lr), warmup_steps=args.warmup,
                         checkpoint_every=args.checkpoint_every, amp=not args.no_amp)
    result = train(model, loader, config, device=args.device, out_dir=args.out, resume=not args.restart, meta=meta)
    print(f"trained {result['steps']} steps, {result['images_per_s']:.1f} images/s")
    val_loader = build_loader(val_set, args.batch_size, workers=args.workers)
    metrics = evaluate_detector(model, val_set, val_loader, device=args.device, progress=True)
    write_json(Path(args.out) / "metrics.json", metrics, indent=2)
    print(" ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    return 0


def _eval(args) -> int:
    from nasx.data import build_loader
    from nasx.evaluate import evaluate_detector
    from nasx.train import load_checkpoint

    state = load_checkpoint(args.checkpoint, required_keys=("model", "meta"))
    meta = state["meta"]
    if "build" not in meta:
        raise ValueError(f"checkpoint {args.checkpoint} does not say how to build its model (no meta['build'])")
    model = build_from_meta(meta)
    model.load_state_dict(state["model"])
    model.to(args.device)
    _, val_set = _datasets(args.data, meta.get("size", 128))
    loader = build_loader(val_set, args.batch_size, workers=args.workers)
    metrics = evaluate_detector(model, val_set, loader, device=args.device, progress=True)
    print(json.dumps(metrics) if args.json else " ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    return 0


def register(subparsers) -> None:
    from nasx.commands.info import add_two_stage_arguments
    from nasx.models.layers import NORMS
    from nasx.spaces.detectors import DETECTORS
    from nasx.train.optim import LR_DEFAULTS_TEXT

    p = subparsers.add_parser("train", help="train a detector on a COCO-format dataset",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset root (nasx data synth layout)")
    p.add_argument("--detector", choices=sorted(DETECTORS), default="fcos")
    p.add_argument("--backbone", default="basicblock_16_1-21-21-21", metavar="ENCODING",
                   help="backbone encoding or name (resnet50, mobilenet_v2, ...)")
    p.add_argument("--norm", choices=NORMS, default="gn", help="backbone norm (gn / gn_ws train from scratch)")
    p.add_argument("--fpn-channels", type=int, default=64, metavar="C")
    p.add_argument("--arch", default=None, metavar="DECODER",
                   help="nas_fcos only: the decoder's text, or baseline / nas_fcos (default baseline)")
    add_two_stage_arguments(p)
    p.add_argument("--size", type=int, default=128, help="shorter image side fed to the model")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                   help="AdamW learns a small detector from scratch in far fewer steps; SGD is the paper recipe")
    p.add_argument("--lr", type=float, default=None, help=f"learning rate (default: {LR_DEFAULTS_TEXT})")
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    p.add_argument("--checkpoint-every", type=int, default=200, metavar="STEPS")
    p.add_argument("--workers", type=int, default=1, help="data-loading processes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--restart", action="store_true", help="ignore OUT/last.pt instead of resuming from it")
    p.add_argument("--out", required=True, type=Path, metavar="RUN", help="run directory (last.pt, metrics.json)")
    p.set_defaults(func=_train)

    e = subparsers.add_parser("eval", help="COCO mAP of a checkpoint on a dataset's val split")
    e.add_argument("--data", required=True, type=Path, metavar="DIR")
    e.add_argument("--checkpoint", required=True, type=Path, metavar="PT")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--workers", type=int, default=1)
    e.add_argument("--device", default="cpu")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(func=_eval)
