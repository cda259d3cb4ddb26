"""Retrain-and-score: the last stage of every search. Each chosen architecture is built as a
whole detector, trained the same number of steps on images, and scored: COCO mAP on val
(pycocotools), parameters, MACs at the input size, batch-1 latency on the run's device.

One line per architecture in ``retrained.jsonl`` (written as each finishes, so a resumed run
retrains only what is missing); each detector's checkpoint records, in ``meta["build"]``, the
:func:`nasx.spaces.detectors.build_detector` arguments that rebuild it, so ``nasx eval
--checkpoint`` scores any of them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import torch

from nasx.pipelines.rundir import RunDir
from nasx.pipelines.tensorboard import RunLog
from nasx.pipelines.training import TrainRecipe, train_steps
from nasx.search.results import ResultsLog
from nasx.spaces.space import arch_key

__all__ = ["Candidate", "retrain_and_score", "time_together"]

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """name: how the report calls it ("baseline", "top1", ...). encoding: its canonical text.
    build: keyword arguments of :func:`nasx.spaces.detectors.build_detector` (with ``detector``).
    info: fields copied into its line (e.g. the search's reward for it)."""

    name: str
    encoding: str
    build: dict
    info: dict = field(default_factory=dict)


def retrain_and_score(run: RunDir, candidates: Sequence[Candidate], *, train_set, val_set, steps: int,
                      recipe: TrainRecipe, input_size: tuple[int, int], meta: Optional[dict] = None,
                      prepare: Optional[Callable[[torch.nn.Module, Candidate], None]] = None,
                      log_name: str = "retrained.jsonl", stage: str = "retrain",
                      runlog: Optional[RunLog] = None, macs_rois: int = 1000,
                      timing: Optional[Mapping] = None,
                      skip: Optional[Callable[[Candidate, list[dict]], bool]] = None) -> list[dict]:
    """Retrain and score ``candidates`` (those already in ``log_name`` are not run again);
    returns their lines in the order given. ``prepare(model, candidate)`` runs before training
    (weight inheritance); ``meta`` goes into every checkpoint beside ``build``; ``runlog``
    receives the training curves and the scores (TensorBoard); ``macs_rois``: the RoIs per image a
    two-stage detector's MACs are counted at; ``timing``: how each is timed at batch 1 —
    :func:`~nasx.evaluate.cost.measure_latency`'s ``runtime`` (``"torch"``, the default, or
    ``"onnxruntime"``), ``device`` (default: where ``runtime`` runs for ``recipe.device``), ``threads``
    and ``clock``, e.g. :meth:`ShortTrainConfig.timing <nasx.evaluate.short_train.ShortTrainConfig.timing>`;
    ``skip(candidate, lines so far)``: asked before training each candidate not yet retrained; True
    leaves it out (it has no line in what is returned)."""
    from nasx.data import build_loader
    from nasx.evaluate import count_detector_macs, count_params, evaluate_detector, measure_latency
    from nasx.evaluate.cost import runtime_device
    from nasx.spaces.detectors import build_from_spec

    how = {"runtime": "torch", **(timing or {})}
    how.setdefault("device", runtime_device(recipe.device, how["runtime"]))
    lines = ResultsLog(run.path(log_name))
    left_out = set()
    for n, cand in enumerate(candidates):
        if cand.encoding in lines:
            continue
        if skip is not None and skip(cand, [lines.get(c.encoding) for c in candidates if c.encoding in lines]):
            left_out.add(cand.encoding)
            log.info("[%s] %d/%d: %s left out", stage, n + 1, len(candidates), cand.name)
            continue
        log.info("[%s] %d/%d: %s, %d steps", stage, n + 1, len(candidates), cand.name, steps)
        model = build_from_spec(cand.build)
        if prepare is not None:
            prepare(model, cand)
        work = run.path(stage, arch_key(cand.encoding))
        result = train_steps(model, train_set, steps=steps, out_dir=work, recipe=recipe, on_checkpoint=run.clock.tick,
                             on_log=runlog.training(f"{stage}/{cand.name}") if runlog else None,
                             meta={**(meta or {}), "build": dict(cand.build), "stage": stage, "arch": cand.encoding,
                                   "input_size": list(input_size)})
        loader = build_loader(val_set, 32, workers=recipe.loader_workers)
        metrics = evaluate_detector(model, val_set, loader, device=recipe.device)
        model.cpu()
        macs = count_detector_macs(model, tuple(input_size), num_rois=macs_rois).total
        latency = measure_latency(model, torch.rand(1, 3, *input_size), **how).median_ms
        row = lines.append({"encoding": cand.encoding, "name": cand.name, "map": metrics["AP"], "metrics": metrics,
                      "params": count_params(model), "macs": macs, "latency_ms": latency,
                      "latency_runtime": how["runtime"],
                      "train_s_per_step": result["s_per_step"], "checkpoint": run.relative(work / "last.pt"),
                      **cand.info})
        run.clock.save()
        if runlog is not None:
            runlog.retrained(n, row)
        log.info("      mAP %.3f (AP50 %.3f), %.3f GMACs", metrics["AP"], metrics["AP50"], macs / 1e9)
    return [dict(lines.get(c.encoding), name=c.name) for c in candidates if c.encoding not in left_out]


def time_together(run: RunDir, rows: Sequence[Mapping], *, input_size: tuple[int, int], sweeps: int,
                  timing: Optional[Mapping] = None, stage: str = "timed_together") -> list[dict]:
    """The retrained detectors' latencies measured *against each other*
    (:func:`~nasx.evaluate.cost.measure_together`: ``sweeps`` sweeps over all of them, one batch-1
    call each per sweep, from their checkpoints) — the figures a comparison between them may use.
    Each was also timed alone right after its training, minutes apart from the others, where a
    shared CPU's load moves a detector's latency by a third. Returns ``rows`` with ``latency_ms``
    from the joint timing and ``latency_ms_alone`` the earlier figure; done once per run (stage
    ``stage``). ``timing`` as :func:`retrain_and_score`'s; ONNX Runtime timings (one session per
    export) are returned unchanged."""
    from nasx.evaluate.cost import measure_together
    from nasx.spaces.detectors import build_from_spec
    from nasx.train.checkpoint import load_checkpoint

    how = {"runtime": "torch", **(timing or {})}
    if how["runtime"] != "torch" or not rows:
        return [dict(r) for r in rows]
    done = run.done(stage)
    if done is None or sorted(done["latency_ms"]) != sorted(r["name"] for r in rows):
        models = {}
        for r in rows:
            state = load_checkpoint(run.path(r["checkpoint"]), required_keys=("model", "meta"))
            models[r["name"]] = build_from_spec(state["meta"]["build"])
            models[r["name"]].load_state_dict(state["model"])
        device = how.get("device") or "cpu"
        log.info("timing the %d retrained detectors against each other (%d sweeps)", len(models), sweeps)
        reports = measure_together(models, torch.rand(1, 3, *input_size), device=device, repeats=sweeps,
                                   threads=how.get("threads"), clock=how.get("clock", "wall"))
        done = run.mark_done(stage, {"latency_ms": {name: rep.median_ms for name, rep in reports.items()},
                                     "iqr_ms": {name: rep.iqr_ms for name, rep in reports.items()}, "sweeps": sweeps,
                                     "threads": next(iter(reports.values())).threads, "clock": how.get("clock", "wall")})
    return [dict(r, latency_ms=done["latency_ms"][r["name"]], latency_ms_alone=r["latency_ms"]) for r in rows]
