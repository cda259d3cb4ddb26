"""Training and scoring an image classifier (a seed network for adaptation): AdamW with warm-up
and cosine decay, label-smoothed cross-entropy, atomic checkpoints with exact resume."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nasx.progress import Progress
from nasx.train.checkpoint import load_checkpoint, save_checkpoint
from nasx.train.optim import build_optimizer, warmup_cosine

__all__ = ["evaluate_classifier", "train_classifier"]


def train_classifier(model: nn.Module, dataset, *, steps: int, batch_size: int = 64, lr: float = 2e-3,
                     weight_decay: float = 0.05, label_smoothing: float = 0.1, device: str = "cpu", seed: int = 0,
                     out_dir=None, checkpoint_every: int = 100, progress: bool = True) -> dict:
    """Train ``model`` (images -> logits) ``steps`` steps on ``dataset`` of ``(image, label)``.

    With ``out_dir``: ``last.pt`` every ``checkpoint_every`` steps and at the end, continued from its
    step (same batches) when present; ``train_log.jsonl`` one line per 10 steps. Returns
    ``{"steps", "seconds", "final_loss"}`` (seconds of this call)."""
    from nasx.data import build_loader

    if steps < 1 or batch_size < 1:
        raise ValueError(f"train_classifier: expected steps and batch_size >= 1, got {steps} and {batch_size}")
    device = torch.device(device)
    model.to(device)
    loader = build_loader(dataset, batch_size, shuffle=True, seed=seed, drop_last=len(dataset) >= batch_size,
                          collate_fn=torch.utils.data.default_collate)
    optimizer = build_optimizer(model, "adamw", lr=lr, weight_decay=weight_decay)
    out = Path(out_dir) if out_dir is not None else None
    step = 0
    if out is not None and (out / "last.pt").exists():
        state = load_checkpoint(out / "last.pt", required_keys=("model", "optimizer", "step"))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    def checkpoint():
        if out is not None:
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, out / "last.pt")

    log = open(out / "train_log.jsonl", "a") if out is not None else None
    bar = Progress(steps, "classifier", unit="step", initial=step, enabled=progress)
    model.train()
    t0, loss_value = time.perf_counter(), math.nan
    try:
        while step < steps:
            epoch, offset = divmod(step, len(loader))
            loader.sampler.set_epoch(epoch, start=offset * batch_size)
            for images, labels in loader:
                if step >= steps:
                    break
                for g in optimizer.param_groups:
                    g["lr"] = lr * warmup_cosine(step, steps, min(100, steps // 10), 0.01)
                logits = model(images.to(device))
                loss = F.cross_entropy(logits, labels.to(device), label_smoothing=label_smoothing)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"train_classifier: loss is {float(loss)} at step {step}; try a lower "
                                             f"lr (now {lr})")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                optimizer.step()
                step += 1
                loss_value = float(loss.detach())
                bar.update(1, loss=loss_value)
                if log is not None and step % 10 == 0:
                    log.write(json.dumps({"step": step, "loss": loss_value}) + "\n")
                    log.flush()
                if step % checkpoint_every == 0:
                    checkpoint()
        checkpoint()
    finally:
        bar.close()
        if log is not None:
            log.close()
    return {"steps": step, "seconds": time.perf_counter() - t0, "final_loss": loss_value}


@torch.no_grad()
def evaluate_classifier(model: nn.Module, dataset, *, batch_size: int = 256, device: str = "cpu") -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` of ``(image, label)``."""
    from nasx.data import build_loader

    loader = build_loader(dataset, batch_size, collate_fn=torch.utils.data.default_collate)
    was_training = model.training
    model.eval().to(device)
    correct = 0
    try:
        for images, labels in loader:
            correct += int((model(images.to(device)).argmax(1).cpu() == labels).sum())
    finally:
        model.train(was_training)
    return correct / max(len(dataset), 1)
