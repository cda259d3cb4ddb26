"""SM-NAS end to end (seed 001): the run behind ``nasx search sm-nas`` and ``make demo-sm-nas``.

Its own stages, on the shared kit (run directory, search loop, retrain-and-score, report):

1. **stage one** — structural search (:class:`~nasx.spaces.sm_nas.StructuralSpace`: backbone,
   neck, RPN, head, input size) by evolution on the Pareto front of (mAP, batch-1 latency on the
   run's device) (:class:`~nasx.search.evolution.ParetoEvolution`); every candidate is a whole
   detector trained from scratch for a few steps (:class:`~nasx.evaluate.short_train.
   ShortTrainEvaluator`). ResNet-18 and ResNet-50 FPN two-FC detectors are evaluated first, the
   same way, as the baselines.
2. **pick** — the ``picks`` models of the stage-one front among those with residual backbones
   (stage two evolves residual strings), baselines included, best mAP first (``stages/pick.json``).
3. **stage two** — per pick, modular search (:class:`~nasx.spaces.sm_nas.ModularSpace`: backbone
   string and FPN width, GN + WS, SM-NAS stem) on (mAP, MACs), with partial-order pruning
   (candidates' MACs counted on the meta device before any is trained) and its audit. The pick's
   own backbone ("start") and ResNet-18 / ResNet-50 FPN two-FC baselines are evaluated first with
   the same protocol.
4. **retrain** — per pick: the start model, the stage-two front (its best ``retrain_top`` by mAP)
   and the ResNet-18 baseline, all trained ``retrain_steps`` from scratch with the same schedule, then
   timed against each other (:func:`~nasx.pipelines.retrain.time_together`).
5. **report** — ``report.json`` (both fronts, hypervolume per round, evaluated and pruned counts,
   the pruning audit, Kendall tau of short-training mAP against retrained mAP, the best
   backbones), ``stage1_pareto.png``, ``stage2_pareto.png`` (one per pick) and ``report.html``.

Budget: stage one searches until ``stage1_share`` of the budget is spent, stage two until what is
left covers the retraining (estimated from the candidates' measured step times); each stage
evaluates at least its ``min`` count of architectures. Killed at any point (SIGKILL included),
the same command resumes: finished candidates come from ``results.jsonl``, each search from its
state file, finished stages are skipped.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from nasx.evaluate.short_train import ShortTrainConfig
from nasx.pipelines.html_report import write_html_report
from nasx.pipelines.report import format_table, pareto_plot, row_summary, write_report
from nasx.pipelines.retrain import Candidate, retrain_and_score, time_together
from nasx.pipelines.rundir import RunDir
from nasx.pipelines.run_settings import RESUMABLE, RunSettings, final_sweeps_field, opt
from nasx.pipelines.tensorboard import RunLog
from nasx.pipelines.training import TrainRecipe

__all__ = ["SmNasConfig", "format_summary", "run_sm_nas"]

log = logging.getLogger(__name__)

# Stage one's baselines: the standard FPN Faster R-CNN on ResNet-18 / -50 at 800 x 600.
BASELINES = {"R18-FPN": "resnet18|P1-P5|rpn|2fc|800x600", "R50-FPN": "resnet50|P1-P5|rpn|2fc|800x600"}
STAGE2_BASELINES = {"R18-FPN": ("basicblock", "11-21-21-21"), "R50-FPN": ("bottleneck", "111-2111-211111-211")}


@dataclass
class SmNasConfig(RunSettings):
    """The settings of an SM-NAS run; each field is a flag of ``nasx search sm-nas``."""

    width: float = field(default=1.0, metadata=opt("channel multiplier of every candidate (0.25 on a CPU)"))
    input_scale: float = field(default=1.0, metadata=opt("input size multiplier (0.16: 800 x 600 -> 128 x 96)"))
    ga_rpn: bool = field(default=True, metadata=opt("leave the guided-anchoring RPN out of stage one",
                                                    flag="--no-ga-rpn", negate=True))
    rois_per_image: int = field(default=512, metadata=opt("two-stage candidates: RoIs sampled per image in "
                                                          "training (512 in the paper; fewer for small images)"))
    proposals: int = field(default=1000, metadata=opt("two-stage candidates: proposals per image at inference "
                                                      "(twice as many in training)"))
    short: ShortTrainConfig = field(default_factory=ShortTrainConfig,
                                    metadata=opt("the short training every candidate gets"))
    stage1_min: int = field(default=8, metadata=opt("stage-one architectures evaluated even past the budget"))
    stage1_max: Optional[int] = field(default=None, metadata=opt("stop stage one after this many architectures"))
    stage1_share: float = field(default=0.35, metadata=opt("share of the budget stage one may use"))
    picks: int = field(default=1, metadata=opt("stage-one front models stage two starts from"))
    stage2_min: int = field(default=8, metadata=opt("stage-two architectures per pick evaluated even past the budget"))
    stage2_max: Optional[int] = field(default=None, metadata=opt("stop stage two after this many per pick"))
    min_random: int = field(default=4, metadata=opt("random architectures per stage before the front is mutated"))
    random_ratio: float = field(default=0.2, metadata=opt("share of fresh random architectures afterwards"))
    prune: bool = field(default=True, metadata=opt("no partial-order pruning in stage two", flag="--no-prune",
                                                   negate=True))
    audit_every: int = field(default=3, metadata=opt("evaluate every k-th pruned architecture anyway, to measure "
                                                     "the pruning's error (0: never)"))
    round_size: int = field(default=2, metadata=opt("architectures per generation"))
    retrain_top: int = field(default=3, metadata=opt("stage-two front models retrained per pick"))
    retrain_steps: int = field(default=400, metadata=opt("steps of the final, longer training"))
    final_sweeps: int = final_sweeps_field()
    seed: int = field(default=0, metadata=opt("seed of the strategies and the training"))

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.short, dict):
            self.short = ShortTrainConfig(**self.short)
        if not self.width > 0 or not self.input_scale > 0:
            raise ValueError(f"width and input_scale must be > 0, got {self.width} and {self.input_scale}")
        if not 0 < self.stage1_share < 1:
            raise ValueError(f"stage1_share must be in (0, 1), got {self.stage1_share}")
        for name in ("rois_per_image", "proposals", "picks", "stage1_min", "stage2_min", "min_random", "round_size",
                     "retrain_top", "retrain_steps", "final_sweeps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _in_space(space, record) -> bool:
    """Whether an evaluated ``record`` is an architecture of ``space`` (a baseline of another block
    type is not)."""
    if not record or record.get("status") != "ok":
        return False
    try:
        space.decode(record["encoding"])
    except ValueError:
        return False
    return True


class _SmNas:
    """One run; each stage method is idempotent (see the module docstring)."""

    def __init__(self, cfg: SmNasConfig):
        from nasx.search import ResultsLog
        from nasx.spaces.sm_nas import RPNS, StructuralSpace

        self.cfg = cfg
        self.run = RunDir(cfg.out, pipeline="sm-nas", config=cfg, resumable=RESUMABLE)
        self.results = ResultsLog(self.run.path("results.jsonl"))
        self.runlog = RunLog(self.run.path("tb"), enabled=False)
        self.num_classes = self._num_classes()
        n = cfg.proposals
        two_stage = {"batch_size_per_image": cfg.rois_per_image,
                     "rpn_settings": {"pre_nms_top_n": (2 * n, n), "post_nms_top_n": (2 * n, n)}}
        self.space1 = StructuralSpace(width=cfg.width, input_scale=cfg.input_scale, num_classes=self.num_classes,
                                      rpns=RPNS if cfg.ga_rpn else tuple(r for r in RPNS if r != "ga"),
                                      two_stage=two_stage)
        self.recipe = TrainRecipe(batch_size=cfg.short.batch_size, optimizer=cfg.short.optimizer, lr=cfg.short.lr,
                                  seed=cfg.seed, device=cfg.device, warmup=cfg.short.warmup, progress=cfg.progress)

    def _num_classes(self) -> int:
        from nasx.atomic import read_json

        ann = Path(self.cfg.data, "annotations", "instances_train.json")
        if not ann.exists():
            raise ValueError(f"--data {self.cfg.data}: no {ann}; make a dataset with `nasx data synth --out DIR`")
        return len(read_json(ann)["categories"])

    def evaluator(self, space):
        from nasx.evaluate.short_train import ShortTrainEvaluator

        return ShortTrainEvaluator(self.cfg.data, space=space, config=self.cfg.short, device=self.cfg.device)

    def _evaluate_fixed(self, workers, space, named: dict, source: str) -> dict:
        """Evaluate named architectures (baselines, the start model) once; their records by name."""
        todo = {name: space.encode(space.decode(text) if isinstance(text, str) else text)
                for name, text in named.items()}
        missing = sorted({e for e in todo.values() if e not in self.results})
        for i, out in workers.map_unordered(self.evaluator(space), missing):
            self.runlog.candidate(self.results.append({"encoding": missing[i], "source": source, "round": -1,
                                                       **out}))
        return {name: self.results.get(enc) for name, enc in todo.items()}

    def _strategy(self, space, objectives, **kwargs):
        from nasx.search.evolution import ParetoEvolution

        cfg = self.cfg
        return ParetoEvolution(space, objectives=objectives, maximize=("map",), seed=cfg.seed,
                               min_random=cfg.min_random, random_ratio=cfg.random_ratio, **kwargs)

    def records(self, *sources: str) -> list[dict]:
        """The OK records of these ``source`` values, in log order."""
        return [r for r in self.results if r.get("source") in sources and r.get("status") == "ok"]

    def front(self, cost: str, *sources: str, keep=None) -> list[dict]:
        """The (mAP up, ``cost`` down) Pareto front of the OK records of ``sources`` (those ``keep``
        accepts, if given), best mAP first."""
        from nasx.search.archive import ParetoArchive

        rows = [r for r in self.records(*sources) if keep is None or keep(r)]
        archive = ParetoArchive(("map", cost), maximize=("map",))
        for r in rows:
            archive.add(r["encoding"], {"map": r["map"], cost: r[cost]})
        return sorted((rows[i] for i in archive.front_indices()), key=lambda r: -r["map"])

    # -- 1. stage one --------------------------------------------------------------------------
    def stage_one(self, workers) -> dict:
        from nasx.search import run_search

        cfg, run = self.cfg, self.run
        baselines = self._evaluate_fixed(workers, self.space1, BASELINES, "baseline1")
        strategy = self._strategy(self.space1, ("map", "latency_ms"))
        summary = run.done("stage1")
        if summary is None:
            def time_left() -> float:
                return run.clock.budget_seconds * cfg.stage1_share - run.clock.spent()

            log.info("[1/5] stage one: structural search on (mAP, latency), %.1f min, at least %d architectures",
                     max(time_left(), 0) / 60, cfg.stage1_min)
            out = run_search(strategy, self.evaluator(self.space1), self.results, state_path=run.path("stage1_state.pt"),
                             round_size=cfg.round_size, workers=workers, time_left=time_left,
                             max_evaluations=cfg.stage1_max, min_evaluations=cfg.stage1_min, source="stage1",
                             progress=cfg.progress, on_round=lambda e: (run.clock.save(), self.runlog.round(e)),
                             on_record=self.runlog.candidate)
            summary = run.mark_done("stage1", {k: out[k] for k in ("rounds", "evaluated", "stopped", "history")})
        return {"baselines": baselines, **summary}

    # -- 2. pick -------------------------------------------------------------------------------
    def pick(self) -> list[dict]:
        from nasx.spaces.residual import ResidualEncoding

        done = self.run.done("pick")
        if done is not None:
            return done["picks"]

        def residual(record) -> bool:  # stage two evolves residual strings only: no MobileNetV2
            try:
                ResidualEncoding.parse(self.space1.spec(record["encoding"])[0]["backbone"])
                return True
            except ValueError:
                return False

        # The front among the models stage two can start from: a MobileNetV2 that beats every
        # residual model must not leave stage two without a start.
        front = self.front("latency_ms", "stage1", "baseline1", keep=residual)[: self.cfg.picks]
        if not front:
            raise RuntimeError("stage one evaluated no model with a residual backbone to start stage two from")
        picks = []
        for r in front:
            spec, size = self.space1.spec(r["encoding"])
            picks.append({"encoding": r["encoding"], "spec": spec, "input_size": list(size), "map": r["map"],
                          "latency_ms": r["latency_ms"]})
        log.info("[2/5] stage two starts from %s", ", ".join(p["encoding"] for p in picks))
        return self.run.mark_done("pick", {"picks": picks})["picks"]

    # -- 3. stage two --------------------------------------------------------------------------
    def space2(self, pick: dict, **kwargs):
        from nasx.spaces.sm_nas import ModularSpace

        return ModularSpace(base_spec=pick["spec"], width=self.cfg.width, input_size=tuple(pick["input_size"]),
                            num_classes=self.num_classes, **kwargs)

    def start_arch(self, pick: dict, space) -> str:
        """The pick's own backbone as a stage-two architecture (its FPN width snapped into the space)."""
        fpn = pick["spec"].get("fpn_channels") if space.fpn_widths else None
        if fpn is not None and fpn not in space.fpn_widths:
            fpn = min(space.fpn_widths, key=lambda w: abs(w - fpn))
        return space.encode({"backbone": pick["spec"]["backbone"], "fpn": fpn})

    def macs(self, space, arch) -> float:
        """MACs of an untrained architecture, counted on the meta device (partial-order pruning's cost)."""
        from nasx.evaluate import count_detector_macs
        from nasx.spaces.detectors import build_from_spec

        spec, size = space.spec(arch)
        with torch.device("meta"):
            model = build_from_spec(spec)
        return float(count_detector_macs(model, size, num_rois=self.cfg.short.macs_rois).total)

    def retrain_seconds(self, rows) -> float:
        """The retraining of every pick: ``retrain_top`` + 2 models each at the slowest measured step
        time of their candidates, plus a minute of scoring per model; a quarter of the budget before
        any was measured."""
        per_pick = [max((r["s_per_step"] for r in group if r.get("s_per_step")), default=math.nan) for group in rows]
        if not per_pick or any(math.isnan(v) for v in per_pick):
            return self.run.clock.budget_seconds / 4
        n = self.cfg.retrain_top + 2
        return sum(n * (self.cfg.retrain_steps * s + 60) for s in per_pick)

    def stage_two(self, workers, picks: list[dict]) -> list[dict]:
        from nasx.search import run_search

        cfg, run, out = self.cfg, self.run, []
        for i, pick in enumerate(picks):
            space = self.space2(pick)
            start = self._evaluate_fixed(workers, space, {"start": self.start_arch(pick, space)}, f"start2/{i}")["start"]
            baselines = {}
            for name, (block, stages) in STAGE2_BASELINES.items():
                bspace = self.space2(pick, block=block)
                base = min(bspace.bases, key=lambda b: abs(b - round(64 * cfg.width)))
                fpn = bspace.fpn_widths[len(bspace.fpn_widths) // 2] if bspace.fpn_widths else None
                baselines.update(self._evaluate_fixed(workers, bspace, {name: {"backbone": f"{block}_{base}_{stages}",
                                                                              "fpn": fpn}}, f"baseline2/{i}"))
            reference = {"map": 0.0, "macs": 2.0 * start["macs"]} if start.get("status") == "ok" else None
            strategy = self._strategy(space, ("map", "macs"), cost=lambda a, s=space: self.macs(s, a),
                                      prune=cfg.prune, audit_every=cfg.audit_every, hv_reference=reference)
            # SM-NAS searches around the picked model: the start (and a baseline of its block type)
            # is the population's first member — on the front, mutated, and an upper bound for POP.
            # A resumed search replaces this with its saved state, which already holds them.
            strategy.tell([r for r in [start, *baselines.values()] if _in_space(space, r)])
            summary = run.done(f"stage2-{i}")
            if summary is None:
                source = f"stage2/{i}"

                def time_left() -> float:
                    done = [[r for r in self.results if r.get("source") == f"stage2/{j}"] for j in range(len(picks))]
                    return run.clock.left() - self.retrain_seconds([d or [start] for d in done])

                log.info("[3/5] stage two from %s: modular search on (mAP, MACs), at least %d architectures",
                         pick["encoding"], cfg.stage2_min)
                res = run_search(strategy, self.evaluator(space), self.results,
                                 state_path=run.path(f"stage2_{i}_state.pt"), round_size=cfg.round_size,
                                 workers=workers, time_left=time_left, max_evaluations=cfg.stage2_max,
                                 min_evaluations=cfg.stage2_min, source=source, progress=cfg.progress,
                                 on_round=lambda e: (run.clock.save(), self.runlog.round(e)),
                                 on_record=self.runlog.candidate)
                summary = run.mark_done(f"stage2-{i}", {
                    **{k: res[k] for k in ("rounds", "evaluated", "stopped", "history")},
                    "pruned": len(strategy.pruned), "audit": strategy.audit_report(),
                    "pruned_archs": [p["encoding"] for p in strategy.pruned]})
            out.append({"pick": pick, "start": start, "baselines": baselines, **summary})
        return out

    # -- 4. retrain ----------------------------------------------------------------------------
    def stage_retrain(self, stage2: list[dict]) -> list[list[dict]]:
        cfg, rows = self.cfg, []
        for i, part in enumerate(stage2):
            space = self.space2(part["pick"])
            front = self.front("macs", f"stage2/{i}")[: cfg.retrain_top]
            chosen = [("start", part["start"])] + [(f"front{k + 1}", r) for k, r in enumerate(front)]
            base = part["baselines"].get("R18-FPN")
            if base is not None and base["encoding"] != part["start"]["encoding"]:  # a ResNet-18 pick is its own baseline
                chosen.append(("R18-FPN", base))
            candidates = []
            for name, r in chosen:
                if r is None or r.get("status") != "ok":
                    continue
                bspace = space if name != "R18-FPN" else self.space2(part["pick"], block="basicblock")
                candidates.append(Candidate(name, r["encoding"], bspace.spec(r["encoding"])[0],
                                            {"short_map": r["map"], "short_macs": r["macs"]}))
            size = tuple(part["pick"]["input_size"])
            train_set, val_set = self.evaluator(space).datasets(size)
            log.info("[4/5] retraining %d models of pick %d for %d steps each", len(candidates), i, cfg.retrain_steps)
            timing = cfg.short.timing(cfg.device)
            done = retrain_and_score(self.run, candidates, train_set=train_set, val_set=val_set,
                                     steps=cfg.retrain_steps, recipe=self.recipe, input_size=size,
                                     meta={"size": min(size)}, runlog=self.runlog, macs_rois=cfg.short.macs_rois,
                                     timing=timing)
            rows.append(time_together(self.run, done, input_size=size, sweeps=cfg.final_sweeps, timing=timing,
                                      stage=f"timed_together-{i}"))
        return rows

    # -- 5. report -----------------------------------------------------------------------------
    def stage_report(self, stage1: dict, stage2: list[dict], retrained: list[list[dict]]) -> dict:
        from nasx.evaluate.rank import kendall_tau

        def front(cost: str, *sources: str) -> list[dict]:  # as the report shows it: cheapest first
            return sorted((_short(r) for r in self.front(cost, *sources)), key=lambda r: r[cost])

        marked1 = {name: r for name, r in stage1["baselines"].items() if r and r.get("status") == "ok"}
        # The drawn front is over everything evaluated, baselines included: a baseline that dominates
        # searched models must show it.
        pareto_plot(self.run, self.records("stage1") + list(marked1.values()), marked=marked1, cost="latency_ms",
                    name="stage1_pareto.png", archive_name="stage1_archive.json",
                    title=f"SM-NAS stage one on {Path(self.cfg.data).name}: short training")
        picks_out = []
        for i, (part, rows) in enumerate(zip(stage2, retrained)):
            s2 = self.records(f"stage2/{i}")
            start = part["start"]
            start_label = f"start ({part['pick']['encoding'].split('|')[0]})"
            marked = {}
            for name, r in part["baselines"].items():  # a baseline that is the start model is marked once
                if r and r.get("status") == "ok":
                    same = start.get("encoding") == r["encoding"]
                    start_label = f"start = {name}" if same else start_label
                    if not same:
                        marked[name] = r
            if start.get("status") == "ok":
                marked = {start_label: start, **marked}
            pareto_plot(self.run, s2 + list(marked.values()), marked=marked,
                        name="stage2_pareto.png" if i == 0 else f"stage2_pareto_{i}.png",
                        archive_name=f"stage2_{i}_archive.json",
                        title=f"SM-NAS stage two from {part['pick']['encoding']}")
            better = [r for r in s2 if start.get("status") == "ok" and r["map"] > start["map"]
                      and r["macs"] <= start["macs"]]
            retrained_rows = [dict(row_summary(r, ("short_map", "latency_ms_alone")), name=r["name"]) for r in rows]
            # the goal's test after the longer training: a retrained front model with more mAP than the
            # retrained start at no more MACs
            start_row = next((r for r in rows if r["name"] == "start"), None)
            beat = [r["name"] for r in rows if start_row is not None and r["name"].startswith("front")
                    and r["map"] > start_row["map"] and r["macs"] <= start_row["macs"]]
            tau = kendall_tau([r["short_map"] for r in rows], [r["map"] for r in rows]) if len(rows) > 1 else None
            picks_out.append({
                "pick": part["pick"]["encoding"], "start": _short(start), "baselines": {
                    n: _short(r) for n, r in part["baselines"].items() if r},
                "front": front("macs", f"stage2/{i}"), "evaluated": part["evaluated"], "rounds": part["rounds"],
                "stopped": part["stopped"], "pruned": part["pruned"], "audit": part["audit"],
                "hypervolume": [h.get("hypervolume") for h in part["history"]],
                "pruned_per_round": [h.get("pruned") for h in part["history"]],
                "dominates_start": bool(better), "dominating_start": [r["encoding"] for r in better],
                "retrained_dominates_start": None if start_row is None else bool(beat),
                "retrained_dominating_start": beat,
                "retrained": retrained_rows, "kendall_tau": tau,
                "best": max(retrained_rows, key=lambda r: r["map"]) if retrained_rows else None})
        evaluated = sum(1 for r in self.results if r.get("status") == "ok")
        report = write_report(self.run, {
            "stage1": {"front": front("latency_ms", "stage1", "baseline1"), "evaluated": stage1["evaluated"],
                       "rounds": stage1["rounds"], "stopped": stage1["stopped"],
                       "hypervolume": [h.get("hypervolume") for h in stage1["history"]],
                       "baselines": {n: _short(r) for n, r in stage1["baselines"].items() if r}},
            "stage2": picks_out, "evaluated": evaluated,
            "failed": sum(1 for r in self.results if r.get("status") != "ok")})
        log.info("[5/5] %s/report.json, report.html, stage1_pareto.png, stage2_pareto.png", self.cfg.out)
        return report


def _short(r: Optional[dict]) -> Optional[dict]:
    """A short-training record as the report shows it."""
    if r is None or r.get("status") != "ok":
        return None if r is None else {"arch": r["encoding"], "status": r.get("status"), "error": r.get("error")}
    return {"arch": r["encoding"], "map": r["map"], "ap50": r.get("ap50"), "latency_ms": r.get("latency_ms"),
            "macs": r["macs"], "params": r["params"]}


def format_summary(report: dict) -> str:
    """Both fronts and the retrained models: what ``make demo-sm-nas`` ends with."""
    lines = ["stage one front, baselines included (short training: mAP vs latency):",
             f"  {'architecture':<44} {'mAP':>6} {'ms':>8} {'GMACs':>7}"]
    for r in report["stage1"]["front"]:
        lines.append(f"  {r['arch']:<44} {r['map']:>6.3f} {r['latency_ms']:>8.1f} {r['macs'] / 1e9:>7.3f}")
    for part in report["stage2"]:
        lines.append(f"stage two from {part['pick']} (short training: mAP vs GMACs); {part['evaluated']} evaluated, "
                     f"{part['pruned']} pruned, audit {part['audit']['would_enter_front']}/{part['audit']['evaluated']} "
                     f"would have entered the front")
        for r in part["front"]:
            lines.append(f"  {r['arch']:<44} {r['map']:>6.3f} {r['macs'] / 1e9:>7.3f} GMACs")
        if part["retrained"]:
            lines.append(f"retrained ({report['config']['retrain_steps']} steps), Kendall tau short vs retrained "
                         f"{part['kendall_tau'] if part['kendall_tau'] is None else round(part['kendall_tau'], 2)}:")
            lines.append(format_table({r["name"]: r for r in part["retrained"]}, extra=[("short mAP", "short_map")]))
            if part.get("retrained_dominates_start") is not None:
                lines.append(f"a retrained front model dominates the start (more mAP, no more MACs): "
                             f"{', '.join(part['retrained_dominating_start']) or 'no'}")
    lines.append(f"{report['evaluated']} architectures evaluated ({report['failed']} failed) in "
                 f"{report['seconds'] / 60:.1f} min")
    return "\n".join(lines)


def run_sm_nas(cfg: SmNasConfig) -> dict:
    """Run (or resume) the whole pipeline; returns the report."""
    from nasx.search import make_workers
    from nasx.search.workers import check_backend

    check_backend(cfg.backend)
    torch.manual_seed(cfg.seed)
    nas = _SmNas(cfg)
    nas.run.freeze_config()
    nas.runlog = RunLog(nas.run.path("tb"), enabled=cfg.tensorboard)
    try:
        with make_workers(cfg.workers, backend=cfg.backend, ray_address=cfg.ray_address) as workers:
            stage1 = nas.stage_one(workers)
            picks = nas.pick()
            stage2 = nas.stage_two(workers, picks)
        retrained = nas.stage_retrain(stage2)
        nas.run.reached("retrain", {"retrained": sum(len(r) for r in retrained)})
        report = nas.stage_report(stage1, stage2, retrained)
        nas.run.reached("report")
        write_html_report(nas.run.root)
    finally:
        nas.runlog.close()
    return report
