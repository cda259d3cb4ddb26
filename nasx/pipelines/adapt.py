"""Network adaptation end to end (seed 003; FNA, Fang et al. ICLR 2020): a MobileNetV2 seed adapted
to SSDLite by differentiable search with parameter remapping — the run behind ``nasx search adapt``
and ``make demo-adapt``.

Its own stages, on the shared kit (run directory, budget clock, retrain-and-score, report):

1. **seed** — MobileNetV2 (``width``) trained here, since ImageNet weights cannot be downloaded:
   as a classifier on the training set's object crops (:class:`~nasx.data.crops.ObjectCrops`; the
   paper adapts a classification network) or, with ``seed_task="ssdlite"``, as MobileNetV2-SSDLite
   on the training images (a stronger seed when the budget is minutes). Cached in ``RUN/seed/``.
2. **search** — the super network (:class:`~nasx.spaces.adaptation.AdaptationSpace`: stages of
   4/4/4/4/4/1 layers, k {3, 5, 7} x e {3, 6} and ``skip``) inside SSDLite, every candidate op
   remapped from the same seed layer (:func:`~nasx.models.backbones.remap.remap_supernet`); DARTS
   (:class:`~nasx.search.darts.DartsSearch`) on the training set split 50/50: single-path weight
   steps on one half, architecture steps on L_det + λ · log_τ(expected MACs) on the other, the
   expected MACs from a per-op look-up table at the search input. α per layer over the search in
   ``alphas.json`` / ``alphas.png``.
3. **adapt** — the derived network (argmax per layer, ``skip`` dropped) remapped from the seed
   again and fine-tuned as SSDLite; for FNA's central claim, the same network from random
   initialisation and the seed MobileNetV2-SSDLite (seed weights), all for the same steps and
   scored alike (COCO mAP, MACs, params, latency).
4. **report** — ``report.json``, ``pareto.png`` (mAP vs GMACs of the adapted models),
   ``alphas.png``, ``report.html``.

Budget: the search ends early (after its warm-up) when what is left of the budget only covers the
adaptation, estimated from a timed SSDLite training step. Killed at any point (SIGKILL
included), the same command resumes: the seed and the search from their checkpoints, finished
stages skipped, finished fine-tunes read from ``retrained.jsonl``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from nasx.pipelines.html_report import write_html_report
from nasx.pipelines.report import format_table, pareto_plot, row_summary, write_report
from nasx.pipelines.retrain import Candidate, retrain_and_score
from nasx.pipelines.rundir import RunDir
from nasx.pipelines.run_settings import RESUMABLE, RunSettings, opt
from nasx.pipelines.tensorboard import RunLog
from nasx.pipelines.training import TrainRecipe, train_steps

__all__ = ["AdaptConfig", "format_summary", "run_adapt"]

log = logging.getLogger(__name__)

SPLIT_SEED = 520  # FNA's tools/divide_dataset.py
SEED_TASKS = ("classifier", "ssdlite")


@dataclass
class AdaptConfig(RunSettings):
    """The settings of a network-adaptation run; each field is a flag of ``nasx search adapt``."""

    seed_arch: str = field(default="mobilenet_v2", metadata=opt("the seed network (an MBConv encoding or name)"))
    width: float = field(default=1.0, metadata=opt("channel multiplier of the seed and every network (0.5 on a CPU)"))
    input_size: int = field(default=320, metadata=opt("SSDLite's square input side in pixels (FNA: 320)"))
    layers: tuple[int, ...] = field(default=(4, 4, 4, 4, 4, 1), metadata=opt(
        "layers per searchable stage of the super network (FNA: 4 4 4 4 4 1)"))
    seed_task: str = field(default="classifier", metadata=opt(
        "what the seed is trained as: a classifier on object crops (FNA adapts an ImageNet classifier), or an "
        "SSDLite on the training images (a stronger seed for a short run)", choices=SEED_TASKS))
    seed_steps: int = field(default=2000, metadata=opt("steps of the seed's training"))
    seed_batch_size: int = field(default=128, metadata=opt("crops per step of the seed classifier's training (an "
                                                           "SSDLite seed trains with --batch-size)"))
    crop_size: int = field(default=64, metadata=opt("side of the seed classifier's object crops in pixels"))
    seed_lr: float = field(default=5e-3, metadata=opt("AdamW learning rate of the seed classifier"))
    batch_size: int = field(default=16, metadata=opt("images per step of the search and the adaptation"))
    search_steps: int = field(default=3000, metadata=opt("weight steps of the search (architecture steps on top)"))
    warmup: float = field(default=0.3, metadata=opt("share of the search's weight steps before α is updated "
                                                     "(paths sampled uniformly)"))
    arch_every: int = field(default=5, metadata=opt("weight steps per architecture step (FNA's SSDLite: 5)"))
    min_arch_steps: int = field(default=20, metadata=opt("architecture steps taken even past the budget"))
    arch_lr: float = field(default=3e-3, metadata=opt("Adam learning rate of α (FNA: 3e-4 over 30 epochs)"))
    cost_lambda: float = field(default=0.2, metadata=opt("λ of the cost term λ·log_τ(MACs) (seed 003: 0.2; 0: off)",
                                                         flag="--lambda"))
    tau: float = field(default=10.0, metadata=opt("τ, the base of the cost term's logarithm (seed 003: 10)"))
    temperature: float = field(default=0.9, metadata=opt("softmax temperature of α (FNA: 0.9)"))
    adapt_steps: int = field(default=2000, metadata=opt("fine-tuning steps of each adapted detector"))
    lr: Optional[float] = field(default=None, metadata=opt("AdamW learning rate of the search's weights and of "
                                                           "the adaptation (default: the optimizer's)"))
    ablation: bool = field(default=True, metadata=opt("also fine-tune the derived network from random "
                                                      "initialisation and the seed SSDLite, for the same steps"))
    search_share: float = field(default=0.6, metadata=opt("most of the budget the search may use"))
    seed: int = field(default=0, metadata=opt("seed of the training, the split and the sampled paths"))

    def __post_init__(self):
        super().__post_init__()
        self.layers = tuple(int(n) for n in self.layers)
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.input_size < 32:
            raise ValueError(f"input_size must be >= 32 pixels (SSDLite's stride 32), got {self.input_size}")
        for name in ("seed_steps", "seed_batch_size", "crop_size", "batch_size", "search_steps", "arch_every",
                     "adapt_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")
        if self.seed_task not in SEED_TASKS:
            raise ValueError(f"seed_task must be one of {SEED_TASKS}, got {self.seed_task!r}")
        if not 0 < self.search_share <= 1:
            raise ValueError(f"search_share must be in (0, 1], got {self.search_share}")


class _Adapt:
    """One run; each stage method is idempotent (see the module docstring)."""

    def __init__(self, cfg: AdaptConfig):
        from nasx.atomic import read_json
        from nasx.spaces.adaptation import AdaptationSpace

        self.cfg = cfg
        self.run = RunDir(cfg.out, pipeline="adapt", config=cfg, resumable=RESUMABLE)
        self.runlog = RunLog(self.run.path("tb"), enabled=False)
        ann = Path(cfg.data, "annotations", "instances_train.json")
        if not ann.exists():
            raise ValueError(f"--data {cfg.data}: no {ann}; make a dataset with `nasx data synth --out DIR`")
        self.num_classes = len(read_json(ann)["categories"])
        self.space = AdaptationSpace(seed=cfg.seed_arch, layers=cfg.layers, width=cfg.width)
        self.size = (cfg.input_size, cfg.input_size)
        self.recipe = TrainRecipe(batch_size=cfg.batch_size, optimizer="adamw", lr=cfg.lr, seed=cfg.seed,
                                  device=cfg.device, progress=cfg.progress)

    def datasets(self):
        from nasx.data import coco_layout_dataset
        from nasx.data.transforms import detection_transforms

        s = self.cfg.input_size
        return (coco_layout_dataset(self.cfg.data, "train", transforms=detection_transforms(True, s, s)),
                coco_layout_dataset(self.cfg.data, "val", transforms=detection_transforms(False, s, s)))

    # -- 1. seed -------------------------------------------------------------------------------
    def seed_classifier(self):
        from nasx.models.classifier import Classifier

        enc = self.space.seed_encoding
        return Classifier(backbone=enc.build(out_features=("c5",)), feature="c5", channels=enc.head or
                          enc.stages[-1].channels, num_classes=self.num_classes)

    def stage_seed(self):
        """The seed (trained, or read back); returns ``(backbone, summary)``."""
        return self.seed_ssdlite() if self.cfg.seed_task == "ssdlite" else self.seed_from_crops()

    def seed_from_crops(self):
        from nasx.data import coco_layout_dataset
        from nasx.data.crops import ObjectCrops
        from nasx.evaluate import count_params
        from nasx.train.checkpoint import load_checkpoint
        from nasx.train.classify import evaluate_classifier, train_classifier

        cfg, run = self.cfg, self.run
        torch.manual_seed(cfg.seed)
        model = self.seed_classifier()
        done = run.done("seed")
        if done is not None:
            model.load_state_dict(load_checkpoint(run.path("seed", "last.pt"))["model"])
            return model.backbone, done
        log.info("[1/4] seed: %s as a classifier on object crops, %d steps", self.space.seed_encoding, cfg.seed_steps)
        crops = ObjectCrops(coco_layout_dataset(cfg.data, "train"), size=cfg.crop_size)
        val = ObjectCrops(coco_layout_dataset(cfg.data, "val"), size=cfg.crop_size, train=False)
        result = train_classifier(model, crops, steps=cfg.seed_steps, batch_size=cfg.seed_batch_size,
                                  lr=cfg.seed_lr, device=cfg.device, seed=cfg.seed, out_dir=run.path("seed"),
                                  progress=cfg.progress, checkpoint_every=max(50, cfg.seed_steps // 5))
        top1 = evaluate_classifier(model, val, device=cfg.device)
        log.info("      seed top-1 on %d val crops: %.3f", len(val), top1)
        summary = run.mark_done("seed", {"task": "classifier", "arch": str(self.space.seed_encoding), "top1": top1,
                                         "train_crops": len(crops), "val_crops": len(val), "steps": result["steps"],
                                         "params": count_params(model.backbone), "final_loss": result["final_loss"]})
        return model.cpu().backbone, summary

    def seed_ssdlite(self):
        """The seed trained as MobileNetV2-SSDLite on the training images; its backbone is the seed."""
        from nasx.evaluate import count_params
        from nasx.spaces.detectors import build_from_spec

        cfg = self.cfg
        arch = str(self.space.seed_encoding)
        spec = self.space.detector_spec(arch, self.num_classes)
        torch.manual_seed(cfg.seed)
        model = build_from_spec(spec)
        if self.run.done("seed") is None:
            log.info("[1/4] seed: %s as SSDLite on the training images, %d steps", arch, cfg.seed_steps)
        result = train_steps(model, self.datasets()[0], steps=cfg.seed_steps, out_dir=self.run.path("seed"),
                             recipe=self.recipe, meta={"build": spec, "stage": "seed"}, on_checkpoint=self.run.clock.tick)
        summary = self.run.reached("seed", {"task": "ssdlite", "arch": arch, "top1": None, "steps": result["steps"],
                                            "params": count_params(model.backbone.backbone),
                                            "final_loss": sum(result["final_losses"].values())})
        return model.cpu().backbone.backbone, summary

    # -- 2. search -----------------------------------------------------------------------------
    def adapt_seconds(self, train_set) -> float:
        """What the adaptation stage will take: its fine-tunes at a timed SSDLite training step of
        the seed network (the derived one is within ~10 % of its MACs), plus scoring."""
        from nasx.data import build_loader
        from nasx.spaces.detectors import build_from_spec
        from nasx.train.loop import move_batch

        marker = self.run.done("search")
        if marker is not None:
            return 0.0
        model = build_from_spec(self.space.detector_spec(str(self.space.seed_encoding), self.num_classes)).to(
            self.cfg.device)
        batch = next(iter(build_loader(train_set, self.cfg.batch_size)))
        times = []
        for _ in range(3):
            start = time.perf_counter()
            sum(model(*move_batch(batch, self.cfg.device)).values()).backward()
            times.append(time.perf_counter() - start)
        models = 3 if self.cfg.ablation else 1
        return models * (self.cfg.adapt_steps * min(times) * 1.15 + 30)

    def stage_search(self, seed_backbone, train_set) -> dict:
        from nasx.data import build_loader
        from nasx.evaluate.macs_table import supernet_macs_table
        from nasx.models.backbones.remap import remap_supernet
        from nasx.search.darts import DartsConfig, DartsSearch
        from nasx.train.loop import move_batch

        cfg, run = self.cfg, self.run
        done = run.done("search")
        if done is not None:
            return done
        reserve = self.adapt_seconds(train_set)
        torch.manual_seed(cfg.seed)
        detector = self.space.build_super_detector(num_classes=self.num_classes, temperature=cfg.temperature)
        supernet = detector.backbone
        remap_supernet(seed_backbone, supernet)
        table, fixed = supernet_macs_table(detector, self.size)
        supernet.set_macs_table(table, fixed)
        # FNA's 50/50 split of the training set: weights learn on one half, α on the other.
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
        half = len(order) // 2
        if half < cfg.batch_size:
            raise ValueError(f"--data {cfg.data}: {len(order)} training images cannot be split into two halves of at "
                             f"least --batch-size {cfg.batch_size}")
        loaders = [build_loader(torch.utils.data.Subset(train_set, idx), cfg.batch_size, shuffle=True, seed=cfg.seed,
                                drop_last=True) for idx in (order[:half], order[half:])]
        darts = DartsConfig(steps=cfg.search_steps, warmup=int(cfg.warmup * cfg.search_steps),
                            checkpoint_every=min(50, max(1, cfg.search_steps // 10)),
                            arch_every=cfg.arch_every, min_arch_steps=cfg.min_arch_steps, lr=self.recipe.lr,
                            weight_decay=self.recipe.weight_decay,
                            arch_lr=cfg.arch_lr, cost_lambda=cfg.cost_lambda, cost_base=cfg.tau, seed=cfg.seed)
        device = cfg.device
        search = DartsSearch(detector, supernet, lambda batch: detector(*move_batch(batch, device)),
                             weight_loader=loaders[0], arch_loader=loaders[1], config=darts,
                             state_path=run.path("search_state.pt"), device=device)

        def time_left() -> float:
            return min(run.clock.budget_seconds * cfg.search_share - run.clock.spent(), run.clock.left() - reserve)

        log.info("[2/4] search: DARTS over %.2g architectures, %d weight steps (%d warm-up), λ %g, τ %g; %.1f min "
                 "kept for the adaptation", self.space.size, darts.steps, darts.warmup, cfg.cost_lambda, cfg.tau,
                 reserve / 60)
        out = search.run(time_left=time_left, progress=cfg.progress, on_checkpoint=run.clock.tick)
        choices = out["choices"]
        arch = self.space.derive(choices)
        from nasx.atomic import write_json

        write_json(run.path("alphas.json"), {"ops": [list(n) for n in supernet.op_names()],
                                             "stage_of_layer": supernet.stage_of, "history": out["history"]})
        alphas_plot(run.path("alphas.png"), supernet.op_names(), out["history"],
                    title=f"α over the search (λ {cfg.cost_lambda:g}, τ {cfg.tau:g})")
        seed_macs = supernet_expected(supernet, self.space.choices_of(str(self.space.seed_encoding)))
        log.info("      derived %s: expected %.1f MMACs (seed %.1f)", arch, out["final_expected_macs"] / 1e6,
                 seed_macs / 1e6)
        self.log_trajectory(supernet, out["history"])
        return run.mark_done("search", {
            "arch": arch, "choices": choices, "weight_steps": out["weight_steps"], "arch_steps": out["arch_steps"],
            "seconds": out["seconds"], "stopped": out["stopped"], "expected_macs": out["final_expected_macs"],
            "seed_expected_macs": seed_macs, "derived_lut_macs": supernet_expected(supernet, choices),
            "space_size": self.space.size, "macs_table": table, "fixed_macs": fixed})

    def log_trajectory(self, supernet, history: list[dict]) -> None:
        """``results.jsonl``: every architecture the search's argmax passed through, once, with the
        architecture step it first appeared at, its look-up-table MACs and that step's loss."""
        from nasx.search import ResultsLog

        results = ResultsLog(self.run.path("results.jsonl"))
        names = supernet.op_names()
        for h in history:
            choices = [ops[max(range(len(w)), key=w.__getitem__)] for ops, w in zip(names, h["op_weights"])]
            arch = self.space.derive(choices)
            if arch not in results:
                results.append({"encoding": arch, "source": "darts", "status": "ok", "weight_step": h["weight_step"],
                                "arch_step": h["arch_step"], "macs": supernet_expected(supernet, choices),
                                "det_loss": h["det_loss"]})

    # -- 3. adapt ------------------------------------------------------------------------------
    def stage_adapt(self, seed_backbone, search: dict, train_set, val_set) -> list[dict]:
        from nasx.models.backbones.remap import remap_backbone
        from nasx.spaces.detectors import build_from_spec

        cfg = self.cfg
        seed_arch = str(self.space.seed_encoding)

        def spec(arch: str) -> dict:
            return self.space.detector_spec(arch, self.num_classes)

        candidates = [Candidate("remapped", f"remapped:{search['arch']}", spec(search["arch"]),
                                {"arch": search["arch"], "init": "remapped"})]
        if cfg.ablation:
            candidates += [Candidate("random", f"random:{search['arch']}", spec(search["arch"]),
                                     {"arch": search["arch"], "init": "random"}),
                           Candidate("seed", f"seed:{seed_arch}", spec(seed_arch), {"arch": seed_arch, "init": "seed"})]

        def prepare(model, cand: Candidate) -> None:
            # The same initial weights for every model of one architecture, so the extra layers and
            # the head start alike and only the backbone's initialisation differs.
            torch.manual_seed(cfg.seed)
            model.load_state_dict(build_from_spec(cand.build).state_dict())
            if cand.info["init"] != "random":
                remap_backbone(seed_backbone, model.backbone.backbone)

        log.info("[3/4] adapt: %d detectors fine-tuned %d steps each", len(candidates), cfg.adapt_steps)
        return retrain_and_score(self.run, candidates, train_set=train_set, val_set=val_set, steps=cfg.adapt_steps,
                                 recipe=self.recipe, input_size=self.size, prepare=prepare, stage="adapt",
                                 runlog=self.runlog, meta={"size": cfg.input_size})

    # -- 4. report -----------------------------------------------------------------------------
    def stage_report(self, seed: dict, search: dict, rows: list[dict]) -> dict:
        by = {r["name"]: r for r in rows}

        def summary(r):
            return None if r is None else {**row_summary(r, ("init",)), "arch": r["arch"]}

        pareto_plot(self.run, [dict(r, encoding=r["name"]) for r in rows], marked={r["name"]: r for r in rows},
                    title=f"network adaptation on {Path(self.cfg.data).name}: {self.cfg.adapt_steps} fine-tuning steps")
        ablation = None
        if "random" in by and "seed" in by:
            rem, rnd, sd = by["remapped"], by["random"], by["seed"]
            ablation = {"remapped_map": rem["map"], "random_map": rnd["map"], "seed_map": sd["map"],
                        "remap_gain": rem["map"] - rnd["map"], "vs_seed": rem["map"] - sd["map"],
                        "macs_ratio_to_seed": rem["macs"] / sd["macs"], "steps": self.cfg.adapt_steps}
        report = {"pipeline": "adapt",
                  "seed": {"arch": seed["arch"], "task": seed["task"], "classifier_top1": seed["top1"],
                           "params": seed["params"],
                           "ssdlite": summary(by.get("seed"))},
                  "derived": summary(by["remapped"]),
                  "ablation": ablation,
                  "search": {k: search[k] for k in ("weight_steps", "arch_steps", "seconds", "stopped", "expected_macs",
                                                    "seed_expected_macs", "space_size", "choices")},
                  "adapted": [summary(r) for r in rows],
                  "evaluated": 1, "failed": 0}
        return write_report(self.run, report)


