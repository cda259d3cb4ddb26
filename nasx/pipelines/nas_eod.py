"""NAS-EOD end to end (seed 000, a poster; nasx's choices where it is silent, see the README): the
run behind ``nasx search nas-eod`` and ``make demo-nas-eod``.

Its own stages, on the shared kit (run directory, search loop, retrain-and-score, report):

1. **lut** — the latency look-up table of the space on the run's device, measured once
   (``latency_table.json``), and its check: predicted against measured latency of sampled whole
   detectors (Kendall tau, mean error), the FPNLite baselines timed in the same sweeps.
2. **baselines** — MobileNetV2-SSDLite and MobileNetV2-FPNLite at each neck width, in the space's
   terms (width, input, head), trained and scored like the candidates; unless ``--target-latency-ms``
   is given, the target latency T is ``--target-ratio`` x the narrowest FPNLite's, from the table
   check's sweeps.
3. **search** — the LSTM controller + PPO (:class:`~nasx.search.ControllerStrategy`) on the kit's
   loop over :class:`~nasx.spaces.nas_eod.NasEodSpace` (backbone and neck together); each candidate
   is trained from scratch for a few steps (:class:`~nasx.evaluate.eod_evaluator.NasEodEvaluator`)
   and rewarded by −(λc·Lc + λr·Lr + Lat(m)), Lat from the table; one the table predicts over T is
   not trained (unless ``--train-over-target``): the narrowest FPNLite's losses stand in for its own.
4. **screen** — the best 4 x top-k by reward timed whole beside FPNLite; those no slower than FPNLite at
   their neck width go first. **retrain** — the baselines and the top-k so ordered, the same steps from scratch; scored by
   COCO mAP / AP50, MACs, params and *measured* latency (with the table's prediction beside it),
   then all of them timed against each other (:func:`~nasx.pipelines.retrain.time_together`): the
   latencies the report compares.
5. **report** — ``report.json``, ``pareto.png`` (latency vs mAP, baselines marked), ``report.html``.

Killed at any point (SIGKILL included), the same command resumes: the table from its file, finished
candidates from ``results.jsonl``, the controller from its state, finished stages skipped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from nasx.evaluate.eod_evaluator import BASELINE_PREFIX, EodRewardConfig
from nasx.evaluate.eod_reward import LATENCY_FORMS
from nasx.evaluate.short_train import ShortTrainConfig
from nasx.pipelines.html_report import write_html_report
from nasx.pipelines.report import format_table, pareto_plot, publish_best, row_summary, write_report
from nasx.pipelines.retrain import Candidate, retrain_and_score, time_together
from nasx.pipelines.rundir import RunDir
from nasx.pipelines.run_settings import RESUMABLE, RunSettings, final_sweeps_field, opt
from nasx.pipelines.tensorboard import RunLog
from nasx.pipelines.training import TrainRecipe

__all__ = ["NasEodConfig", "format_summary", "run_nas_eod"]

log = logging.getLogger(__name__)


@dataclass
class NasEodConfig(RunSettings):
    """The settings of a NAS-EOD run; each field is a flag of ``nasx search nas-eod``."""

    width: float = field(default=1.0, metadata=opt("channel multiplier of the backbone and the neck (0.5 on a CPU)"))
    input_size: int = field(default=320, metadata=opt("square input side in pixels (the poster: 320)"))
    neck_widths: tuple[int, ...] = field(default=(64, 128), metadata=opt(
        "neck widths searched, before --width (the poster's @64 and @128)"))
    head_convs: int = field(default=4, metadata=opt("separable convs of the shared head tower (TF's FPNLite: 4)"))
    target_latency_ms: Optional[float] = field(default=None, metadata=opt(
        "T of the latency term (none: the measured latency of MobileNetV2-FPNLite at the smallest neck width, the "
        "baseline to beat)", metavar="T"))
    target_ratio: float = field(default=1.0, metadata=opt(
        "without --target-latency-ms, T is this share of that baseline's latency (below 1: room for the table's "
        "error, so that detectors predicted at T measure no slower than the baseline)"))
    lambda_c: float = field(default=1.0, metadata=opt("λc, weight of the held-out classification loss"))
    lambda_r: float = field(default=1.0, metadata=opt("λr, weight of the held-out regression loss"))
    latency_beta: float = field(default=1.0, metadata=opt("β, weight of the latency term"))
    latency_form: str = field(default="hinge", metadata=opt("the latency term: hinge β·max(0, lat/T − 1) or "
                                                            "linear β·lat/T", choices=LATENCY_FORMS))
    short: ShortTrainConfig = field(default_factory=ShortTrainConfig,
                                    metadata=opt("the short training every candidate gets"))
    train_over_target: bool = field(default=False, metadata=opt(
        "also train the candidates the latency table predicts slower than T (by default they are not trained: the "
        "narrowest FPNLite's held-out losses less their latency term is their reward, and they do not count toward "
        "--min-archs); with --latency-form linear every candidate is trained"))
    lut_repeats: int = field(default=20, metadata=opt("timed sweeps of the latency look-up table"))
    lut_check: int = field(default=30, metadata=opt("sampled detectors timed whole to check the table"))
    round_size: int = field(default=4, metadata=opt("architectures per round (per PPO update)"))
    min_archs: int = field(default=20, metadata=opt("architectures searched even past the budget"))
    max_archs: Optional[int] = field(default=None, metadata=opt("stop the search after this many architectures"))
    top_k: int = field(default=3, metadata=opt("searched detectors retrained (the baselines are too)"))
    retrain_steps: int = field(default=400, metadata=opt("steps of the final training from scratch"))
    screen: bool = field(default=True, metadata=opt(
        "no screening: by default the best 4 x --top-k candidates are timed whole with FPNLite before retraining "
        "and those measured no slower than FPNLite at their neck width go first (a search steered by the table "
        "picks its optimistic errors)", flag="--no-screen", negate=True))
    final_sweeps: int = final_sweeps_field()
    seed: int = field(default=0, metadata=opt("seed of the controller and the training"))

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.short, dict):
            self.short = ShortTrainConfig(**self.short)
        if not self.target_ratio > 0:
            raise ValueError(f"target_ratio must be > 0, got {self.target_ratio}")
        EodRewardConfig(self.target_latency_ms, self.lambda_c, self.lambda_r, self.latency_beta, self.latency_form)
        self.neck_widths = tuple(int(w) for w in self.neck_widths)
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        for name in ("input_size", "lut_repeats", "round_size", "min_archs", "top_k", "retrain_steps", "final_sweeps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lut_check < 2:
            raise ValueError(f"lut_check must be >= 2 (a rank correlation needs pairs), got {self.lut_check}")


class _NasEod:
    """One run; each stage method is idempotent (see the module docstring)."""

    def __init__(self, cfg: NasEodConfig):
        from nasx.atomic import read_json
        from nasx.search import ResultsLog
        from nasx.spaces.nas_eod import NasEodSpace

        self.cfg = cfg
        self.run = RunDir(cfg.out, pipeline="nas-eod", config=cfg, resumable=RESUMABLE)
        self.results = ResultsLog(self.run.path("results.jsonl"))
        self.runlog = RunLog(self.run.path("tb"), enabled=False)
        ann = Path(cfg.data, "annotations", "instances_train.json")
        if not ann.exists():
            raise ValueError(f"--data {cfg.data}: no {ann}; make a dataset with `nasx data synth --out DIR`")
        num_classes = len(read_json(ann)["categories"])
        self.space = NasEodSpace(width=cfg.width, input_size=cfg.input_size, neck_widths=cfg.neck_widths,
                                 num_classes=num_classes, head_convs=cfg.head_convs)
        self.recipe = TrainRecipe(batch_size=cfg.short.batch_size, optimizer=cfg.short.optimizer, lr=cfg.short.lr,
                                  seed=cfg.seed, device=cfg.device, warmup=cfg.short.warmup, progress=cfg.progress)

    def baselines(self) -> dict:
        """name -> (build spec, (H, W)): MobileNetV2-FPNLite at each neck width and MobileNetV2-SSDLite."""
        from nasx.spaces.mbconv import MBConvEncoding

        out = {f"MobileNetV2-FPNLite@{w}": self.space.baseline_spec(w) for w in self.space.neck_widths}
        ssdlite = {"detector": "ssdlite", "backbone": str(MBConvEncoding.parse("mobilenet_v2").scaled(self.cfg.width)),
                   "num_classes": self.space.num_classes}
        out["MobileNetV2-SSDLite"] = (ssdlite, self.space.input_size)
        return out

    # -- 1. latency table ----------------------------------------------------------------------
    def stage_lut(self):
        from nasx.atomic import read_json, write_json
        from nasx.evaluate.latency_table import LatencyTable

        cfg, run = self.cfg, self.run
        if cfg.short.latency_runtime != "torch":
            # The table times parts inside a PyTorch forward; an exported graph has no such parts.
            log.info("[1/5] no latency look-up table: every candidate is timed whole in %s",
                     cfg.short.latency_runtime)
            return None, None
        path = run.path("latency_table.json")
        if path.exists():
            table = LatencyTable.from_dict(read_json(path))
        else:
            log.info("[1/5] latency look-up table of the space on %s (%d sweeps)", cfg.device, cfg.lut_repeats)
            table = LatencyTable.measure(self.space, cfg.device, cfg.lut_repeats, seed=cfg.seed,
                                         threads=cfg.short.latency_threads, clock=cfg.short.latency_clock)
            write_json(path, table.to_dict())
        check = run.done("lut")
        if check is None:
            log.info("[1/5] checking the table on %d sampled detectors timed whole", cfg.lut_check)
            # The FPNLite baselines in the same sweeps: T (their time) in the units of the scaled table.
            check = table.validate(self.space, n=cfg.lut_check, rng=cfg.seed, also=self.fpnlite_models())
            # Predictions in the units of the measured target: the parts' sum scaled to the wholes'.
            table = table.calibrated(check["scale_fit"])
            write_json(path, table.to_dict())
            check = run.mark_done("lut", check)
            log.info("      Kendall tau %.2f, mean error %.1f %% (%.1f %% once scaled by %.2f)", check["kendall_tau"],
                     check["mean_abs_pct_error"], check["mean_abs_pct_error_fitted"], check["scale_fit"])
        return table, check

    def fpnlite_models(self) -> dict:
        from nasx.spaces.detectors import build_from_spec

        return {name: build_from_spec(spec) for name, (spec, _) in self.baselines().items() if "FPNLite" in name}

    # -- 2. baselines --------------------------------------------------------------------------
    def reward(self, target_ms: float) -> EodRewardConfig:
        cfg = self.cfg
        return EodRewardConfig(target_ms, cfg.lambda_c, cfg.lambda_r, cfg.latency_beta, cfg.latency_form)

    def evaluator(self, table, target_ms: float, untrained: Optional[dict] = None):
        from nasx.evaluate.eod_evaluator import NasEodEvaluator

        return NasEodEvaluator(self.cfg.data, space=self.space, table=table, baselines=self.baselines(),
                               reward=self.reward(target_ms), config=self.cfg.short, device=self.cfg.device,
                               untrained=untrained)

    def untrained_losses(self, table, baselines: dict) -> Optional[dict]:
        """The held-out losses a candidate predicted over T is scored with, untrained: the narrowest
        FPNLite's (None: every candidate is trained — ``--train-over-target``, no table, the linear form, or
        that baseline failed)."""
        cfg = self.cfg
        if cfg.train_over_target or table is None or cfg.latency_form != "hinge":
            return None
        base = baselines.get(f"MobileNetV2-FPNLite@{self.space.neck_widths[0]}")
        if not base or base.get("status") != "ok":
            log.warning("[3/5] the narrowest FPNLite failed: every candidate is trained, over T or not")
            return None
        return {"cls": base["cls_loss"], "reg": base["reg_loss"]}

    def target_ms(self, check: Optional[dict]) -> float:
        """T: the flag, or ``target_ratio`` x the measured latency of the narrowest MobileNetV2-FPNLite — timed
        in the table check's sweeps (``check["also_ms"]``), so that T and the scaled table's predictions are in
        the same units; without a table (ONNX Runtime), timed once on its own."""
        from nasx.evaluate.cost import measure_latency
        from nasx.spaces.detectors import build_from_spec

        if self.cfg.target_latency_ms is not None:
            return self.cfg.target_latency_ms
        name = f"MobileNetV2-FPNLite@{self.space.neck_widths[0]}"
        if check is not None and name in check.get("also_ms", {}):
            return self.cfg.target_ratio * check["also_ms"][name]
        done = self.run.done("target")
        if done is None:
            spec, size = self.space.baseline_spec(self.space.neck_widths[0])
            ms = measure_latency(build_from_spec(spec), torch.rand(1, 3, *size), warmup=3, repeats=20,
                                 **self.cfg.short.timing(self.cfg.device)).median_ms
            done = self.run.mark_done("target", {"target_latency_ms": ms, "from": f"MobileNetV2-FPNLite@"
                                                                                  f"{self.space.neck_widths[0]}"})
        return self.cfg.target_ratio * done["target_latency_ms"]

    def stage_baselines(self, workers, evaluator) -> dict:
        todo = [BASELINE_PREFIX + name for name in self.baselines() if BASELINE_PREFIX + name not in self.results]
        if todo:
            log.info("[2/5] baselines: %s", ", ".join(t[len(BASELINE_PREFIX):] for t in todo))
        for i, out in workers.map_unordered(evaluator, todo):
            self.runlog.candidate(self.results.append({"encoding": todo[i], "source": "baseline", "round": -1,
                                                       **out}))
        return {name: self.results.get(BASELINE_PREFIX + name) for name in self.baselines()}

    # -- 3. search -----------------------------------------------------------------------------
    def retrain_seconds(self, baselines: dict) -> float:
        """The final training: baselines + top-k at the slowest measured step, plus scoring."""
        steps = [r["s_per_step"] for r in self.results if r.get("status") == "ok" and r.get("s_per_step")]
        if not steps:
            return self.run.clock.budget_seconds / 3
        n = len(baselines) + self.cfg.top_k
        return n * (self.cfg.retrain_steps * max(steps) * 1.1 + 20)

    def stage_search(self, workers, evaluator, baselines: dict) -> dict:
        from nasx.evaluate.latency_table import LatencyTable
        from nasx.search import ControllerStrategy, run_search, trained

        cfg, run = self.cfg, self.run
        summary = run.done("search")
        if summary is None:
            if evaluator.untrained is not None:     # T out of reach: no candidate could ever be trained
                fastest, ms = LatencyTable.from_dict(evaluator.table).fastest(self.space)
                if ms > evaluator.reward.target_latency_ms:
                    raise ValueError(f"target latency T = {evaluator.reward.target_latency_ms:.2f} ms is below the "
                                     f"space's fastest architecture ({ms:.2f} ms predicted: {fastest}); no candidate "
                                     f"would be trained. Raise --target-ratio or --target-latency-ms, or pass "
                                     f"--train-over-target")

            def time_left() -> float:
                return run.clock.left() - self.retrain_seconds(baselines)

            log.info("[3/5] search: LSTM controller + PPO over backbone and neck, %.1f min left for it, at least %d "
                     "architectures%s", max(time_left(), 0) / 60, cfg.min_archs,
                     "" if evaluator.untrained is None else " trained (those predicted over T are scored untrained)")
            out = run_search(ControllerStrategy(self.space, seed=cfg.seed), evaluator, self.results,
                             state_path=run.path("search_state.pt"), round_size=cfg.round_size, workers=workers,
                             time_left=time_left, max_evaluations=cfg.max_archs, min_evaluations=cfg.min_archs,
                             progress=cfg.progress, on_round=lambda e: (run.clock.save(), self.runlog.round(e)),
                             on_record=self.runlog.candidate, counted=trained)
            summary = run.mark_done("search", {k: out[k] for k in ("rounds", "evaluated", "stopped")})
        return summary

    # -- 4. retrain ----------------------------------------------------------------------------
    def stage_screen(self, target_ms: float) -> Optional[dict]:
        """The best ``4 x top_k`` trained candidates by reward timed whole (fresh builds, as the table's check
        times), in the same sweeps as MobileNetV2-FPNLite at every neck width: which are measured no slower
        than FPNLite at their own width (the goal's comparison; T itself when ``--target-latency-ms`` is given).
        A search steered by the table's predictions selects the candidates it under-predicts most, so the
        choice of what to retrain is made on measurement. None with ``--no-screen`` or without a table."""
        from nasx.evaluate.cost import measure_together
        from nasx.search import best_records, trained

        cfg = self.cfg
        if not cfg.screen or cfg.short.latency_runtime != "torch":
            return None
        done = self.run.done("screen")
        if done is None:
            pool = [r["encoding"] for r in best_records(filter(trained, self.results), 4 * cfg.top_k,
                                                        source="search")]
            names = {w: f"MobileNetV2-FPNLite@{w}" for w in self.space.neck_widths}
            models = {e: self.space.build(e) for e in pool}
            models.update(self.fpnlite_models())
            log.info("[4/5] timing the best %d candidates whole with MobileNetV2-FPNLite (%d sweeps)", len(pool),
                     cfg.final_sweeps)
            how = cfg.short.timing(cfg.device)
            ms = {k: rep.median_ms for k, rep in measure_together(
                models, torch.rand(1, 3, *self.space.input_size), device=how["device"], repeats=cfg.final_sweeps,
                threads=how["threads"], clock=how["clock"]).items()}
            limit = {e: cfg.target_latency_ms if cfg.target_latency_ms is not None
                     else ms[names[self.space.decode(e)["neck.width"]]] for e in pool}
            done = self.run.mark_done("screen", {"latency_ms": {e: ms[e] for e in pool},
                                                 "fpnlite_ms": {n: ms[n] for n in names.values()}, "limit_ms": limit,
                                                 "within": [e for e in pool if ms[e] <= limit[e]],
                                                 "target_ms": target_ms, "sweeps": cfg.final_sweeps})
        return done

    def stage_retrain(self, table, baselines: dict, screen: Optional[dict]) -> list[dict]:
        from nasx.search import best_records, trained

        specs = self.baselines()
        candidates = [Candidate(name, BASELINE_PREFIX + name, specs[name][0],
                                {"reward": r["reward"], "short_map": r["map"], "predicted_ms": None})
                      for name, r in baselines.items() if r and r.get("status") == "ok"]
        ranked = best_records(filter(trained, self.results), 4 * self.cfg.top_k, source="search")
        if screen is not None:      # those measured within T first, each group by reward
            ranked.sort(key=lambda r: r["encoding"] not in screen["within"])
        for i, r in enumerate(ranked[: self.cfg.top_k]):
            candidates.append(Candidate(f"top{i + 1}", r["encoding"], self.space.spec(r["encoding"])[0],
                                        {"reward": r["reward"], "short_map": r["map"],
                                         "predicted_ms": table.predict(r["encoding"]) if table else None,
                                         "screened_ms": None if screen is None else screen["latency_ms"].get(
                                             r["encoding"])}))
        from nasx.data import coco_layout_dataset
        from nasx.data.transforms import detection_transforms

        s = self.cfg.input_size
        train_set = coco_layout_dataset(self.cfg.data, "train", transforms=detection_transforms(True, s, s))
        val_set = coco_layout_dataset(self.cfg.data, "val", transforms=detection_transforms(False, s, s))
        log.info("[4/5] retraining %d detectors for %d steps each", len(candidates), self.cfg.retrain_steps)
        return retrain_and_score(self.run, candidates, train_set=train_set, val_set=val_set,
                                 steps=self.cfg.retrain_steps, recipe=self.recipe, input_size=self.space.input_size,
                                 meta={"size": s}, runlog=self.runlog,
                                 timing=self.cfg.short.timing(self.cfg.device))

    # -- 5. report -----------------------------------------------------------------------------
    def stage_report(self, check: dict, target_ms: float, summary: dict, rows: list[dict]) -> dict:
        from nasx.evaluate.rank import kendall_tau
        from nasx.search import trained

        extra = ("reward", "short_map", "predicted_ms", "screened_ms", "latency_ms_alone")
        base = {r["name"]: r for r in rows if not r["name"].startswith("top")}
        searched = [r for r in rows if r["name"].startswith("top")]
        best = max(searched, key=lambda r: (r["map"], -r["latency_ms"])) if searched else None

        def fpnlite(row):       # MobileNetV2-FPNLite at the row's own neck width (the comparison)
            return base.get(f"MobileNetV2-FPNLite@{self.space.decode(row['encoding'])['neck.width']}")

        beating = [r["name"] for r in searched if (f := fpnlite(r)) is not None and r["map"] > f["map"]
                   and r["latency_ms"] <= f["latency_ms"]]
        records = [r for r in self.results if r.get("source") == "search"]
        ranked = [r for r in rows if "SSDLite" not in r["name"]]
        report = write_report(self.run, {
            "baselines": {n: row_summary(r, extra) for n, r in base.items()},
            "best": None if best is None else dict(row_summary(best, extra), neck_width=self.space.decode(
                best["encoding"])["neck.width"]),
            # a searched detector with more mAP than FPNLite at its neck width, at no more measured latency
            "beats_fpnlite": None if not searched else bool(beating), "beating_fpnlite": beating,
            "retrained": [dict(row_summary(r, extra), name=r["name"]) for r in rows],
            # SSDLite's losses are SSD's (softmax, hard negatives), not comparable rewards: FPNLite-family rows only
            "kendall_tau": kendall_tau([r["reward"] for r in ranked], [r["map"] for r in ranked]),
            "kendall_tau_n": len(ranked), "target_latency_ms": target_ms, "reward": vars(self.reward(target_ms)),
            "lut": None if check is None else {k: check.get(k) for k in (
                "kendall_tau", "spearman", "repeat_tau", "mean_abs_pct_error", "scale_fit",
                "mean_abs_pct_error_fitted", "n", "device", "threads", "clock", "sampling", "also_ms")},
            "timed_together": self.run.done("timed_together"), "screen": self.run.done("screen"),
            "latency_runtime": self.cfg.short.latency_runtime,
            # searched: every architecture proposed; evaluated: those trained (the others predicted over T)
            "searched": len(records), "evaluated": sum(1 for r in records if trained(r)),
            "untrained_over_target": sum(1 for r in records if not trained(r)),
            "failed": sum(1 for r in records if r.get("status") != "ok"),
            "rounds": summary["rounds"], "stopped": summary["stopped"], "strategy": "ppo",
            "flops_note": "the poster's FLOPs (B) are 2 x MACs; nasx reports MACs"})
        if best is not None:
            publish_best(self.run, best)
        pareto_plot(self.run, rows, marked={n: r for n, r in base.items()}, cost="latency_ms",
                    title=f"NAS-EOD on {Path(self.cfg.data).name}: {self.cfg.retrain_steps} steps from scratch")
        return report


def format_summary(report: dict) -> str:
    """The baselines-vs-best table ``nasx search nas-eod`` ends with."""
    rows = dict(report["baselines"])
    if report.get("best"):
        rows["searched"] = report["best"]
    lines = [format_table(rows, first="model", extra=[("reward", "reward")])]
    lut = report["lut"]
    fitted = (f" ({lut['mean_abs_pct_error_fitted']:.1f} % scaled by {lut['scale_fit']:.2f})"
              if lut and lut.get("scale_fit") else "")
    timing = (f"latency table: Kendall tau {lut['kendall_tau']:.2f}, mean error {lut['mean_abs_pct_error']:.1f} %"
              f"{fitted} over {lut['n']}" if lut else f"every candidate timed in {report.get('latency_runtime')}")
    over = report.get("untrained_over_target") or 0
    lines.append(f"searched {report['searched']} architectures, {report['evaluated']} trained"
                 f"{f' ({over} predicted over T, scored untrained)' if over else ''} ({report['failed']} failed); "
                 f"target latency "
                 f"{report['target_latency_ms']:.1f} ms; {timing}; reward vs retrained mAP: Kendall "
                 f"tau {report['kendall_tau']:.2f} over {report['kendall_tau_n']}")
    if report.get("beats_fpnlite") is not None:
        lines.append(f"a searched detector beats MobileNetV2-FPNLite at its neck width (more mAP, no more latency): "
                     f"{', '.join(report.get('beating_fpnlite') or []) or 'no'}")
    lines.append(f"{report['seconds'] / 60:.1f} min")
    return "\n".join(lines)


def run_nas_eod(cfg: NasEodConfig) -> dict:
    """Run (or resume) the whole pipeline; returns the report."""
    from nasx.search import make_workers
    from nasx.search.workers import check_backend

    check_backend(cfg.backend)
    torch.manual_seed(cfg.seed)
    nas = _NasEod(cfg)
    nas.run.freeze_config()
    nas.runlog = RunLog(nas.run.path("tb"), enabled=cfg.tensorboard)
    try:
        table, check = nas.stage_lut()
        target = nas.target_ms(check)
        evaluator = nas.evaluator(table, target)
        with make_workers(cfg.workers, backend=cfg.backend, ray_address=cfg.ray_address) as workers:
            baselines = nas.stage_baselines(workers, evaluator)
            nas.run.reached("baselines")
            untrained = nas.untrained_losses(table, baselines)
            summary = nas.stage_search(workers, nas.evaluator(table, target, untrained), baselines)
        rows = nas.stage_retrain(table, baselines, nas.stage_screen(target))
        nas.run.reached("retrain", {"retrained": len(rows)})
        rows = time_together(nas.run, rows, input_size=nas.space.input_size, sweeps=cfg.final_sweeps,
                             timing=cfg.short.timing(cfg.device))
        report = nas.stage_report(check, target, summary, rows)
        nas.run.reached("report")
        write_html_report(nas.run.root)
    finally:
        nas.runlog.close()
    return report
