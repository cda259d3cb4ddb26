"""The NAS-FCOS proxy task (seed 004, §3.3 and §4.1): train a sampled decoder on cached backbone
features only, then score it by its loss on held-out images.

Per candidate: build the decoder (FPN + head) from its encoding, train it for ``steps`` Adam
steps on the meta-train part of a :class:`FeatureCache` — no backbone forward, which is where
the speed comes from — keeping a Polyak (exponential moving) average of its weights; then the
averaged decoder's FCOS losses on meta-val give ``reward = -(cls + reg + ctr)`` (the paper's),
or, with ``reward="map"``, the COCO AP of its detections on meta-val.

:class:`DecoderProxy` is a plain picklable callable ``encoding -> metrics dict``, so the same
evaluation runs inline, in a process pool or on a remote engine (see ``nasx.search.workers``).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from nasx.evaluate.cost import RUNTIMES, count_detector_macs, count_params, measure_latency, runtime_device
from nasx.evaluate.feature_cache import FeatureCache
from nasx.spaces.space import arch_key

__all__ = ["ProxyConfig", "DecoderProxy", "PROXY_REWARDS"]

#: What the proxy scores on meta-val: its FCOS loss (the paper) or COCO AP of its detections.
PROXY_REWARDS = ("loss", "map")


@dataclass
class ProxyConfig:
    """steps: Adam steps per candidate; batch_size: cached images per step.
    lr, weight_decay: Adam (decoupled decay, AdamW); warmup_steps: linear warm-up.
    polyak: decay of the weight average used for scoring (0: score the last weights).
    val_batch_size: images per meta-val loss batch. grad_clip: max gradient norm.
    latency: also time the whole detector (batch 1) on the evaluating device; latency_runtime: in
    PyTorch or, exported to ONNX, in ONNX Runtime's CPU provider (see :func:`~nasx.evaluate.cost.measure_latency`).
    """

    steps: int = field(default=60, metadata={"help": "AdamW steps per candidate on cached features"})
    batch_size: int = field(default=16, metadata={"help": "cached images per proxy step"})
    lr: float = field(default=2e-3, metadata={"help": "proxy learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "proxy weight decay (decoupled)"})
    warmup_steps: int = field(default=10, metadata={"help": "linear warm-up steps of the proxy"})
    polyak: float = field(default=0.95, metadata={"help": "decay of the weight average scored on meta-val "
                                                          "(0: the last weights)"})
    val_batch_size: int = field(default=64, metadata={"help": "cached images per meta-val loss batch"})
    grad_clip: float = field(default=10.0, metadata={"help": "max gradient norm of the proxy"})
    latency: bool = field(default=True, metadata={"help": "also time each candidate's whole detector (batch 1)"})
    latency_runtime: str = field(default="torch", metadata={
        "help": "where each candidate is timed: torch, or onnxruntime (its ONNX export on ONNX Runtime's CPU "
                "provider; needs pip install nasx[export])", "choices": RUNTIMES})
    seed: int = field(default=0, metadata={"help": "seed of each candidate's initial weights and batches"})
    reward: str = field(default="loss", metadata={
        "help": "the proxy's score on meta-val: loss (-(cls + reg + ctr), the paper's) or map (COCO AP of the "
                "decoder's detections)", "choices": PROXY_REWARDS})

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"ProxyConfig: expected steps >= 1 and batch_size >= 1, got {self.steps}, {self.batch_size}")
        if not 0 <= self.polyak < 1:
            raise ValueError(f"ProxyConfig: polyak must be in [0, 1), got {self.polyak}")
        if self.reward not in PROXY_REWARDS:
            raise ValueError(f"ProxyConfig: reward must be one of {PROXY_REWARDS}, got {self.reward!r}")
        if self.latency_runtime not in RUNTIMES:
            raise ValueError(f"ProxyConfig: latency_runtime must be one of {RUNTIMES}, got {self.latency_runtime!r}")


class DecoderProxy:
    """``proxy(encoding) -> {"status": "ok", "reward", "losses": {cls, reg, ctr}, "meta_val_loss",
    ["meta_val_map",] "params", "macs", "decoder_params", "latency_ms", "seconds", "s_per_step"}``;
    raises on a diverging decoder. :meth:`train` and :meth:`score` are its two halves (a study of
    proxy settings drives them directly: ``nasx runs proxy-study``).

    Args:
        cache_dir: a :class:`FeatureCache` directory (opened lazily, once per process).
        train_indices, val_indices: the meta-train and meta-val images of the cache.
        space: a :class:`nasx.spaces.nas_fcos.NasFcosSpace` (its ``channels`` is the decoder width).
        num_classes: K.
        detector_kwargs: FCOS settings (``strides``, ``size_ranges``, ``center_radius``).
        backbone: the backbone's encoding and norm, ``{"encoding", "norm"}``: only for the whole
            detector's params, MACs and latency at ``input_size``.
        config: :class:`ProxyConfig`. device: where the decoder trains.
        weights_dir: if set, the averaged decoder weights of each candidate are saved there
            (``<key>.pt`` with ``{"neck", "head"}`` state dicts), so a retraining stage can start
            the decoder from them; the result's ``"weights"`` names the file.
    """

    def __init__(self, cache_dir, train_indices: Sequence[int], val_indices: Sequence[int], *, space,
                 num_classes: int, detector_kwargs: dict, backbone: dict, config: ProxyConfig = ProxyConfig(),
                 device: str = "cpu", weights_dir=None):
        if len(train_indices) == 0 or len(val_indices) == 0:
            raise ValueError(f"DecoderProxy: meta-train and meta-val must be non-empty, got {len(train_indices)} "
                             f"and {len(val_indices)} images")
        self.cache_dir = str(cache_dir)
        self.train_indices = np.asarray(train_indices, dtype=np.int64)
        self.val_indices = np.asarray(val_indices, dtype=np.int64)
        self.space, self.num_classes = space, int(num_classes)
        self.detector_kwargs, self.backbone = dict(detector_kwargs), dict(backbone)
        self.config, self.device = config, str(device)
        self.weights_dir = None if weights_dir is None else str(weights_dir)
        self._cache: Optional[FeatureCache] = None

    def __getstate__(self):  # the cache is reopened in each worker process, never pickled
        state = self.__dict__.copy()
        state["_cache"] = None
        state.pop("_gts", None)
        return state

    @property
    def cache(self) -> FeatureCache:
        if self._cache is None:
            self._cache = FeatureCache(self.cache_dir)
        return self._cache

    def build_detector(self, arch, backbone: Optional[nn.Module] = None):
        """FCOS with ``arch``'s decoder; the backbone is ``nn.Identity`` unless one is given."""
        from nasx.models.detectors import FCOS

        neck, head = self.space.build(arch, in_channels=self.cache.channels, num_classes=self.num_classes)
        return FCOS(backbone=backbone if backbone is not None else nn.Identity(), neck=neck, head=head,
                    num_classes=self.num_classes, **self.detector_kwargs)

    def _losses(self, model, indices) -> dict:
        return model.forward_features(*self.cache.batch(indices, self.device))

    def train(self, encoding, *, steps: Optional[int] = None, lr: Optional[float] = None,
              seed: Optional[int] = None, polyaks: Optional[Sequence[float]] = None, at: Sequence[int] = ()):
        """Trains ``encoding``'s decoder on meta-train as the proxy does, keeping one Polyak
        average per decay in ``polyaks``; yields ``(step, model, {polyak: averaged model},
        train_seconds)`` after each step in ``at`` and after the last. Unset arguments are the
        config's. The schedule is warm-up then constant, so the weights at step ``s`` of a longer
        run are those of an ``s``-step run: one training scores several proxy lengths."""
        cfg = self.config
        steps = cfg.steps if steps is None else int(steps)
        lr = cfg.lr if lr is None else float(lr)
        seed = cfg.seed if seed is None else int(seed)
        polyaks = (cfg.polyak,) if polyaks is None else tuple(float(d) for d in polyaks)
        if steps < 1 or not all(0 <= d < 1 for d in polyaks):
            raise ValueError(f"DecoderProxy.train: expected steps >= 1 and polyaks in [0, 1), got {steps}, {polyaks}")
        device = torch.device(self.device)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = self.build_detector(encoding).to(device).train()
        avgs = {}
        for d in polyaks:
            avgs[d] = copy.deepcopy(model)
            for p in avgs[d].parameters():
                p.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
        stops, seconds = set(at) | {steps}, 0.0
        order, pos = rng.permutation(self.train_indices), 0
        for step in range(steps):
            t0 = time.perf_counter()
            if pos + cfg.batch_size > len(order):
                order, pos = rng.permutation(self.train_indices), 0
            batch = order[pos:pos + cfg.batch_size]
            pos += cfg.batch_size
            for g in optimizer.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
            losses = self._losses(model, batch)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"decoder diverged at proxy step {step}: "
                                         f"{ {k: float(v) for k, v in losses.items()} }")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            with torch.no_grad():  # Polyak averaging; the early steps lean on the newest weights
                for d, avg in avgs.items():
                    decay = min(d, (1 + step) / (10 + step))
                    for a, p in zip(avg.parameters(), model.parameters()):
                        a.lerp_(p, 1 - decay)
            seconds += time.perf_counter() - t0
            if step + 1 in stops:
                yield step + 1, model, avgs, seconds

    def score(self, model, *, reward: Optional[str] = None, indices: Optional[Sequence[int]] = None) -> dict:
        """``model`` on meta-val (or ``indices`` of the cache): ``{"reward", "losses",
        "meta_val_loss"}`` and, with ``reward="map"``, ``"meta_val_map"`` (COCO AP of its
        detections), which is then the reward; else the reward is ``-meta_val_loss``."""
        reward = self.config.reward if reward is None else reward
        indices = self.val_indices if indices is None else np.asarray(indices, dtype=np.int64)
        return self.score_prefixes(model, indices, (len(indices),), reward=reward)[0]

    def score_prefixes(self, model, indices: Sequence[int], prefixes: Sequence[int], *, reward: str) -> list[dict]:
        """:meth:`score` on ``indices[:n]`` for each ``n`` in ``prefixes``, sharing the forward
        passes (the losses are summed per chunk, chunks never straddle a prefix's end)."""
        if reward not in PROXY_REWARDS:
            raise ValueError(f"DecoderProxy.score: reward must be one of {PROXY_REWARDS}, got {reward!r}")
        indices = np.asarray(indices, dtype=np.int64)
        if not prefixes or not all(1 <= n <= len(indices) for n in prefixes):
            raise ValueError(f"DecoderProxy.score: prefixes must be in [1, {len(indices)}], got {list(prefixes)}")
        ends = sorted(set(range(self.config.val_batch_size, len(indices), self.config.val_batch_size))
                      | {int(n) for n in prefixes})
        chunks, detections, start = [], [], 0
        was_training = model.training
        with torch.no_grad():
            for end in ends:
                chunk = np.sort(indices[start:end])
                model.train()
                chunks.append((end, len(chunk), {k: float(v) for k, v in self._losses(model, chunk).items()}))
                if reward == "map":
                    model.eval()
                    feats, shape, sizes, _ = self.cache.batch(chunk, self.device)
                    detections += zip(chunk.tolist(), model.forward_features(feats, shape, sizes))
                start = end
        model.train(was_training)
        out = []
        for n in prefixes:
            totals = {}
            for end, size, losses in chunks:
                if end <= n:
                    for k, v in losses.items():
                        totals[k] = totals.get(k, 0.0) + v * size
            losses = {k: v / n for k, v in totals.items()}
            row = {"losses": losses, "meta_val_loss": sum(losses.values())}
            if not math.isfinite(row["meta_val_loss"]):
                raise FloatingPointError(f"decoder gives a non-finite meta-val loss: {losses}")
            if reward == "map":
                keep = set(indices[:n].tolist())
                row["meta_val_map"] = self._meta_val_map(indices[:n], [d for d in detections if d[0] in keep])
            row["reward"] = row["meta_val_map"] if reward == "map" else -row["meta_val_loss"]
            out.append(row)
        return out

    def _meta_val_map(self, indices, detections) -> float:
        """COCO AP (pycocotools) of ``[(cache index, detections)]`` against the cache's boxes, in
        the cached (resized) image coordinates; the ground truth is built once per index set."""
        from nasx.evaluate.coco_eval import coco_map

        key = tuple(sorted(int(i) for i in indices))
        gts = self.__dict__.setdefault("_gts", {})
        if key not in gts:
            gts[key] = _coco_from_cache(self.cache, key, self.num_classes)
        results = []
        for i, det in detections:
            xywh = det["boxes"].float().cpu().clone()
            xywh[:, 2:] -= xywh[:, :2]
            for box, s, c in zip(xywh.tolist(), det["scores"].tolist(), det["labels"].tolist()):
                results.append({"image_id": int(i), "category_id": int(c), "bbox": box, "score": float(s)})
        return coco_map(gts[key], results)["AP"]

    def __call__(self, encoding) -> dict:
        cfg = self.config
        t0 = time.perf_counter()
        *_, (_, model, avgs, train_seconds) = self.train(encoding)
        avg = avgs[cfg.polyak]
        out = {"status": "ok", **self.score(avg),
               "decoder_params": count_params(model.neck) + count_params(model.head),
               "seconds": time.perf_counter() - t0, "s_per_step": train_seconds / cfg.steps}
        if self.weights_dir is not None:
            out["weights"] = str(self.save_weights(encoding, avg))
        out.update(self.cost(encoding, latency=cfg.latency, runtime=cfg.latency_runtime))
        return out

    def weights_path(self, encoding) -> Path:
        return Path(self.weights_dir) / f"{arch_key(encoding)}.pt"

    def save_weights(self, encoding, model) -> Path:
        from nasx.train.checkpoint import save_checkpoint

        return save_checkpoint({"encoding": str(encoding), "neck": model.neck.state_dict(),
                                "head": model.head.state_dict()}, self.weights_path(encoding))

    def cost(self, encoding, *, latency: bool = True, runtime: str = "torch") -> dict:
        """params and MACs of the whole detector (backbone included) at the cache's input size,
        and its batch-1 latency in milliseconds on this evaluator's device in ``runtime``."""
        from nasx.spaces.detectors import build_backbone

        trunk = build_backbone(self.backbone["encoding"], norm=self.backbone.get("norm", "gn"))
        model = self.build_detector(encoding, backbone=trunk)
        h, w = self.cache.input_size
        out = {"params": count_params(model), "macs": count_detector_macs(model, (h, w)).total}
        if latency:
            image = torch.rand(1, 3, h, w)
            out["latency_ms"] = measure_latency(model, image, device=runtime_device(self.device, runtime), warmup=2,
                                                repeats=10, runtime=runtime).median_ms
        return out


def _coco_from_cache(cache: FeatureCache, indices: Sequence[int], num_classes: int):
    """A pycocotools ground truth of the cache's images ``indices`` (ids = cache indices)."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    images, annotations = [], []
    for i in indices:
        h, w = cache.image_sizes[i]
        images.append({"id": int(i), "height": int(h), "width": int(w)})
        for box, label in zip(cache.boxes[i].tolist(), cache.labels[i].tolist()):
            bw, bh = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": int(i), "category_id": int(label),
                                "bbox": [box[0], box[1], bw, bh], "area": bw * bh, "iscrowd": 0})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": k, "name": str(k)} for k in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt
