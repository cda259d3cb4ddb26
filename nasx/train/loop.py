"""The training loop: SGD or AdamW + warm-up/cosine, gradient clipping, AMP on CUDA, atomic
checkpoints every N steps with exact resume (same batches, same schedule), a progress bar."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from nasx.progress import Progress
from nasx.train.checkpoint import load_checkpoint, save_checkpoint
from nasx.train.optim import build_optimizer, warmup_cosine

__all__ = ["TrainConfig", "DivergenceError", "train", "move_batch"]


@dataclass
class TrainConfig:
    """epochs: passes over the loader (``max_steps`` caps the total if set).
    optimizer: ``"sgd"`` or ``"adamw"``.
    lr, momentum, weight_decay: the optimizer's (no decay on norms, biases, scales; momentum is SGD's).
    warmup_steps, warmup_factor: linear warm-up from ``lr * warmup_factor``; then cosine to 0.
    grad_clip: max global L2 norm of the gradients (None: no clipping).
    amp: float16 autocast + gradient scaling, used only on CUDA.
    checkpoint_every: steps between checkpoints (one is always written at the end).
    loss_weights: multiplier per loss name (missing names weigh 1).
    """

    epochs: int = 12
    max_steps: Optional[int] = None
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    warmup_factor: float = 0.001
    grad_clip: Optional[float] = 10.0
    amp: bool = True
    checkpoint_every: int = 500
    loss_weights: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.epochs < 1 and not self.max_steps:
            raise ValueError(f"TrainConfig: expected epochs >= 1 (or max_steps), got {self.epochs}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"TrainConfig: optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig: expected lr > 0, got {self.lr}")
        if self.checkpoint_every < 1:
            raise ValueError(f"TrainConfig: expected checkpoint_every >= 1, got {self.checkpoint_every}")


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the losses."""


def move_batch(batch, device):
    """(images, image_sizes, targets) of a DetectionBatch on ``device``."""
    images = batch.images.to(device, non_blocking=True)
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
               for t in batch.targets]
    return images, batch.image_sizes, targets


def train(model: nn.Module, loader, config: TrainConfig, *, device="cpu", out_dir=None, resume: bool = True,
          progress: bool = True, meta: Optional[dict] = None,
          on_checkpoint: Optional[Callable[[int], None]] = None,
          on_log: Optional[Callable[[int, dict], None]] = None) -> dict:
    """Train ``model`` (a detector returning a dict of losses) on ``loader`` (from ``build_loader``).

    With ``out_dir``, writes ``last.pt`` (model, optimizer, scaler, step, config, ``meta``)
    every ``checkpoint_every`` steps and at the end, and appends one JSON line of losses per
    logged step to ``train_log.jsonl``; with ``resume`` an existing ``last.pt`` is continued
    from its step with the same batches it would have seen. Returns
    ``{"steps", "seconds", "images_per_s", "final_losses"}``. ``on_checkpoint(step)`` is called
    after each checkpoint, ``on_log(step, {"loss", <each loss>, "lr"})`` every 10 steps (e.g.
    TensorBoard).
    """
    device = torch.device(device)
    model.to(device)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError("train: the loader yields no batches (empty dataset, or drop_last with too few images)")
    total = config.epochs * steps_per_epoch
    if config.max_steps:
        total = min(total, config.max_steps) if config.epochs >= 1 else config.max_steps
    optimizer = build_optimizer(model, config.optimizer, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    use_amp = bool(config.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "last.pt" if out is not None else None

    step = 0
    if out is not None and resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, required_keys=("model", "optimizer", "step"))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state and use_amp:
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])

    def checkpoint():
        if out is None:
            return
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scaler": scaler.state_dict(), "step": step, "total_steps": total,
                         "config": asdict(config), "meta": meta or {}}, ckpt_path)
        if on_checkpoint is not None:
            on_checkpoint(step)

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    log = open(out / "train_log.jsonl", "a") if out is not None else None
    model.train()
    bar = Progress(total, "train", unit="step", initial=step, enabled=progress)
    t0, images_seen, last = time.perf_counter(), 0, {}
    try:
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            loader.sampler.set_epoch(epoch, start=offset * loader.batch_size)
            for batch in loader:
                if step >= total:
                    break
                images, sizes, targets = move_batch(batch, device)
                for g in optimizer.param_groups:
                    g["lr"] = config.lr * warmup_cosine(step, total, config.warmup_steps, config.warmup_factor)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    losses = model(images, sizes, targets)
                loss = sum(config.loss_weights.get(k, 1.0) * v for k, v in losses.items())
                if not torch.isfinite(loss):
                    vals = {k: float(v) for k, v in losses.items()}
                    raise DivergenceError(f"train: loss is {float(loss)} at step {step} (losses {vals}); "
                                          f"try a lower lr (now {config.lr}) or more warm-up steps")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                images_seen += images.shape[0]
                last = {k: float(v.detach()) for k, v in losses.items()}
                rate = images_seen / max(time.perf_counter() - t0, 1e-9)
                bar.update(1, loss=float(loss.detach()), lr=optimizer.param_groups[0]["lr"], img_s=rate)
                if step % 10 == 0 or step == total:
                    logged = {"loss": float(loss.detach()), **last, "lr": optimizer.param_groups[0]["lr"]}
                    if log is not None:
                        log.write(json.dumps({"step": step, **logged}) + "\n")
                        log.flush()
                    if on_log is not None:
                        on_log(step, logged)
                if step % config.checkpoint_every == 0 and step < total:
                    checkpoint()
        checkpoint()
    finally:
        bar.close()
        if log is not None:
            log.close()
    seconds = time.perf_counter() - t0
    return {"steps": step, "seconds": seconds, "images_per_s": images_seen / seconds if seconds > 0 else math.nan,
            "final_losses": last}
