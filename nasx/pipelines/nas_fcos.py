"""NAS-FCOS end to end (seed 004): the run behind ``nasx search nas-fcos`` and ``make demo``.

Its own stages, on the shared kit (run directory, search loop, retrain-and-score, report):

1. **backbone** — train splits into meta-train / meta-val (``split.json``); FCOS with the
   hand-designed decoder (:data:`~nasx.spaces.nas_fcos.BASELINE`) trains on meta-train images
   (``backbone/``). Its trunk is what every decoder is searched on.
2. **cache** — C3-C5 of every train image once (``cache/``, memory-mapped); with ``--final-init
   classifier`` (the default) also **seed**: the same backbone trained as a classifier on the
   training set's object crops (``seed/``), the final stage's start, shaped by no decoder.
3. **search** — a strategy (the LSTM controller + PPO of the paper, or random search) proposes
   decoders on :func:`~nasx.search.loop.run_search`; each is trained on cached features only
   (:class:`~nasx.evaluate.proxy.DecoderProxy`) and scored by its meta-val loss, less a hinge
   penalty above ``--macs-limit`` times the baseline's MACs when one is set
   (:class:`~nasx.evaluate.cost_penalty.CostPenalized`). The baseline is scored the same way
   first. The search gets the budget minus the estimated retraining (``retrain_seconds``,
   replanned every round from the best candidates so far), but at least ``min_archs``
   architectures; when even those cannot fit, the run says so as the search starts.
4. **retrain** — the baseline and the top-k decoders by reward, all the same way (``--final-init``):
   ``classifier``, the seed backbone and fresh decoder weights; ``scratch``; or ``inherit``, the
   stage-1 backbone (trained with the baseline decoder, so it favours it) and each decoder's proxy
   weights. The same steps for all, in rank order, each left out whose predicted time would end
   the run more than 5 % past the budget; scored by COCO mAP on val. Another mode on the same run
   retrains the same candidates into its own log (``retrained-<mode>.jsonl``).
5. **report** — ``report.json`` (the best retrained decoder within the limit, which searched
   decoders the baseline dominates, every mode retrained so far), ``pareto.png`` (the front over
   everything retrained, the baseline included), ``best.json`` and ``best.pt``.

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
from nasx.models.heads.fcos_head import BOX_ACTIVATIONS
from nasx.models.layers.norm import NORMS
from nasx.pipelines.html_report import write_html_report
from nasx.pipelines.report import format_table, pareto_plot, publish_best, row_summary, write_report
from nasx.pipelines.retrain import Candidate, retrain_and_score
from nasx.pipelines.rundir import RunDir
from nasx.pipelines.run_settings import RESUMABLE, RunSettings, opt
from nasx.pipelines.tensorboard import RunLog
from nasx.pipelines.training import TrainRecipe, train_steps
from nasx.search.loop import trained
from nasx.train.optim import LR_DEFAULTS_TEXT, OPTIMIZER_DEFAULTS, optimizer_settings

__all__ = ["NasFcosConfig", "run_nas_fcos", "format_summary", "STRATEGIES"]

log = logging.getLogger(__name__)

STRATEGIES = ("ppo", "random")
# How every decoder (the baseline's too) starts its final training; see the module docstring.
FINAL_INITS = ("classifier", "scratch", "inherit")
# The final stage can be rerun in another mode on the same search: resuming with another --final-init
# retrains into its own log; the search, its candidates and the other mode's results stay.
NAS_FCOS_RESUMABLE = RESUMABLE | {"final_init"}


@dataclass
class NasFcosConfig(RunSettings):
    """The settings of a NAS-FCOS run; each field is a flag of ``nasx search nas-fcos``."""

    size: int = field(default=128, metadata=opt("input image side in pixels"))
    backbone: str = field(default="basicblock_16_1-21-21-21", metadata=opt("backbone encoding", metavar="ENCODING"))
    backbone_norm: str = field(default="gn", metadata=opt("backbone norm", choices=NORMS))
    channels: int = field(default=32, metadata=opt("decoder width (searched FPN and head, and the baseline)"))
    box_activation: str = field(default="relu", metadata=opt(
        "the FCOS box branch of every decoder: relu (the FCOS repository's) or exp (the FCOS paper's exp(s·x)); a "
        "ReLU branch can die in training, its regression loss stuck at 1.000", choices=BOX_ACTIVATIONS))
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
    macs_limit: Optional[float] = field(default=None, metadata=opt(
        "cost limit of the search: a decoder's whole-detector MACs relative to the baseline decoder's (1: no more "
        "than the baseline); the reward loses β·max(0, MACs/limit − 1), the report's best is the best retrained "
        "decoder within it; none: no limit", metavar="RATIO"))
    macs_beta: float = field(default=1.0, metadata=opt("β of the MACs limit, in reward (meta-val loss) units: 1 "
                                                       "makes it all but hard"))
    train_over_limit: bool = field(default=False, metadata=opt(
        "also train the candidates over the MACs limit (by default they are not trained: their MACs, counted "
        "without training, give them the baseline's reward less the penalty, and they do not count toward "
        "--min-archs)"))
    final_init: str = field(default="classifier", metadata=opt(
        "how every retrained decoder, the baseline included, starts: classifier (the backbone pre-trained as a "
        "classifier on the training set's object crops, no decoder ever trained with it; fresh decoder weights), "
        "scratch (everything fresh), inherit (the search's backbone, trained with the baseline decoder, and each "
        "decoder's proxy weights: cheaper, but it favours the baseline); resumable: another mode retrains the same "
        "search again", choices=FINAL_INITS))
    seed_steps: int = field(default=600, metadata=opt("steps of the crop classifier (--final-init classifier)"))
    crop_size: int = field(default=48, metadata=opt("side of the crop classifier's object crops in pixels"))
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
        if self.final_init not in FINAL_INITS:
            raise ValueError(f"final_init must be one of {FINAL_INITS}, got {self.final_init!r}")
        if self.macs_limit is not None and not self.macs_limit > 0:
            raise ValueError(f"macs_limit must be > 0 (a ratio to the baseline's MACs), got {self.macs_limit}")
        if not self.macs_beta >= 0 or self.seed_steps < 1 or self.crop_size < 16:
            raise ValueError(f"expected macs_beta >= 0, seed_steps >= 1 and crop_size >= 16, got {self.macs_beta}, "
                             f"{self.seed_steps}, {self.crop_size}")


class _NasFcos:
    """One run; each stage method is idempotent (see the module docstring)."""

    def __init__(self, cfg: NasFcosConfig):
        from nasx.spaces.nas_fcos import NasFcosSpace

        self.cfg = cfg
        self.run = RunDir(cfg.out, pipeline="nas-fcos", config=cfg, resumable=NAS_FCOS_RESUMABLE)
        self.space = NasFcosSpace(channels=cfg.channels, box_activation=cfg.box_activation)
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
        spec = {"detector": "nas_fcos", "backbone": self.cfg.backbone, "norm": self.cfg.backbone_norm,
                "arch": encoding, "fpn_channels": self.cfg.channels, "num_classes": self.num_classes}
        # the default is left out: a run's records and checkpoints then read as before the setting existed
        return spec if self.cfg.box_activation == "relu" else {**spec, "box_activation": self.cfg.box_activation}

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

    # -- 2b. the final stage's backbone ---------------------------------------------------------
    def stage_seed(self) -> Optional[dict]:
        """``--final-init classifier``: the backbone trained as a classifier on the training set's
        object crops (``seed/``), the start of every final training — features no decoder shaped."""
        from nasx.data.crops import ObjectCrops
        from nasx.models.classifier import Classifier
        from nasx.spaces.detectors import build_backbone
        from nasx.train.checkpoint import load_checkpoint
        from nasx.train.classify import evaluate_classifier, train_classifier

        cfg, run = self.cfg, self.run
        if cfg.final_init != "classifier":
            return None
        torch.manual_seed(cfg.seed)
        trunk = build_backbone(cfg.backbone, norm=cfg.backbone_norm)
        model = Classifier(backbone=trunk, feature="c5", channels=trunk.channels["c5"], num_classes=self.num_classes)
        done = run.done("seed")
        if done is None:
            from nasx.data import coco_layout_dataset

            log.info("[2/5] the final stage's backbone: %s as a classifier on object crops, %d steps", cfg.backbone,
                     cfg.seed_steps)
            crops = ObjectCrops(coco_layout_dataset(cfg.data, "train"), size=cfg.crop_size)
            val = ObjectCrops(coco_layout_dataset(cfg.data, "val"), size=cfg.crop_size, train=False)
            result = train_classifier(model, crops, steps=cfg.seed_steps, batch_size=cfg.batch_size * 4,
                                      device=cfg.device, seed=cfg.seed, out_dir=run.path("seed"), progress=cfg.progress,
                                      checkpoint_every=max(50, cfg.seed_steps // 5))
            top1 = evaluate_classifier(model, val, device=cfg.device)
            log.info("      top-1 on %d val crops: %.3f", len(val), top1)
            done = run.mark_done("seed", {"top1": top1, "steps": result["steps"], "train_crops": len(crops),
                                          "s_per_step": result["seconds"] / max(result["steps"], 1)})
        else:
            model.load_state_dict(load_checkpoint(run.path("seed", "last.pt"))["model"])
        self.seed_state = {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}
        return done

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
        slower = [self.step_factor(r, base, backbone_s_per_step)
                  for r in best_records(filter(trained, results), cfg.top_k, source="search") if r.get("s_per_step")]
        slower += [sum(slower) / len(slower) if slower else 1.0] * (cfg.top_k - len(slower))
        return sum(cfg.retrain_steps * backbone_s_per_step * q + 10 for q in [1.0, *slower])

    def step_factor(self, record: dict, base: dict, backbone_s_per_step: float) -> float:
        """How much slower than the baseline's an image step of ``record``'s decoder is: its proxy
        step time relative to the baseline's, scaling the decoder's share of an image step."""
        if not record.get("s_per_step") or not base.get("s_per_step") or not math.isfinite(backbone_s_per_step):
            return 1.0
        p0 = base["s_per_step"] * self.cfg.batch_size / self.cfg.proxy.batch_size
        share = min(1.0, p0 / backbone_s_per_step)
        return 1 + share * max(0.0, record["s_per_step"] / base["s_per_step"] - 1)

    def macs_limit(self, results) -> Optional[float]:
        """The search's MACs limit (``--macs-limit`` times the baseline decoder's MACs), or None."""
        base = results.get(self.space.canonical("baseline"))
        return None if self.cfg.macs_limit is None or not base else self.cfg.macs_limit * base["macs"]

    def evaluator(self, results):
        """The proxy, with the MACs limit in its reward when there is one (and, unless
        ``--train-over-limit``, candidates over it scored by their MACs alone, untrained)."""
        from nasx.evaluate.cost_penalty import CostPenalized

        limit = self.macs_limit(results)
        if limit is None:
            return self.proxy
        if self.cfg.train_over_limit:
            return CostPenalized(self.proxy, limit=limit, beta=self.cfg.macs_beta)
        base = results.get(self.space.canonical("baseline"))
        return CostPenalized(self.proxy, limit=limit, beta=self.cfg.macs_beta,
                             cost_of=functools.partial(self.proxy.cost, latency=False),
                             untrained_reward=base.get("loss_reward", base["reward"]))

    def stage_search(self, backbone_s_per_step: float):
        from nasx.evaluate.cost_penalty import CostPenalized
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
                    if cfg.macs_limit is not None:  # the baseline's reward in the same terms as the candidates'
                        out = CostPenalized(proxy, limit=cfg.macs_limit * out["macs"], beta=cfg.macs_beta).adjust(out)
                    self.runlog.candidate(results.append({"encoding": baseline, "source": "baseline", "round": -1,
                                                          **out}))
                evaluator = self.evaluator(results)
                self.say_if_over_budget(results, backbone_s_per_step)

                def time_left() -> float:  # replanned every round from the best candidates so far
                    return run.clock.left() - self.retrain_seconds(results, backbone_s_per_step)

                log.info("[3/5] search (%s): %.1f min left for it (retraining will take about %.1f min), at least "
                         "%d architectures", cfg.strategy, max(time_left(), 0) / 60,
                         self.retrain_seconds(results, backbone_s_per_step) / 60, cfg.min_archs)
                out = run_search(strategy, evaluator, results, state_path=run.path("search_state.pt"),
                                 round_size=cfg.round_size, workers=workers, time_left=time_left,
                                 max_evaluations=cfg.max_archs, min_evaluations=cfg.min_archs, progress=cfg.progress,
                                 on_round=lambda entry: (run.clock.save(), self.runlog.round(entry)),
                                 on_record=self.runlog.candidate, counted=trained)
            summary = run.mark_done("search", {k: out[k] for k in ("rounds", "evaluated", "stopped")})
            log.info("[3/5] retraining the best will take about %.1f min; %.1f min left",
                     self.retrain_seconds(results, backbone_s_per_step) / 60, run.clock.left() / 60)
        failed = sum(1 for r in results if r.get("status") != "ok")
        log.info("[3/5] searched %d architectures in %d rounds (%d failed)", summary["evaluated"], summary["rounds"],
                 failed)
        return results, summary

    def say_if_over_budget(self, results, backbone_s_per_step: float) -> None:
        """At the search's start: whether ``min_archs`` at the baseline's proxy speed (the fastest a
        candidate is) and the retraining fit in what is left; if not, say by how much at least."""
        cfg = self.cfg
        base = results.get(self.space.canonical("baseline"))
        if not base or not base.get("seconds") or not math.isfinite(self.run.clock.left()):
            return
        searched = sum(1 for r in results if r.get("source") == "search")
        need = (max(0, cfg.min_archs - searched) * base["seconds"] / max(cfg.workers, 1)
                + self.retrain_seconds(results, backbone_s_per_step))
        if need > self.run.clock.left():
            log.warning("[3/5] the budget cannot hold %d architectures and the retraining: they need at least "
                        "%.1f min, %.1f min are left; the run will end at least %.1f min past --budget-minutes (fewer "
                        "--min-archs, --top-k or --retrain-steps would fit)", cfg.min_archs, need / 60,
                        self.run.clock.left() / 60, (need - self.run.clock.left()) / 60)

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

    def start_from_seed(self, model, cand: Candidate) -> None:
        """The crop classifier's backbone; the decoder keeps its fresh weights."""
        model.backbone.load_state_dict(self.seed_state)

    def retrain_log(self, mode: Optional[str] = None) -> tuple[str, str]:
        """(log file, stage name) of a final-init mode's retraining (``inherit``: the original names)."""
        from nasx.pipelines.rundir import retrained_log_name

        mode = mode or self.cfg.final_init
        return retrained_log_name(mode), "retrain" if mode == "inherit" else f"retrain-{mode}"

    def stage_retrain(self, results, backbone_s_per_step: float) -> tuple[list[dict], list[str]]:
        """The baseline and the top-k decoders trained the same way from the same start
        (``--final-init``), in rank order; a decoder whose retraining would end the run more than
        5 % past the budget is left out (the baseline and the best are always retrained). Its time
        is predicted from the retrainings done so far: the baseline's step time, times the
        decoder's proxy step factor, times how far that factor missed for those already retrained.
        Returns (the retrained lines, the names left out)."""
        from nasx.search import best_records

        cfg, run = self.cfg, self.run
        base = next(r for r in results if r.get("source") == "baseline")
        top = best_records(filter(trained, results), cfg.top_k, source="search")
        candidates = [Candidate(name, r["encoding"], self.build(r["encoding"]),
                                {"reward": r["reward"], "loss_reward": r.get("loss_reward", r["reward"]),
                                 "proxy_s_per_step": r["s_per_step"], "step_factor":
                                 self.step_factor(r, base, backbone_s_per_step)})
                      for name, r in [("baseline", base)] + [(f"top{i + 1}", r) for i, r in enumerate(top)]]
        prepare = {"inherit": self.inherit, "classifier": self.start_from_seed, "scratch": None}[cfg.final_init]
        log_name, stage = self.retrain_log()
        log.info("[4/5] retraining the baseline and %d decoders, %d steps each, from %s", len(top), cfg.retrain_steps,
                 {"inherit": "the search's backbone and the proxy's decoder weights",
                  "classifier": "the crop classifier's backbone and fresh decoders",
                  "scratch": "scratch"}[cfg.final_init])
        always = {c.encoding for c in candidates[:2]}
        rows = retrain_and_score(run, candidates, train_set=self.train_aug, val_set=self.val, steps=cfg.retrain_steps,
                                 recipe=self.recipe, input_size=self.input_size, meta=self.meta(), prepare=prepare,
                                 runlog=self.runlog, log_name=log_name, stage=stage,
                                 timing={"runtime": cfg.proxy.latency_runtime},
                                 skip=lambda cand, lines: cand.encoding not in always and not self.fits(cand, lines))
        kept = {r["encoding"] for r in rows}
        left_out = [c.name for c in candidates if c.encoding not in kept]
        if left_out:
            log.warning("[4/5] left out to keep the budget: %s", ", ".join(left_out))
        return rows, left_out

    def fits(self, cand: Candidate, rows: list[dict]) -> bool:
        """Whether retraining ``cand`` ends within 5 % past the budget (predicted from ``rows``)."""
        base = rows[0]["train_s_per_step"]
        missed = [r["train_s_per_step"] / (base * r["step_factor"]) for r in rows[1:] if r.get("step_factor")]
        s_per_step = base * cand.info["step_factor"] * (float(np.median(missed)) if missed else 1.0)
        need = self.cfg.retrain_steps * s_per_step + 10
        return self.run.clock.spent() + need <= 1.05 * self.run.clock.budget_seconds

    # -- 5. report -----------------------------------------------------------------------------
    def stage_report(self, results, summary: dict, rows: list[dict], left_out: list[str]) -> dict:
        from nasx.evaluate.rank import kendall_tau

        cfg = self.cfg
        base, searched = rows[0], rows[1:]
        limit = self.macs_limit(results)
        within = [r for r in searched if limit is None or r["macs"] <= limit * (1 + 1e-9)]
        best = max(within, key=lambda r: (r["map"], -r["macs"])) if within else None
        dominated = [r for r in searched if r["map"] <= base["map"] and r["macs"] >= base["macs"]
                     and (r["map"], r["macs"]) != (base["map"], base["macs"])]
        speedups = [r["train_s_per_step"] / r["proxy_s_per_step"] for r in rows
                    if r.get("proxy_s_per_step") and r.get("train_s_per_step")]
        extra = ("proxy_reward", "loss_reward")
        for r in rows:
            r["proxy_reward"] = r["reward"]
            r.setdefault("loss_reward", r["reward"])
        report = write_report(self.run, {
            "baseline": row_summary(base, extra), "best": None if best is None else row_summary(best, extra),
            "best_beats_baseline": None if best is None else
            bool(best["map"] > base["map"] and best["macs"] <= base["macs"]),
            "macs_limit": None if limit is None else {"ratio": cfg.macs_limit, "macs": limit, "beta": cfg.macs_beta},
            "final_init": cfg.final_init, "seed": self.run.done("seed") if cfg.final_init == "classifier" else None,
            "searched": sum(1 for r in results if r.get("source") == "search"),
            "trained": sum(1 for r in results if r.get("source") == "search" and trained(r)),
            "failed": sum(1 for r in results if r.get("status") != "ok"),
            "strategy": cfg.strategy, "rounds": summary["rounds"], "stopped": summary["stopped"],
            "retrained": [dict(row_summary(r, extra), name=r["name"]) for r in rows],
            "left_out_for_budget": left_out,
            "dominated_by_baseline": [r["name"] for r in dominated],
            "proxy_speedup": float(np.median(speedups)) if speedups else None, "proxy_speedups": speedups,
            # the proxy's ranking quality: its loss reward (without the cost term) against retrained mAP
            "kendall_tau": kendall_tau([r["loss_reward"] for r in rows], [r["map"] for r in rows]),
            "kendall_tau_n": len(rows), "modes": self.mode_summaries()})
        if best is not None:
            publish_best(self.run, best, backbone=cfg.backbone, channels=cfg.channels)
        marked = {"baseline FPN + head": base, **({"best searched" + (" within the limit" if limit else ""): best}
                                                  if best is not None else {})}
        pareto_plot(self.run, rows, marked=marked, rings={"dominated by the baseline": dominated},
                    limit=None if limit is None else (f"MACs limit ({cfg.macs_limit:g}x the baseline)", limit),
                    title=f"NAS-FCOS on {Path(cfg.data).name}: retrained decoders ({cfg.final_init} start)")
        log.info("[5/5] %s/report.json, report.html, pareto.png, best.json, best.pt", cfg.out)
        return report

    def mode_summaries(self) -> dict:
        """Per final-init mode retrained so far (the same search): baseline and searched mAPs, Kendall tau."""
        from nasx.evaluate.rank import kendall_tau
        from nasx.search import ResultsLog

        out = {}
        for mode in FINAL_INITS:
            path = self.run.path(self.retrain_log(mode)[0])
            lines = [r for r in ResultsLog(path)] if path.exists() else []
            base = [r for r in lines if r.get("name") == "baseline"]
            if not base:
                continue
            searched = [r for r in lines if r.get("name") != "baseline"]
            out[mode] = {"baseline_map": base[0]["map"], "searched": {r["name"]: r["map"] for r in searched},
                         "best_searched_map": max((r["map"] for r in searched), default=None),
                         "kendall_tau": kendall_tau([r.get("loss_reward", r["reward"]) for r in lines],
                                                    [r["map"] for r in lines]),
                         "n": len(lines), "minutes": sum(r.get("train_s_per_step", 0) for r in lines)
                         * self.cfg.retrain_steps / 60}
        return out


def format_summary(report: dict) -> str:
    """The baseline-vs-best table ``make demo`` ends with."""
    rows = {"baseline": report["baseline"]}
    if report.get("best"):
        rows["best" + (" within limit" if report.get("macs_limit") else "")] = report["best"]
    table = format_table(rows, first="decoder", extra=[("proxy reward", "proxy_reward")])
    sp = report["proxy_speedup"]
    untrained = report["searched"] - report.get("trained", report["searched"])
    over = f", {untrained} over the MACs limit scored untrained" if untrained else ""
    lines = [table, f"searched {report['searched']} architectures ({report['failed']} failed{over}, "
                    f"{report['strategy']}); proxy {'n/a' if sp is None else f'{sp:.1f}x'} faster than training on "
                    f"images; Kendall tau "
                    f"{report['kendall_tau']:.2f} over {report['kendall_tau_n']} retrained "
                    f"(final training from: {report.get('final_init', 'inherit')})"]
    if report.get("macs_limit") and not report.get("best"):
        lines.append(f"no retrained decoder is within the MACs limit ({report['macs_limit']['ratio']:g}x the baseline)")
    if report.get("best_beats_baseline") is not None:
        lines.append(f"best beats the baseline (more mAP at no more MACs): "
                     f"{'yes' if report['best_beats_baseline'] else 'no'}")
    if report.get("dominated_by_baseline"):
        lines.append(f"dominated by the baseline: {', '.join(report['dominated_by_baseline'])}")
    if report.get("left_out_for_budget"):
        lines.append(f"not retrained, to keep the budget: {', '.join(report['left_out_for_budget'])}")
    return "\n".join(lines)


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
        nas.stage_seed()
        results, summary = nas.stage_search(stage1["s_per_step"])
        rows, left_out = nas.stage_retrain(results, stage1["s_per_step"])
        nas.run.reached(nas.retrain_log()[1], {"retrained": len(rows)})
        report = nas.stage_report(results, summary, rows, left_out)
        nas.run.reached("report")
        write_html_report(nas.run.root)     # last: it shows the stage times
    finally:
        nas.runlog.close()
    return report
