"""Does a NAS-EOD run's verdict against FPNLite hold when the final training is longer?

    python benchmarks/study_nas_eod_retrain.py runs/demo-nas-eod --steps 800 --seeds 0,1,2

Takes a finished ``nasx search nas-eod`` run, retrains its searched detectors (``top1``, ``top2``,
...) and MobileNetV2-FPNLite at each neck width ``--steps`` steps from scratch from every seed in
``--seeds`` (the run's data, input size and training recipe; one run directory per seed under
``--out``, resumable), scores each on the run's val split, then times all of them against each
other (batch 1, the run's threads and clock). At the demo's 200 steps a detector's mAP moves by a
quarter either way between seeds; the question is whether the ranking the run reported survives
training long enough that the seeds do not blur it. Writes ``benchmarks/results/nas_eod_retrain-cpu-STEPSsteps.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from harness import RESULTS, machine

from nasx.data import coco_layout_dataset
from nasx.data.transforms import detection_transforms
from nasx.evaluate.cost import measure_together
from nasx.pipelines.retrain import Candidate, retrain_and_score
from nasx.pipelines.rundir import RunDir
from nasx.pipelines.training import TrainRecipe
from nasx.spaces.detectors import build_from_spec
from nasx.train.checkpoint import load_checkpoint


@dataclasses.dataclass
class StudySettings:
    """config.json of one seed's directory: a changed setting is refused on resume."""
    source: str
    steps: int
    seed: int
    names: list


def _candidates(run: Path, names) -> list[Candidate]:
    lines = [json.loads(line) for line in (run / "retrained.jsonl").read_text().splitlines() if line.strip()]
    rows = {r["name"]: r for r in lines}
    if not names:
        names = [n for n in rows if n.startswith("top") or n.startswith("MobileNetV2-FPNLite")]
    missing = [n for n in names if n not in rows]
    if missing:
        raise SystemExit(f"{run}: no retrained detector named {', '.join(missing)} (it has {', '.join(rows)})")
    out = []
    for n in names:
        meta = load_checkpoint(run / rows[n]["checkpoint"], required_keys=("meta",))["meta"]
        out.append(Candidate(n, rows[n]["encoding"], meta["build"]))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished nasx search nas-eod run directory")
    ap.add_argument("--steps", type=int, default=800, help="training steps per detector (default 800, 4x the demo's)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    ap.add_argument("--names", default="", help="comma-separated detectors of the run (default: top* and FPNLite)")
    ap.add_argument("--out", type=Path, default=None, help="where the retrainings go (default RUN-retrain-STEPS)")
    args = ap.parse_args(argv)
    cfg = json.loads((args.run / "config.json").read_text())
    if cfg.get("pipeline") != "nas-eod":
        raise SystemExit(f"{args.run}: not a nas-eod run (config.json says {cfg.get('pipeline')!r})")
    seeds = [int(s) for s in args.seeds.split(",")]
    cands = _candidates(args.run, [n for n in args.names.split(",") if n])
    out = args.out or args.run.with_name(f"{args.run.name}-retrain-{args.steps}")
    s, short = cfg["input_size"], cfg["short"]
    train_set = coco_layout_dataset(cfg["data"], "train", transforms=detection_transforms(True, s, s))
    val_set = coco_layout_dataset(cfg["data"], "val", transforms=detection_transforms(False, s, s))
    timing = {"threads": short["latency_threads"], "clock": short["latency_clock"]}

    scores, first = {c.name: {} for c in cands}, {}
    for seed in seeds:
        run = RunDir(out / f"seed{seed}", pipeline="nas-eod-retrain-study",
                     config=StudySettings(str(args.run.resolve()), args.steps, seed, [c.name for c in cands]))
        run.freeze_config()
        recipe = TrainRecipe(batch_size=short["batch_size"], optimizer=short["optimizer"], lr=short["lr"],
                             warmup=short["warmup"], seed=seed, device=cfg["device"])
        for row in retrain_and_score(run, cands, train_set=train_set, val_set=val_set, steps=args.steps,
                                     recipe=recipe, input_size=(s, s), meta={"size": s}, timing=timing):
            scores[row["name"]][seed] = {"map": row["map"], "ap50": row["metrics"]["AP50"], "macs": row["macs"]}
            first.setdefault(row["name"], run.path(row["checkpoint"]))
    models = {}
    for name, path in first.items():
        state = load_checkpoint(path, required_keys=("model", "meta"))
        models[name] = build_from_spec(state["meta"]["build"])
        models[name].load_state_dict(state["model"])
    device = "cuda" if cfg["device"].startswith("cuda") else "cpu"
    times = measure_together(models, torch.rand(1, 3, s, s), device=device, repeats=cfg.get("final_sweeps", 30),
                             **timing)
    report = {"machine": machine(device), "run": str(args.run), "steps": args.steps, "seeds": seeds,
              "run_steps": cfg["retrain_steps"], "detectors": {}}
    print(f"{'detector':24s} {'mAP per seed':>24s}  {'mean':>6s}  {'GMACs':>6s}  latency ms (together)")
    for name, per_seed in scores.items():
        maps = [v["map"] for v in per_seed.values()]
        report["detectors"][name] = {"map": maps, "map_mean": statistics.fmean(maps),
                                     "map_sd": statistics.stdev(maps) if len(maps) > 1 else 0.0,
                                     "ap50": [v["ap50"] for v in per_seed.values()],
                                     "macs": next(iter(per_seed.values()))["macs"],
                                     "latency_ms": times[name].median_ms}
        d = report["detectors"][name]
        print(f"{name:24s} {' '.join(f'{m:.4f}' for m in maps):>24s}  {d['map_mean']:.4f}  "
              f"{d['macs'] / 1e9:6.3f}  {d['latency_ms']:.2f}")
    (RESULTS / f"nas_eod_retrain-{device}-{args.steps}steps.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
