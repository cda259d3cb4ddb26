"""``nasx search nas-fcos``: the NAS-FCOS decoder search end to end (see ``nasx.search.nas_fcos_pipeline``).

Run it again with the same arguments after an interruption and it continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _nas_fcos(args) -> int:
    from nasx.evaluate.proxy import ProxyConfig
    from nasx.search.nas_fcos_pipeline import NasFcosRunConfig, run_nas_fcos

    if args.budget_minutes <= 0:
        raise ValueError(f"--budget-minutes must be > 0, got {args.budget_minutes}")
    cfg = NasFcosRunConfig(
        data=str(args.data), out=str(args.out), budget_minutes=args.budget_minutes, device=args.device,
        workers=args.workers, size=args.size, backbone=args.backbone, channels=args.channels,
        backbone_steps=args.backbone_steps, retrain_steps=args.retrain_steps, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, meta_val_fraction=args.meta_val,
        proxy=ProxyConfig(steps=args.proxy_steps, batch_size=args.batch_size),
        round_size=args.round_size, top_k=args.top_k, min_archs=args.min_archs, max_archs=args.max_archs,
        seed=args.seed, progress=not args.quiet)
    report = run_nas_fcos(cfg)
    if args.json:
        print(json.dumps(report))
    return 0


def register(subparsers) -> None:
    from nasx.train.optim import LR_DEFAULTS_TEXT

    p = subparsers.add_parser("search", help="architecture searches (nas-fcos)")
    sub = p.add_subparsers(dest="pipeline", metavar="PIPELINE", required=True)
    s = sub.add_parser("nas-fcos", help="NAS-FCOS decoder search with a PPO-trained LSTM controller",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset root (nasx data synth layout)")
    s.add_argument("--out", required=True, type=Path, metavar="RUN", help="run directory (resumed if it exists)")
    s.add_argument("--budget-minutes", type=float, default=15.0, metavar="M", help="wall-clock budget of the whole run")
    s.add_argument("--device", default="cpu")
    s.add_argument("--workers", type=int, default=1, metavar="W", help="processes evaluating candidates")
    s.add_argument("--size", type=int, default=128, help="input image side")
    s.add_argument("--backbone", default="basicblock_16_1-21-21-21", metavar="ENCODING")
    s.add_argument("--channels", type=int, default=32, help="decoder width")
    s.add_argument("--backbone-steps", type=int, default=1500, help="steps training the backbone with the baseline decoder")
    s.add_argument("--retrain-steps", type=int, default=80, help="steps retraining each top decoder with the backbone")
    s.add_argument("--proxy-steps", type=int, default=30, help="Adam steps per candidate on cached features")
    s.add_argument("--meta-val", type=float, default=0.1, metavar="FRACTION", help="share of train held out for the reward")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw", help="optimizer of the image training stages")
    s.add_argument("--lr", type=float, default=None,
                   help=f"learning rate of the image training stages (default: {LR_DEFAULTS_TEXT})")
    s.add_argument("--round-size", type=int, default=4, help="architectures per PPO update")
    s.add_argument("--top-k", type=int, default=8, help="searched decoders retrained on images")
    s.add_argument("--min-archs", type=int, default=20, help="architectures searched even past the budget")
    s.add_argument("--max-archs", type=int, default=None, help="stop the search after this many architectures")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    s.set_defaults(func=_nas_fcos)
