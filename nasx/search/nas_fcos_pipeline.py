"""NAS-FCOS end to end (seed 004): the run behind ``nasx search nas-fcos`` and ``make demo``.

Stages, each resumable from what it left in the run directory ``out``:

1. **backbone** — split train into meta-train / meta-val (``split.json``); train FCOS with the
   hand-designed decoder (:data:`~nasx.spaces.nas_fcos.BASELINE`) on meta-train images
   (``backbone/last.pt``). Its trunk is what every decoder is searched and retrained on.
2. **cache** — C3-C5 of every train image once (``cache/``, memory-mapped).
3. **search** — the LSTM controller + PPO (:class:`ControllerSearch`) proposes decoders; each is
   trained on cached features only (:class:`DecoderProxy`) and scored by its meta-val loss.
   ``results.jsonl`` holds one line per architecture; the baseline is scored the same way first.
4. **retrain** — the baseline and the top-k decoders by reward are trained with the backbone on
   images, the same steps for all: backbone from stage 1, decoder from the weights it reached on
   the proxy task (``decoders/``; weight inheritance, so a CPU budget can afford the retraining),
   then scored by COCO mAP on val (``retrained.jsonl``, ``retrain/<hash of the encoding>/last.pt``).
5. **report** — ``report.json``, ``pareto.png``, ``best.json`` and ``best.pt``.

A run killed at any point (SIGKILL included) and started again with the same command continues:
finished stages are skipped, training resumes from its checkpoint, and no finished evaluation
is repeated. Once the search has ended (``search_done.json``) its candidates are final, even if
the run is resumed with a larger budget. ``config.json`` records the settings; resuming with different ones is an error.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nasx.evaluate.proxy import ProxyConfig, arch_key
from nasx.train.optim import OPTIMIZER_DEFAULTS

__all__ = ["NasFcosRunConfig", "run_nas_fcos", "kendall_tau"]

# Settings that may change between a run and its resumption; any other change is an error.
# "out" is where the run is found, so a moved directory or another spelling of its path resumes.
_RESUMABLE = {"budget_minutes", "device", "workers", "progress", "data", "out"}


@dataclass
class NasFcosRunConfig:
    """data: a COCO-layout dataset root (``nasx data synth`` output). out: the run directory.
    budget_minutes: wall-clock budget of the whole run; the search gets what the other stages
        leave (estimated from the backbone stage's measured speed), but at least ``min_archs``.
    size: input side. backbone / backbone_norm: the trunk's encoding and norm.
    channels: decoder width (the searched FPN and head, and the baseline's).
    meta_val_fraction: share of train held out as meta-val for the proxy reward.
    backbone_steps, retrain_steps, batch_size, optimizer, lr, weight_decay: training on images, of
        stage 1 and of the retrained detectors (all with the same recipe; AdamW because it trains a
        small detector from scratch in the few steps a CPU budget allows). proxy: the proxy task.
    round_size: architectures per PPO update. top_k: searched decoders retrained (the baseline
        is retrained too). min_archs / max_archs: bounds on the distinct architectures searched.
    """

    data: str
    out: str
    budget_minutes: float = 15.0
    device: str = "cpu"
    workers: int = 1
    size: int = 128
    backbone: str = "basicblock_16_1-21-21-21"
    backbone_norm: str = "gn"
    channels: int = 32
    meta_val_fraction: float = 0.1
    backbone_steps: int = 1500
    retrain_steps: int = 80
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: Optional[float] = None            # None: the optimizer's default (nasx.train.OPTIMIZER_DEFAULTS)
    weight_decay: Optional[float] = None
    proxy: ProxyConfig = field(default_factory=lambda: ProxyConfig(steps=30))
    round_size: int = 4
    top_k: int = 8
    min_archs: int = 20
    max_archs: Optional[int] = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.proxy, dict):
            self.proxy = ProxyConfig(**self.proxy)
        if self.optimizer not in OPTIMIZER_DEFAULTS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_DEFAULTS)}, got {self.optimizer!r}")
        for name, value in OPTIMIZER_DEFAULTS[self.optimizer].items():  # config.json records the value used
            if getattr(self, name) is None:
                setattr(self, name, value)
        if not 0 < self.meta_val_fraction < 1:
            raise ValueError(f"meta_val_fraction must be in (0, 1), got {self.meta_val_fraction}")
        if self.top_k < 1 or self.min_archs < self.top_k:
            raise ValueError(f"expected 1 <= top_k <= min_archs, got top_k={self.top_k}, min_archs={self.min_archs}")
        for name in ("backbone_steps", "retrain_steps", "batch_size", "channels", "size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def kendall_tau(x, y) -> float:
    """Kendall's tau-b of two equally long sequences (ties in either counted as neither
    concordant nor discordant, and corrected for): NaN with fewer than two pairs or a constant side."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape:
        raise ValueError(f"kendall_tau: expected sequences of equal length, got {len(x)} and {len(y)}")
    n = len(x)
    conc = disc = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ties_x) * (conc + disc + ties_y))
    return (conc - disc) / denom if denom > 0 else math.nan


