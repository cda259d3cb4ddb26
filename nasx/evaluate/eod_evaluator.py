"""NAS-EOD's evaluator: short training from scratch, then the multi-objective reward
−(λc·Lc + λr·Lr + Lat(m)) (:func:`~nasx.evaluate.eod_reward.eod_reward`) with Lc, Lr the detector's
classification and regression losses on held-out images and Lat(m) from the latency look-up table
(:class:`~nasx.evaluate.latency_table.LatencyTable`) — no candidate is timed during the search —
or, when the short training's ``latency_runtime`` is ``"onnxruntime"``, from timing each candidate's
ONNX export in ONNX Runtime (the table times parts inside a PyTorch forward, which a graph lacks).

Named baselines (``"baseline:<name>"``: whole detectors outside the space, e.g. MobileNetV2-FPNLite)
are trained and scored the same way, but timed (the table covers only the space's parts).

Given ``untrained`` losses (and the hinge form, whose T is a limit), a candidate the table predicts
slower than T is not trained at all — as latency-constrained NAS samples only within the constraint
(SPOS, OFA) — and is rewarded with those losses (a baseline's) less its latency term: a controller
still learns how far over it was, in milliseconds of prediction instead of a short training.

A plain picklable ``encoding -> dict`` callable, so it runs inline, in processes or on Ray.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Mapping, Optional

import torch

from nasx.evaluate.eod_reward import LATENCY_FORMS, eod_reward
from nasx.evaluate.short_train import ShortTrainConfig, ShortTrainEvaluator

__all__ = ["EodRewardConfig", "NasEodEvaluator"]

BASELINE_PREFIX = "baseline:"


@dataclass
class EodRewardConfig:
    """The reward's settings (nasx's choices; the poster gives only the sum): T (``target_latency_ms``),
    λc, λr, β and the latency term's form (see :func:`~nasx.evaluate.eod_reward.latency_term`)."""

    target_latency_ms: Optional[float] = None
    lambda_c: float = 1.0
    lambda_r: float = 1.0
    beta: float = 1.0
    form: str = "hinge"

    def __post_init__(self):
        if self.target_latency_ms is not None and not self.target_latency_ms > 0:
            raise ValueError(f"target_latency_ms must be > 0, got {self.target_latency_ms}")
        if self.form not in LATENCY_FORMS:
            raise ValueError(f"latency form must be one of {LATENCY_FORMS}, got {self.form!r}")
        if min(self.lambda_c, self.lambda_r, self.beta) < 0:
            raise ValueError(f"lambda_c, lambda_r and beta must be >= 0, got {self.lambda_c}, {self.lambda_r}, "
                             f"{self.beta}")


