"""NAS-FCOS end to end (seed 004): the run behind ``nasx search nas-fcos`` and ``make demo``.

Its own stages, on the shared kit (run directory, search loop, retrain-and-score, report):

1. **backbone** — train splits into meta-train / meta-val (``split.json``); FCOS with the
   hand-designed decoder (:data:`~nasx.spaces.nas_fcos.BASELINE`) trains on meta-train images
   (``backbone/``). Its trunk is what every decoder is searched and retrained on.
2. **cache** — C3-C5 of every train image once (``cache/``, memory-mapped).
3. **search** — a strategy (the LSTM controller + PPO of the paper, or random search) proposes
   decoders on :func:`~nasx.search.loop.run_search`; each is trained on cached features only
   (:class:`~nasx.evaluate.proxy.DecoderProxy`) and scored by its meta-val loss. The baseline is
   scored the same way first. The search gets the budget minus the estimated retraining
   (``retrain_seconds``, replanned every round from the best candidates so far), but at least
   ``min_archs`` architectures.
4. **retrain** — the baseline and the top-k decoders by reward train with the backbone on
   images, the same steps for all: backbone from stage 1, decoder from the weights it reached on
   the proxy task (weight inheritance, so a CPU budget can afford the retraining); scored by
   COCO mAP on val.
5. **report** — ``report.json``, ``pareto.png``, ``best.json`` and ``best.pt``.

A run killed at any point (SIGKILL included) and started again with the same command continues
(see :mod:`nasx.pipelines.rundir`). Once the search has ended its candidates are final, even if
the run is resumed with a larger budget.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nasx.evaluate.proxy import ProxyConfig
from nasx.models.layers.norm import NORMS
from nasx.pipelines.html_report import write_html_report
from nasx.pipelines.report import format_table, pareto_plot, publish_best, row_summary, write_report
from nasx.pipelines.retrain import Candidate, retrain_and_score
from nasx.pipelines.rundir import RunDir
from nasx.pipelines.run_settings import RESUMABLE, RunSettings, opt
from nasx.pipelines.tensorboard import RunLog
from nasx.pipelines.training import TrainRecipe, train_steps
from nasx.train.optim import LR_DEFAULTS_TEXT, OPTIMIZER_DEFAULTS, optimizer_settings

__all__ = ["NasFcosConfig", "run_nas_fcos", "format_summary", "STRATEGIES"]

log = logging.getLogger(__name__)

STRATEGIES = ("ppo", "random")
# How to run, not what to compute: these may change when a run is resumed.


@dataclass
class NasFcosConfig(RunSettings):
    """The settings of a NAS-FCOS run; each field is a flag of ``nasx search nas-fcos``."""

    size: int = field(default=128, metadata=opt("input image side in pixels"))
    backbone: str = field(default="basicblock_16_1-21-21-21", metadata=opt("backbone encoding", metavar="ENCODING"))
    backbone_norm: str = field(default="gn", metadata=opt("backbone norm", choices=NORMS))
    channels: int = field(default=32, metadata=opt("decoder width (searched FPN and head, and the baseline)"))
    meta_val_fraction: float = field(default=0.1, metadata=opt("share of train held out for the proxy reward",
                                                               flag="--meta-val", metavar="FRACTION"))
    backbone_steps: int = field(default=1500, metadata=opt("steps training the backbone with the baseline decoder"))
    retrain_steps: int = field(default=80, metadata=opt("steps retraining each chosen decoder with the backbone"))
    batch_size: int = field(default=16, metadata=opt("images per step of the image training stages"))
    optimizer: str = field(default="adamw", metadata=opt("optimizer of the image training stages",
                                                         choices=tuple(OPTIMIZER_DEFAULTS)))
    lr: Optional[float] = field(default=None, metadata=opt(f"learning rate of the image training stages "
                                                           f"(none: {LR_DEFAULTS_TEXT})"))
    weight_decay: Optional[float] = field(default=None, metadata=opt("weight decay of the image training stages "
                                                                     "(none: the optimizer's default)"))
    proxy: ProxyConfig = field(default_factory=lambda: ProxyConfig(steps=30),
                               metadata=opt("the proxy task: a decoder trained on cached features"))
    strategy: str = field(default="ppo", metadata=opt("search strategy: the paper's LSTM controller + PPO, "
                                                      "or random search", choices=STRATEGIES))
    round_size: int = field(default=4, metadata=opt("architectures per round (per PPO update)"))
    top_k: int = field(default=8, metadata=opt("searched decoders retrained on images (the baseline is too)"))
    min_archs: int = field(default=20, metadata=opt("architectures searched even past the budget"))
    max_archs: Optional[int] = field(default=None, metadata=opt("stop the search after this many architectures"))
    seed: int = field(default=0, metadata=opt("seed of the split, the training and the strategy"))

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.proxy, dict):
            self.proxy = ProxyConfig(**self.proxy)
        # config.json records the values used, not None
        settings = optimizer_settings(self.optimizer, self.lr, self.weight_decay)
        self.lr, self.weight_decay = settings["lr"], settings["weight_decay"]
        if not 0 < self.meta_val_fraction < 1:
            raise ValueError(f"meta_val_fraction must be in (0, 1), got {self.meta_val_fraction}")
        if self.top_k < 1 or self.min_archs < self.top_k:
            raise ValueError(f"expected 1 <= top_k <= min_archs, got top_k={self.top_k}, min_archs={self.min_archs}")
        for name in ("backbone_steps", "retrain_steps", "batch_size", "channels", "size", "round_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")


class _NasFcos:
    """One run; each stage method is idempotent (see the module docstring)."""

    def __init__(self, cfg: NasFcosConfig):
        from nasx.spaces.nas_fcos import NasFcosSpace

        self.cfg = cfg
        self.run = RunDir(cfg.out, pipeline="nas-fcos", config=cfg, resumable=RESUMABLE)
        self.space = NasFcosSpace(channels=cfg.channels)
        self.runlog = RunLog(self.run.path("tb"), enabled=False)   # opened once the settings are checked
        self.recipe = TrainRecipe(batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=cfg.lr,
                                  weight_decay=cfg.weight_decay, seed=cfg.seed, device=cfg.device,
                                  progress=cfg.progress)

    # -- data --------------------------------------------------------------------------------
    def open_data(self) -> None:
        from nasx.atomic import read_json, write_json
        from nasx.data import coco_layout_dataset
        from nasx.data.transforms import detection_transforms, resized_shape

        cfg, root = self.cfg, self.cfg.data
        self.train_aug = coco_layout_dataset(root, "train", transforms=detection_transforms(True, cfg.size))
        self.val = coco_layout_dataset(root, "val", transforms=detection_transforms(False, cfg.size))
        self.train_plain = coco_layout_dataset(root, "train", transforms=detection_transforms(False, cfg.size))
        self.num_classes, n = self.train_aug.num_classes, len(self.train_aug)
        if n < 10:
            raise ValueError(f"--data {root}: {n} training images; the search needs at least 10")
        path = self.run.path("split.json")
        if path.exists():
            split = read_json(path)
            if split["num_train"] != n:
                raise ValueError(f"{path}: the run was split over {split['num_train']} training images, "
                                 f"{root} now has {n}; use another --out")
        else:
            perm = np.random.default_rng(cfg.seed).permutation(n)
            n_val = max(1, int(round(n * cfg.meta_val_fraction)))
            split = {"num_train": n, "meta_val": sorted(perm[:n_val].tolist()), "meta_train": sorted(perm[n_val:].tolist())}
            write_json(path, split)
        self.meta_train, self.meta_val = split["meta_train"], split["meta_val"]
        # The cache holds every image padded to one size: the largest resized image, to a multiple of 32.
        shapes = {resized_shape(im["height"], im["width"], cfg.size) for im in self.train_plain.coco.imgs.values()}
        self.input_size = tuple(-(-max(s[k] for s in shapes) // 32) * 32 for k in (0, 1))

    def build(self, encoding: str) -> dict:
        """How the detector with decoder ``encoding`` is built (and rebuilt from a checkpoint)."""
        return {"detector": "nas_fcos", "backbone": self.cfg.backbone, "norm": self.cfg.backbone_norm,
                "arch": encoding, "fpn_channels": self.cfg.channels, "num_classes": self.num_classes}

    def meta(self) -> dict:
        return {"size": self.cfg.size, "class_names": self.train_aug.class_names}

    # -- 1. backbone ---------------------------------------------------------------------------
    def stage_backbone(self) -> dict:
        from torch.utils.data import Subset

        from nasx.spaces.detectors import build_from_spec

        cfg = self.cfg
        log.info("[1/5] backbone %s with the baseline decoder, %d steps on %d meta-train images",
                 cfg.backbone, cfg.backbone_steps, len(self.meta_train))
        build = self.build(self.space.canonical("baseline"))
        self.backbone_model = build_from_spec(build)
        result = train_steps(self.backbone_model, Subset(self.train_aug, self.meta_train), steps=cfg.backbone_steps,
                             out_dir=self.run.path("backbone"), recipe=self.recipe,
                             meta={**self.meta(), "build": build, "stage": "backbone"}, on_checkpoint=self.run.clock.tick,
                             on_log=self.runlog.training("backbone"))
        self.trunk_state = {k: v.detach().clone() for k, v in self.backbone_model.backbone.state_dict().items()}
        return result

    # -- 2. cache ------------------------------------------------------------------------------
    def stage_cache(self) -> None:
        from nasx.evaluate.feature_cache import FeatureCache

        cfg, root = self.cfg, self.run.path("cache")
        ckpt = self.run.path("backbone", "last.pt")
        # The data by its annotations' content, not its path: a moved dataset keeps its cache.
        annotations = Path(cfg.data, "annotations", "instances_train.json").read_bytes()
        fingerprint = {"backbone": cfg.backbone, "norm": cfg.backbone_norm, "checkpoint_mtime_ns": ckpt.stat().st_mtime_ns,
                       "size": cfg.size, "annotations_sha1": hashlib.sha1(annotations).hexdigest()}
        if not FeatureCache.matches(root, fingerprint):
            log.info("[2/5] caching C3-C5 of every training image")
            FeatureCache.build(self.backbone_model.backbone, self.train_plain, root, input_size=self.input_size,
                               batch_size=64, device=cfg.device, fingerprint=fingerprint, progress=cfg.progress)
        cache = FeatureCache(root)
        log.info("[2/5] feature cache: %d images, %.1f MiB at %s", len(cache), cache.nbytes / 2 ** 20, root)

    # -- 3. search -----------------------------------------------------------------------------
    @functools.cached_property
    def proxy(self):
        """The candidates' evaluator (after :meth:`open_data`); also where their weights are."""
        from nasx.evaluate.proxy import DecoderProxy

        return DecoderProxy(self.run.path("cache"), self.meta_train, self.meta_val, space=self.space,
                            num_classes=self.num_classes, detector_kwargs={},
                            backbone={"encoding": self.cfg.backbone, "norm": self.cfg.backbone_norm},
                            config=self.cfg.proxy, device=self.cfg.device, weights_dir=self.run.path("decoders"))

    def retrain_seconds(self, results, backbone_s_per_step: float) -> float:
        """What the retraining will take: the baseline at stage 1's speed, and each of the top-k
        so far (or, until there are k, the mean of them) slower by its decoder's extra cost.

        A decoder's cost is its proxy step time relative to the baseline's, both measured by the
        workers; it scales only the decoder's share of an image step, estimated as the baseline's
        proxy step over stage 1's (at most 1: conservative when threads differ). Plus 10 s of
        scoring each. Stage 1 resumed after its last step measured no speed: a quarter of the budget.
        """
        from nasx.search import best_records

        cfg = self.cfg
        base = results.get(self.space.canonical("baseline"))
        if not math.isfinite(backbone_s_per_step) or not base or not base.get("s_per_step"):
            return self.run.clock.budget_seconds / 4
        p0 = base["s_per_step"] * cfg.batch_size / cfg.proxy.batch_size
        share = min(1.0, p0 / backbone_s_per_step)
        slower = [1 + share * max(0.0, r["s_per_step"] / base["s_per_step"] - 1)
                  for r in best_records(results, cfg.top_k, source="search") if r.get("s_per_step")]
        slower += [sum(slower) / len(slower) if slower else 1.0] * (cfg.top_k - len(slower))
        return sum(cfg.retrain_steps * backbone_s_per_step * q + 10 for q in [1.0, *slower])

    def stage_search(self, backbone_s_per_step: float):
        from nasx.search import ControllerStrategy, RandomSearch, ResultsLog, make_workers, run_search

        cfg, run = self.cfg, self.run
        results = ResultsLog(run.path("results.jsonl"))
        summary = run.done("search")
        if summary is None:  # once the search has ended, its candidates are final
            proxy = self.proxy
            strategy = (ControllerStrategy(self.space, seed=cfg.seed) if cfg.strategy == "ppo"
                        else RandomSearch(self.space, seed=cfg.seed))
            with make_workers(cfg.workers, backend=cfg.backend, ray_address=cfg.ray_address) as workers:
                # The baseline first, the same way as the candidates (its proxy step time is the
                # yardstick of theirs): the search is pointless without it, so its failure is fatal.
                baseline = self.space.canonical("baseline")
                if baseline not in results:
                    (_, out), = list(workers.map_unordered(proxy, [baseline]))
                    if out.get("status") != "ok":
                        raise RuntimeError(f"the baseline decoder failed on the proxy task: {out.get('error')}")
                    self.runlog.candidate(results.append({"encoding": baseline, "source": "baseline", "round": -1,
                                                          **out}))

                def time_left() -> float:  # replanned every round from the best candidates so far
                    return run.clock.left() - self.retrain_seconds(results, backbone_s_per_step)

                log.info("[3/5] search (%s): %.1f min left for it (retraining will take about %.1f min), at least "
                         "%d architectures", cfg.strategy, max(time_left(), 0) / 60,
                         self.retrain_seconds(results, backbone_s_per_step) / 60, cfg.min_archs)
                out = run_search(strategy, proxy, results, state_path=run.path("search_state.pt"),
                                 round_size=cfg.round_size, workers=workers, time_left=time_left,
                                 max_evaluations=cfg.max_archs, min_evaluations=cfg.min_archs, progress=cfg.progress,
                                 on_round=lambda entry: (run.clock.save(), self.runlog.round(entry)),
                                 on_record=self.runlog.candidate)
            summary = run.mark_done("search", {k: out[k] for k in ("rounds", "evaluated", "stopped")})
            log.info("[3/5] retraining the best will take about %.1f min; %.1f min left",
                     self.retrain_seconds(results, backbone_s_per_step) / 60, run.clock.left() / 60)
        failed = sum(1 for r in results if r.get("status") != "ok")
        log.info("[3/5] searched %d architectures in %d rounds (%d failed)", summary["evaluated"], summary["rounds"],
                 failed)
        return results, summary

    # -- 4. retrain ----------------------------------------------------------------------------
    def inherit(self, model, cand: Candidate) -> None:
        """Backbone from stage 1; decoder from the weights it reached on the proxy task, so the
        short retraining fine-tunes both instead of training the decoder from scratch."""
        from nasx.train.checkpoint import load_checkpoint

        model.backbone.load_state_dict(self.trunk_state)
        path = self.proxy.weights_path(cand.encoding)
        if not path.exists():
            return
        state = load_checkpoint(path, required_keys=("neck", "head"))
        if state.get("encoding") != cand.encoding:
            raise ValueError(f"{path} holds the weights of another architecture")
        model.neck.load_state_dict(state["neck"])
        model.head.load_state_dict(state["head"])

    def stage_retrain(self, results) -> list[dict]:
        from nasx.search import best_records

        base = next(r for r in results if r.get("source") == "baseline")
        top = best_records(results, self.cfg.top_k, source="search")
        candidates = [Candidate(name, r["encoding"], self.build(r["encoding"]),
                                {"reward": r["reward"], "proxy_s_per_step": r["s_per_step"]})
                      for name, r in [("baseline", base)] + [(f"top{i + 1}", r) for i, r in enumerate(top)]]
        return retrain_and_score(self.run, candidates, train_set=self.train_aug, val_set=self.val,
                                 steps=self.cfg.retrain_steps, recipe=self.recipe, input_size=self.input_size,
                                 meta=self.meta(), prepare=self.inherit, runlog=self.runlog)

    # -- 5. report -----------------------------------------------------------------------------
    def stage_report(self, results, summary: dict, rows: list[dict]) -> dict:
        from nasx.evaluate.rank import kendall_tau

        base, searched = rows[0], rows[1:]
        best = max(searched, key=lambda r: (r["map"], -r["macs"]))
        speedups = [r["train_s_per_step"] / r["proxy_s_per_step"] for r in rows
                    if r.get("proxy_s_per_step") and r.get("train_s_per_step")]
        extra = ("proxy_reward",)
        for r in rows:
            r["proxy_reward"] = r["reward"]
        report = write_report(self.run, {
            "baseline": row_summary(base, extra), "best": row_summary(best, extra),
            "searched": sum(1 for r in results if r.get("source") == "search"),
            "failed": sum(1 for r in results if r.get("status") != "ok"),
            "strategy": self.cfg.strategy, "rounds": summary["rounds"], "stopped": summary["stopped"],
            "retrained": [dict(row_summary(r, extra), name=r["name"]) for r in rows],
            "proxy_speedup": float(np.median(speedups)) if speedups else None, "proxy_speedups": speedups,
            "kendall_tau": kendall_tau([r["reward"] for r in rows], [r["map"] for r in rows]),
            "kendall_tau_n": len(rows)})
        publish_best(self.run, best, backbone=self.cfg.backbone, channels=self.cfg.channels)
        pareto_plot(self.run, searched, marked={"baseline FPN + head": base, "best searched": best},
                    title=f"NAS-FCOS on {Path(self.cfg.data).name}: retrained decoders")
        log.info("[5/5] %s/report.json, report.html, pareto.png, best.json, best.pt", self.cfg.out)
        return report