class _Run:
    """One run directory; each stage method is idempotent."""

    def __init__(self, cfg: NasFcosRunConfig):
        from nasx.spaces.nas_fcos import NasFcosSpace

        self.cfg = cfg
        self.out = Path(cfg.out)
        self.data = Path(cfg.data)
        self.space = NasFcosSpace(channels=cfg.channels)
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        if self.cfg.progress:
            print(text, flush=True)

    # -- settings ----------------------------------------------------------------------------
    def check_config(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "config.json"
        now = json.loads(json.dumps(asdict(self.cfg)))
        if path.exists():
            before = json.loads(path.read_text())
            changed = sorted(k for k in set(now) | set(before) if k not in _RESUMABLE and now.get(k) != before.get(k))
            if changed:
                detail = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
                raise ValueError(f"{self.out} holds a run started with other settings ({detail}); resume it with "
                                 f"the same settings or choose another --out")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(now, indent=1) + "\n")
        tmp.replace(path)

    # -- data --------------------------------------------------------------------------------
    def datasets(self):
        from nasx.data import synth_dataset
        from nasx.data.transforms import detection_transforms, resized_shape

        for split in ("train", "val"):
            if not (self.data / "annotations" / f"instances_{split}.json").is_file():
                raise ValueError(f"--data {self.data}: missing annotations/instances_{split}.json "
                                 f"(create a dataset with `nasx data synth --out {self.data}`)")
        self.train_aug = synth_dataset(self.data, "train", transforms=detection_transforms(True, self.cfg.size))
        self.train_plain = synth_dataset(self.data, "train", transforms=detection_transforms(False, self.cfg.size))
        self.val = synth_dataset(self.data, "val", transforms=detection_transforms(False, self.cfg.size))
        self.num_classes = self.train_aug.num_classes
        n = len(self.train_aug)
        if n < 10:
            raise ValueError(f"--data {self.data}: {n} training images; the search needs at least 10")
        split_path = self.out / "split.json"
        if split_path.exists():
            split = json.loads(split_path.read_text())
            if split["num_train"] != n:
                raise ValueError(f"{split_path}: the run was split over {split['num_train']} training images, "
                                 f"{self.data} now has {n}; use another --out")
        else:
            perm = np.random.default_rng(self.cfg.seed).permutation(n)
            n_val = max(1, int(round(n * self.cfg.meta_val_fraction)))
            split = {"num_train": n, "meta_val": sorted(perm[:n_val].tolist()), "meta_train": sorted(perm[n_val:].tolist())}
            _write_json(split_path, split)
        self.meta_train, self.meta_val = split["meta_train"], split["meta_val"]
        # The cache holds every image padded to one size: the largest resized image, to a multiple of 32.
        shapes = {resized_shape(im["height"], im["width"], self.cfg.size) for im in self.train_plain.coco.imgs.values()}
        self.input_size = tuple(-(-max(s[k] for s in shapes) // 32) * 32 for k in (0, 1))

    def detector_kwargs(self) -> dict:
        # FCOS' own size ranges at every image size: they are tied to the strides (8 cells per
        # level), so scaling them down with small images would push objects onto coarse levels.
        return {}

    def build_detector(self, arch, trunk_state: Optional[dict] = None):
        from nasx.models.detectors import FCOS
        from nasx.spaces.detectors import build_backbone

        trunk = build_backbone(self.cfg.backbone, norm=self.cfg.backbone_norm)
        if trunk_state is not None:
            trunk.load_state_dict(trunk_state)
        neck, head = self.space.build(arch, in_channels={n: trunk.channels[n] for n in ("c3", "c4", "c5")},
                                      num_classes=self.num_classes)
        return FCOS(backbone=trunk, neck=neck, head=head, num_classes=self.num_classes, **self.detector_kwargs())

    def train_detector(self, model, dataset, steps: int, out_dir: Path, meta: dict) -> dict:
        """Train on images (resumable from ``out_dir/last.pt``); returns the loop's summary plus
        ``s_per_step`` measured over the steps this call ran."""
        from nasx.data import build_loader
        from nasx.train import TrainConfig, train
        from nasx.train.checkpoint import load_checkpoint

        done = out_dir / "done.json"
        if done.exists():
            state = load_checkpoint(out_dir / "last.pt")
            model.load_state_dict(state["model"])
            return json.loads(done.read_text())
        torch.manual_seed(self.cfg.seed)
        loader = build_loader(dataset, self.cfg.batch_size, shuffle=True, workers=1, seed=self.cfg.seed,
                              drop_last=len(dataset) >= self.cfg.batch_size)
        config = TrainConfig(epochs=10 ** 6, max_steps=steps, optimizer=self.cfg.optimizer, lr=self.cfg.lr,
                             weight_decay=self.cfg.weight_decay, warmup_steps=min(100, steps // 5),
                             checkpoint_every=max(50, steps // 4))
        before = 0
        if (out_dir / "last.pt").exists():
            before = int(load_checkpoint(out_dir / "last.pt", required_keys=("step",))["step"])
        result = train(model, loader, config, device=self.cfg.device, out_dir=out_dir, meta=meta,
                       progress=self.cfg.progress)
        ran = result["steps"] - before
        result["s_per_step"] = result["seconds"] / ran if ran > 0 else math.nan
        _write_json(done, result)
        return result

    # -- stage 1 -----------------------------------------------------------------------------
    def stage_backbone(self) -> dict:
        from torch.utils.data import Subset

        from nasx.spaces.nas_fcos import BASELINE

        self.say(f"[1/5] backbone {self.cfg.backbone} with the baseline decoder, {self.cfg.backbone_steps} steps "
                 f"on {len(self.meta_train)} meta-train images")
        model = self.build_detector(BASELINE)
        result = self.train_detector(model, Subset(self.train_aug, self.meta_train), self.cfg.backbone_steps,
                                     self.out / "backbone", {"stage": "backbone"})
        self.trunk_state = {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}
        self.backbone_model = model
        return result

    # -- stage 2 -----------------------------------------------------------------------------
    def stage_cache(self):
        from nasx.evaluate.feature_cache import FeatureCache

        ckpt = self.out / "backbone" / "last.pt"
        fingerprint = {"backbone": self.cfg.backbone, "norm": self.cfg.backbone_norm,
                       "checkpoint_mtime_ns": ckpt.stat().st_mtime_ns, "data": str(self.data.resolve()),
                       "size": self.cfg.size, "num_train": len(self.train_plain)}
        root = self.out / "cache"
        if not FeatureCache.matches(root, fingerprint):
            self.say("[2/5] caching C3-C5 of every training image")
            FeatureCache.build(self.backbone_model.backbone, self.train_plain, root, input_size=self.input_size,
                               batch_size=64, device=self.cfg.device, fingerprint=fingerprint,
                               progress=self.cfg.progress)
        cache = FeatureCache(root)
        self.say(f"[2/5] feature cache: {len(cache)} images, {cache.nbytes / 2 ** 20:.1f} MiB at {root}")
        return cache

    # -- stage 3 -----------------------------------------------------------------------------
    def proxy(self):
        from nasx.evaluate.proxy import DecoderProxy

        return DecoderProxy(self.out / "cache", self.meta_train, self.meta_val, space=self.space,
                            num_classes=self.num_classes, detector_kwargs=self.detector_kwargs(),
                            backbone={"encoding": self.cfg.backbone, "norm": self.cfg.backbone_norm},
                            config=self.cfg.proxy, device=self.cfg.device, weights_dir=self.out / "decoders")

    def stage_search(self, backbone_s_per_step: float):
        from nasx.search.controller_search import ControllerSearch
        from nasx.search.results import ResultsLog
        from nasx.search.workers import make_workers
        from nasx.spaces.nas_fcos import NasFcosArch

        results = ResultsLog(self.out / "results.jsonl")
        proxy = self.proxy()
        baseline = NasFcosArch.parse("baseline").to_string()
        if baseline not in results:
            try:
                out = proxy(baseline)
            except Exception as e:  # the baseline must score: nothing to compare against otherwise
                raise RuntimeError(f"the baseline decoder failed on the proxy task: {type(e).__name__}: {e}") from e
            results.append({"encoding": baseline, "source": "baseline", "round": -1, **out})
        # What the rest of the run will take: retraining (top-k + baseline) at stage 1's speed, plus
        # evaluation. A stage 1 resumed after its last step measured no speed: keep a quarter back.
        if math.isfinite(backbone_s_per_step):
            retrain_estimate = (self.cfg.top_k + 1) * (self.cfg.retrain_steps * backbone_s_per_step + 10)
        else:
            retrain_estimate = self.cfg.budget_minutes * 60 / 4
        used = time.monotonic() - self.t0
        budget = self.cfg.budget_minutes * 60 - used - retrain_estimate
        self.say(f"[3/5] search: {max(budget, 0) / 60:.1f} min for the controller (retraining will take about "
                 f"{retrain_estimate / 60:.1f} min), at least {self.cfg.min_archs} architectures")
        search = ControllerSearch(self.space, round_size=self.cfg.round_size, seed=self.cfg.seed)
        done = self.out / "search_done.json"
        if done.exists():  # retraining has begun: the set of candidates is final
            summary = json.loads(done.read_text())
        else:
            with make_workers(self.cfg.workers) as workers:
                summary = search.run(proxy, results, state_path=self.out / "search_state.pt", workers=workers,
                                     budget_seconds=max(budget, 0.0), max_evaluations=self.cfg.max_archs,
                                     min_evaluations=self.cfg.min_archs, progress=self.cfg.progress)
            _write_json(done, summary)
        failed = sum(1 for r in results if r.get("status") != "ok")
        self.say(f"[3/5] searched {summary['evaluated']} architectures in {summary['rounds']} rounds "
                 f"({failed} failed)")
        return results, search

    # -- stage 4 -----------------------------------------------------------------------------
    def stage_retrain(self, results, search) -> list[dict]:
        from nasx.data import build_loader
        from nasx.evaluate import evaluate_detector, measure_latency
        from nasx.search.results import ResultsLog

        baseline = [r for r in results if r.get("source") == "baseline"][0]
        searched = [r for r in search.best(results, len(results)) if r.get("source") == "search"
                    and r["encoding"] != baseline["encoding"]][: self.cfg.top_k]
        todo = [("baseline", baseline)] + [(f"top{i + 1}", r) for i, r in enumerate(searched)]
        retrained = ResultsLog(self.out / "retrained.jsonl")
        for n, (name, rec) in enumerate(todo):
            if rec["encoding"] in retrained:
                continue
            self.say(f"[4/5] retrain {n + 1}/{len(todo)} ({name}, proxy reward {rec['reward']:.3f}) "
                     f"for {self.cfg.retrain_steps} steps")
            model = self.build_detector(rec["encoding"], self.trunk_state)
            self.inherit_decoder(model, rec)
            run_dir = self.out / "retrain" / arch_key(rec["encoding"])
            meta = {"stage": "retrain", "arch": rec["encoding"], "input_size": list(self.input_size)}
            result = self.train_detector(model, self.train_aug, self.cfg.retrain_steps, run_dir, meta)
            loader = build_loader(self.val, 32, workers=1)
            metrics = evaluate_detector(model, self.val, loader, device=self.cfg.device)
            latency = measure_latency(model, torch.rand(1, 3, *self.input_size), device=self.cfg.device).median_ms
            retrained.append({"encoding": rec["encoding"], "name": name, "map": metrics["AP"], "metrics": metrics,
                              "reward": rec["reward"], "params": rec["params"], "macs": rec["macs"],
                              "latency_ms": latency, "retrain_s_per_step": result["s_per_step"],
                              "proxy_s_per_step": rec["s_per_step"], "checkpoint": str(run_dir / "last.pt")})
            self.say(f"      mAP {metrics['AP']:.3f} (AP50 {metrics['AP50']:.3f}), {rec['macs'] / 1e9:.3f} GMACs")
        return [dict(retrained.get(rec["encoding"]), name=name) for name, rec in todo]

    @staticmethod
    def inherit_decoder(model, rec: dict) -> None:
        """Start the decoder from the weights it reached on the proxy task (weight inheritance):
        the short retraining then fine-tunes backbone and decoder together instead of
        training the decoder from scratch."""
        from nasx.train.checkpoint import load_checkpoint

        if not rec.get("weights"):
            return
        state = load_checkpoint(rec["weights"], required_keys=("neck", "head"))
        if state.get("encoding") != rec["encoding"]:
            raise ValueError(f"{rec['weights']} holds the weights of another architecture")
        model.neck.load_state_dict(state["neck"])
        model.head.load_state_dict(state["head"])

    # -- stage 5 -----------------------------------------------------------------------------
    def stage_report(self, results, rows: list[dict]) -> dict:
        from nasx.search.archive import ParetoArchive

        base = rows[0]
        searched = rows[1:]
        best = max(searched, key=lambda r: (r["map"], -r["macs"]))
        speedups = [r["retrain_s_per_step"] / r["proxy_s_per_step"] for r in rows
                    if r.get("proxy_s_per_step") and r.get("retrain_s_per_step")]

        def summary(r):
            return {"arch": r["encoding"], "map": r["map"], "ap50": r["metrics"]["AP50"], "macs": r["macs"],
                    "params": r["params"], "latency_ms": r["latency_ms"], "proxy_reward": r["reward"]}

        report = {
            "baseline": summary(base), "best": summary(best),
            "searched": sum(1 for r in results if r.get("source") == "search"),
            "failed": sum(1 for r in results if r.get("status") != "ok"),
            "retrained": [dict(summary(r), name=r["name"]) for r in rows],
            "proxy_speedup": float(np.median(speedups)) if speedups else None,
            "proxy_speedups": speedups,
            "kendall_tau": kendall_tau([r["reward"] for r in rows], [r["map"] for r in rows]),
            "kendall_tau_n": len(rows),
            "seconds": time.monotonic() - self.t0,
            "config": json.loads(json.dumps(asdict(self.cfg))),
        }
        _write_json(self.out / "report.json", report)
        _write_json(self.out / "best.json", {"arch": best["encoding"], "map": best["map"], "macs": best["macs"],
                                             "params": best["params"], "checkpoint": "best.pt",
                                             "backbone": self.cfg.backbone, "channels": self.cfg.channels})
        shutil.copyfile(best["checkpoint"], self.out / "best.pt")
        archive = ParetoArchive(objectives=("mAP", "GMACs"), maximize=("mAP",))
        for r in searched:
            archive.add(r["encoding"], {"mAP": r["map"], "GMACs": r["macs"] / 1e9}, {"name": r["name"]})
        archive.save(self.out / "archive.json")
        archive.plot(self.out / "pareto.png", baselines={"baseline FPN + head": (base["macs"] / 1e9, base["map"]),
                                                         "best searched": (best["macs"] / 1e9, best["map"])},
                     title=f"NAS-FCOS on {self.data.name}: retrained decoders")
        return report


def _write_json(path: Path, data) -> None:
    """Atomically, as standard JSON (NaN, e.g. an undefined Kendall tau, becomes null)."""
    from nasx.search.results import json_safe

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def format_table(report: dict) -> str:
    """The baseline-vs-best table ``make demo`` prints."""
    lines = [f"{'decoder':<10} {'mAP':>6} {'AP50':>6} {'GMACs':>7} {'params':>8} {'latency ms':>10} {'proxy reward':>12}"]
    for name in ("baseline", "best"):
        r = report[name]
        lines.append(f"{name:<10} {r['map']:>6.3f} {r['ap50']:>6.3f} {r['macs'] / 1e9:>7.3f} {r['params'] / 1e6:>7.3f}M "
                     f"{r['latency_ms']:>10.2f} {r['proxy_reward']:>12.3f}")
    sp = report["proxy_speedup"]
    lines.append(f"searched {report['searched']} architectures ({report['failed']} failed); proxy "
                 f"{'n/a' if sp is None else f'{sp:.1f}x'} faster than training on images; Kendall tau "
                 f"{report['kendall_tau']:.2f} over {report['kendall_tau_n']} retrained")
    return "\n".join(lines)


def run_nas_fcos(cfg: NasFcosRunConfig) -> dict:
    """Run (or resume) the whole pipeline; returns the report."""
    torch.manual_seed(cfg.seed)
    run = _Run(cfg)
    run.check_config()
    run.datasets()
    stage1 = run.stage_backbone()
    run.stage_cache()
    results, search = run.stage_search(stage1["s_per_step"])
    rows = run.stage_retrain(results, search)
    report = run.stage_report(results, rows)
    run.say("[5/5] " + str(cfg.out) + "/report.json, pareto.png, best.json, best.pt\n" + format_table(report))
    return report