class NasEodEvaluator(ShortTrainEvaluator):
    """``evaluator(encoding) -> {"status": "ok", "reward", "cls_loss", "reg_loss", "latency_ms",
    "latency_source" ("lut" | "measured"), "map", "ap50", "macs", "params", "s_per_step", "seconds",
    "input_size"}``.

    Args:
        data: dataset directory (COCO layout). space: a :class:`~nasx.spaces.nas_eod.NasEodSpace`.
        table: the :class:`LatencyTable` (or its ``to_dict()``) of ``space`` on the target device;
            None exactly when ``config.latency_runtime`` is not ``"torch"`` (every candidate is timed).
        baselines: name -> (build spec, (H, W)) of the named baselines.
        untrained: ``{"cls", "reg"}`` held-out losses of a candidate predicted over T, scored untrained
            (``"trained": False``); None: every candidate is trained. Needs the table and the hinge form.
        reward: :class:`EodRewardConfig` with its target latency set.
        config: the short training (:class:`ShortTrainConfig`; its ``latency`` flag is ignored:
            candidates are predicted, baselines measured; ``latency_runtime``: torch (the table) or onnxruntime
            (all measured)). device, threads: as ShortTrainEvaluator.
    """

    def __init__(self, data, *, space, table, baselines: Mapping[str, tuple], reward: EodRewardConfig,
                 config: ShortTrainConfig = ShortTrainConfig(), device: str = "cpu", threads: Optional[int] = None,
                 untrained: Optional[Mapping[str, float]] = None):
        super().__init__(data, space=space, config=config, device=device, threads=threads)
        if reward.target_latency_ms is None:
            raise ValueError("NasEodEvaluator: the reward needs a target latency (EodRewardConfig.target_latency_ms)")
        if (table is None) != (config.latency_runtime != "torch"):
            raise ValueError(f"NasEodEvaluator: a latency table goes with latency_runtime 'torch' and only with it; "
                             f"got {'no table' if table is None else 'a table'} and {config.latency_runtime!r}")
        self.table = table if table is None or isinstance(table, dict) else table.to_dict()
        self.baselines = {name: (dict(spec), tuple(size)) for name, (spec, size) in baselines.items()}
        self.reward = reward
        if untrained is not None and (table is None or reward.form != "hinge" or set(untrained) != {"cls", "reg"}):
            raise ValueError(f"NasEodEvaluator: untrained candidates need the latency table, the hinge form (T as a "
                             f"limit) and {{'cls', 'reg'}} losses; got {'no table' if table is None else 'a table'}, "
                             f"form {reward.form!r}, losses {sorted(untrained)}")
        self.untrained = None if untrained is None else {k: float(v) for k, v in untrained.items()}

    def spec_of(self, encoding: str) -> tuple[dict, tuple[int, int], bool]:
        """(build spec, input size, is a baseline) of an encoding."""
        if encoding.startswith(BASELINE_PREFIX):
            name = encoding[len(BASELINE_PREFIX):]
            if name not in self.baselines:
                raise ValueError(f"NasEodEvaluator: unknown baseline {name!r}; known: {sorted(self.baselines)}")
            spec, size = self.baselines[name]
            return spec, size, True
        spec, size = self.space.spec(self.space.decode(encoding))
        return spec, size, False

    @staticmethod
    @torch.no_grad()
    def held_out_losses(model, loader, device) -> dict:
        """Mean training losses on held-out batches (training-mode forward, so the losses are the ones
        the detector minimises; BN statistics are neither used from the running averages nor updated)."""
        from nasx.train.loop import move_batch

        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.momentum = 0.0
        model.train()
        sums, n = {}, 0
        try:
            for batch in loader:
                losses = model(*move_batch(batch, device))
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * batch.images.shape[0]
                n += batch.images.shape[0]
        finally:
            for m, mom in zip(norms, momenta):
                m.momentum = mom
            model.eval()
        return {k: v / max(n, 1) for k, v in sums.items()}

    def __call__(self, encoding) -> dict:
        from nasx.data import build_loader
        from nasx.evaluate.cost import count_detector_macs, count_params, measure_latency
        from nasx.evaluate.latency_table import LatencyTable

        start = time.perf_counter()
        cfg = self.config
        encoding = encoding if isinstance(encoding, str) else self.space.encode(encoding)
        spec, size, is_baseline = self.spec_of(encoding)
        r = self.reward
        if not is_baseline and self.untrained is not None:
            latency = LatencyTable.from_dict(self.table).predict(encoding)
            if latency > r.target_latency_ms:
                losses = self.untrained
                return {"status": "ok", "trained": False, "latency_ms": latency, "latency_source": "lut",
                        "reward": eod_reward(losses["cls"], losses["reg"], latency, target_ms=r.target_latency_ms,
                                             lambda_c=r.lambda_c, lambda_r=r.lambda_r, beta=r.beta, form=r.form),
                        "input_size": list(size), "seconds": time.perf_counter() - start}
        model, result, metrics, subset = self.train_and_score(spec, size)
        # Held-out losses need the targets in the same resized frame as training: the val transform.
        losses = self.held_out_losses(model, build_loader(subset, 16), self.device)
        model.cpu()
        if is_baseline or self.table is None:
            latency = measure_latency(model, torch.rand(1, 3, *size), warmup=2, repeats=cfg.latency_repeats,
                                      **cfg.timing(self.device)).median_ms
            source = "measured"
        else:
            latency, source = LatencyTable.from_dict(self.table).predict(encoding), "lut"
        reward = eod_reward(losses["cls"], losses["reg"], latency, target_ms=r.target_latency_ms, lambda_c=r.lambda_c,
                            lambda_r=r.lambda_r, beta=r.beta, form=r.form)
        return {"status": "ok", "reward": reward, "cls_loss": losses["cls"], "reg_loss": losses["reg"],
                "latency_ms": latency, "latency_source": source, "latency_runtime": cfg.latency_runtime,
                "map": metrics["AP"], "ap50": metrics["AP50"],
                "params": count_params(model), "macs": count_detector_macs(model, size).total,
                "input_size": list(size), "s_per_step": result["seconds"] / max(result["steps"], 1),
                "train_loss": sum(result["final_losses"].values()) if result.get("final_losses") else math.nan,
                "seconds": time.perf_counter() - start}