def format_summary(report: dict) -> str:
    """The baseline-vs-best table ``make demo`` ends with."""
    table = format_table({"baseline": report["baseline"], "best": report["best"]}, first="decoder",
                         extra=[("proxy reward", "proxy_reward")])
    sp = report["proxy_speedup"]
    return (f"{table}\nsearched {report['searched']} architectures ({report['failed']} failed, {report['strategy']}); "
            f"proxy {'n/a' if sp is None else f'{sp:.1f}x'} faster than training on images; Kendall tau "
            f"{report['kendall_tau']:.2f} over {report['kendall_tau_n']} retrained")


def run_nas_fcos(cfg: NasFcosConfig) -> dict:
    """Run (or resume) the whole pipeline; returns the report."""
    from nasx.search.workers import check_backend

    check_backend(cfg.backend)
    torch.manual_seed(cfg.seed)
    nas = _NasFcos(cfg)
    nas.run.freeze_config()
    nas.runlog = RunLog(nas.run.path("tb"), enabled=cfg.tensorboard)
    try:
        nas.open_data()
        stage1 = nas.stage_backbone()
        nas.run.reached("backbone", {"steps": stage1["steps"], "s_per_step": stage1["s_per_step"]})
        nas.stage_cache()
        nas.run.reached("cache")
        results, summary = nas.stage_search(stage1["s_per_step"])
        rows = nas.stage_retrain(results)
        nas.run.reached("retrain", {"retrained": len(rows)})
        report = nas.stage_report(results, summary, rows)
        nas.run.reached("report")
        write_html_report(nas.run.root)     # last: it shows the stage times
    finally:
        nas.runlog.close()
    return report
