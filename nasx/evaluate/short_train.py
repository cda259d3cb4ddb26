"""Short training from scratch as a search's evaluator: build the whole detector an architecture
describes, train it N steps on the training images, score COCO mAP on (part of) the validation
images and measure its cost — SM-NAS's evaluation (seed 001: "5 epochs separate good models from
bad models"), scaled to what a search affords.

:class:`ShortTrainEvaluator` is a plain picklable callable ``encoding -> metrics dict``, so it runs
inline, in local processes or on Ray (``nasx.search.workers``). What the encoding means is the
space's business: ``space.spec(arch) -> (build spec, (H, W))`` gives the detector
(:func:`nasx.spaces.detectors.build_from_spec`) and its input size.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from nasx.evaluate.coco_eval import evaluate_detector
from nasx.evaluate.cost import (CLOCKS, RUNTIMES, check_clock, count_detector_macs, count_params, measure_latency,
                               runtime_device)

__all__ = ["ShortTrainConfig", "ShortTrainEvaluator"]


@dataclass
class ShortTrainConfig:
    """steps / batch_size: training from scratch per candidate (AdamW unless ``optimizer="sgd"``);
    lr None: the optimizer's default. val_images: validation images scored (0: all).
    latency: time each candidate (batch 1, eval mode, post-processing included) on ``device``;
    latency_runtime: in PyTorch, or exported to ONNX and run by ONNX Runtime's CPU provider (the
    runtime a deployment uses; see :func:`~nasx.evaluate.cost.measure_latency`)."""

    steps: int = field(default=200, metadata={"help": "training steps from scratch per candidate"})
    batch_size: int = field(default=16, metadata={"help": "images per training step"})
    optimizer: str = field(default="adamw", metadata={"help": "adamw or sgd", "choices": ("adamw", "sgd")})
    lr: Optional[float] = field(default=None, metadata={"help": "learning rate (default: the optimizer's)"})
    warmup: float = field(default=0.2, metadata={"help": "share of the steps of linear warm-up (at most 100)"})
    val_images: int = field(default=200, metadata={"help": "validation images scored per candidate (0: all)"})
    latency: bool = field(default=True, metadata={"help": "time each candidate (batch 1) on the device"})
    latency_repeats: int = field(default=10, metadata={"help": "timed forward passes per candidate"})
    latency_runtime: str = field(default="torch", metadata={
        "help": "where each candidate is timed: torch, or onnxruntime (its ONNX export on ONNX Runtime's CPU "
                "provider; needs pip install nasx[export])", "choices": RUNTIMES})
    latency_threads: Optional[int] = field(default=None, metadata={
        "help": "torch threads every latency is measured at (default: the measuring process's: a worker's share "
                "of the cores, or all of them in the main process)"})
    latency_clock: str = field(default="wall", metadata={
        "help": "wall, or thread: the timing thread's CPU time (PyTorch on the CPU at --short-latency-threads 1; "
                "leaves out time lost to other processes on a shared machine)", "choices": CLOCKS})
    macs_rois: int = field(default=1000, metadata={"help": "two-stage detectors: RoIs per image their MACs are "
                                                           "counted at"})
    seed: int = field(default=0, metadata={"help": "seed of each candidate's weights and batches"})

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.val_images < 0 or self.latency_repeats < 1 or self.macs_rois < 1:
            raise ValueError(f"ShortTrainConfig: expected steps, batch_size, latency_repeats >= 1 and val_images "
                             f">= 0, got {self.steps}, {self.batch_size}, {self.latency_repeats}, {self.val_images}")
        if self.latency_runtime not in RUNTIMES:
            raise ValueError(f"ShortTrainConfig: latency_runtime must be one of {RUNTIMES}, got {self.latency_runtime!r}")
        if self.latency_threads is not None and self.latency_threads < 1:
            raise ValueError(f"ShortTrainConfig: latency_threads must be >= 1, got {self.latency_threads}")
        # the device is the pipeline's: measure_latency checks it when it times
        check_clock(self.latency_clock, "cpu", self.latency_threads, self.latency_runtime,
                    who="ShortTrainConfig (latency_clock, latency_threads, latency_runtime)")

    def timing(self, device) -> dict:
        """:func:`~nasx.evaluate.cost.measure_latency`'s where and how for a candidate trained on ``device``."""
        return {"device": runtime_device(device, self.latency_runtime), "runtime": self.latency_runtime,
                "threads": self.latency_threads, "clock": self.latency_clock}


class ShortTrainEvaluator:
    """``evaluator(encoding) -> {"status": "ok", "map", "ap50", "latency_ms", "macs", "params",
    "train_loss", "s_per_step", "seconds", "input_size"}``; raises when the detector cannot be built or diverges
    (the search loop records that as a failed candidate).

    Args:
        data: a dataset directory in COCO's layout (``nasx data synth`` writes one).
        space: anything with ``spec(arch) -> (build spec, (H, W))`` and ``decode(text)``.
        config: :class:`ShortTrainConfig`. device: where candidates train and are timed.
        threads: torch threads per evaluation (None: leave as is) — one per worker process keeps
            parallel candidates off each other's cores.
    """

    def __init__(self, data, *, space, config: ShortTrainConfig = ShortTrainConfig(), device: str = "cpu",
                 threads: Optional[int] = None):
        self.data, self.space, self.config = Path(data), space, config
        self.device, self.threads = device, threads
        self._datasets: dict = {}

    def __getstate__(self):  # datasets are reopened in each worker process, never pickled
        return {**self.__dict__, "_datasets": {}}

    def datasets(self, size: tuple[int, int]):
        """(train, val subset) read at the candidate's input size, opened once per size and process."""
        from nasx.data import coco_layout_dataset
        from nasx.data.transforms import detection_transforms

        key = tuple(size)
        if key not in self._datasets:
            short, long = min(size), max(size)
            train = coco_layout_dataset(self.data, "train", transforms=detection_transforms(True, short, long))
            val = coco_layout_dataset(self.data, "val", transforms=detection_transforms(False, short, long))
            self._datasets[key] = (train, val)
        return self._datasets[key]

    def train_and_score(self, spec: dict, size: tuple[int, int]):
        """Build ``spec``, train it from scratch as configured and score COCO mAP on the validation
        subset; returns ``(model on the CPU, training result, metrics, validation subset)``."""
        from nasx.data import build_loader
        from nasx.spaces.detectors import build_from_spec
        from nasx.train import TrainConfig, train
        from nasx.train.optim import optimizer_settings

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        cfg = self.config
        train_set, val_set = self.datasets(size)
        torch.manual_seed(cfg.seed)
        model = build_from_spec(spec)
        loader = build_loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed,
                              drop_last=len(train_set) >= cfg.batch_size)
        settings = optimizer_settings(cfg.optimizer, cfg.lr)
        result = train(model, loader, TrainConfig(epochs=10 ** 6, max_steps=cfg.steps, optimizer=cfg.optimizer,
                                                  warmup_steps=min(100, int(cfg.steps * cfg.warmup)),
                                                  checkpoint_every=10 ** 9, **settings),
                       device=self.device, progress=False)
        n_val = len(val_set) if cfg.val_images == 0 else min(cfg.val_images, len(val_set))
        subset = torch.utils.data.Subset(val_set, range(n_val))
        metrics = evaluate_detector(model, val_set, build_loader(subset, 16), device=self.device)
        return model, result, metrics, subset

    def __call__(self, encoding) -> dict:
        """Train, score and measure one architecture (its text, or its mapping)."""
        start = time.perf_counter()
        cfg = self.config
        arch = self.space.decode(encoding) if isinstance(encoding, str) else encoding
        spec, size = self.space.spec(arch)
        model, result, metrics, _ = self.train_and_score(spec, size)
        model.cpu()
        out = {"status": "ok", "map": metrics["AP"], "ap50": metrics["AP50"], "params": count_params(model),
               "macs": count_detector_macs(model, size, num_rois=cfg.macs_rois).total, "input_size": list(size),
               "s_per_step": result["seconds"] / max(result["steps"], 1),
               "train_loss": sum(result["final_losses"].values()) if result.get("final_losses") else math.nan}
        if cfg.latency:
            images = torch.rand(1, 3, *size)
            out["latency_ms"] = measure_latency(model, images, warmup=2, repeats=cfg.latency_repeats,
                                                **cfg.timing(self.device)).median_ms
        out["seconds"] = time.perf_counter() - start
        return out