def supernet_expected(supernet, choices) -> float:
    """The look-up table's MACs of one architecture (``choices``: an op name per layer)."""
    table = supernet.macs_table
    return float(supernet.fixed_macs + sum(float(table[l, names.index(c)])
                                            for l, (names, c) in enumerate(zip(supernet.op_names(), choices))))


def alphas_plot(path, op_names, history: list[dict], *, title: str = "") -> None:
    """One small panel per searchable layer: each candidate's softmax(α / T) over the architecture steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nasx.atomic import write_bytes

    n = len(op_names)
    cols = min(7, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 1.9 * rows), sharex=True, squeeze=False)
    steps = [h["weight_step"] for h in history]
    colours = {}
    for l, names in enumerate(op_names):
        ax = axes[l // cols][l % cols]
        for o, name in enumerate(names):
            colours.setdefault(name, f"C{len(colours)}")
            ax.plot(steps, [h["op_weights"][l][o] for h in history], color=colours[name], label=name, lw=1.2)
        ax.set_title(f"layer {l + 1}", fontsize=8)
        ax.tick_params(labelsize=6)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles = [plt.Line2D([], [], color=c, label=name) for name, c in colours.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(title or "α over the search", fontsize=10)
    fig.supxlabel("weight step", fontsize=8, y=0.06)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def format_summary(report: dict) -> str:
    """The table ``nasx search adapt`` prints at the end."""
    rows = {r["init"]: r for r in report["adapted"]}
    seed = report["seed"]
    lines = [f"seed {seed['arch']}: " + (f"classifier top-1 {seed['classifier_top1']:.3f}" if seed["task"] == "classifier"
                                         else "trained as SSDLite"),
             f"derived {report['derived']['arch']}",
             f"search: {report['search']['weight_steps']} weight + {report['search']['arch_steps']} architecture steps "
             f"in {report['search']['seconds'] / 60:.1f} min ({report['search']['stopped']})",
             format_table(rows, first="init")]
    if report.get("ablation"):
        a = report["ablation"]
        lines.append(f"remapped - random init: {a['remap_gain']:+.3f} mAP; remapped - seed: {a['vs_seed']:+.3f} mAP "
                     f"at {a['macs_ratio_to_seed']:.2f}x the seed's MACs")
    lines.append(f"{report['seconds'] / 60:.1f} min")
    return "\n".join(lines)


def run_adapt(cfg: AdaptConfig) -> dict:
    """Run (or resume) the whole pipeline; returns the report."""
    torch.manual_seed(cfg.seed)
    nas = _Adapt(cfg)
    nas.run.freeze_config()
    nas.runlog = RunLog(nas.run.path("tb"), enabled=cfg.tensorboard)
    try:
        seed_backbone, seed = nas.stage_seed()
        train_set, val_set = nas.datasets()
        search = nas.stage_search(seed_backbone, train_set)
        rows = nas.stage_adapt(seed_backbone, search, train_set, val_set)
        nas.run.reached("adapt", {"adapted": len(rows)})
        report = nas.stage_report(seed, search, rows)
        nas.run.reached("report")
        write_html_report(nas.run.root)
    finally:
        nas.runlog.close()
    return report
