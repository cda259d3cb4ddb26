"""SGD (or AdamW) with the usual detection recipe: no weight decay on norms, biases and scalar scales;
linear warm-up then cosine decay, as a per-step learning-rate factor."""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["OPTIMIZER_DEFAULTS", "optimizer_settings", "param_groups", "build_optimizer", "build_sgd",
           "warmup_cosine"]

# Learning rate and weight decay per optimizer, used wherever a caller does not choose its own:
# SGD at the detection papers' values; AdamW at what trains a small detector from scratch.
OPTIMIZER_DEFAULTS = {"adamw": {"lr": 2e-3, "weight_decay": 0.05}, "sgd": {"lr": 0.02, "weight_decay": 1e-4}}

# For command-line help: "0.002 AdamW, 0.02 SGD".
LR_DEFAULTS_TEXT = ", ".join(f"{d['lr']:g} {'AdamW' if k == 'adamw' else 'SGD'}" for k, d in OPTIMIZER_DEFAULTS.items())

def optimizer_settings(name: str, lr=None, weight_decay=None) -> dict:
    """``{"lr", "weight_decay"}`` of optimizer ``name``: the given values, or its defaults for
    those that are None. An unknown name is a ``ValueError`` listing the known ones."""
    if name not in OPTIMIZER_DEFAULTS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_DEFAULTS)}, got {name!r}")
    given = {"lr": lr, "weight_decay": weight_decay}
    return {k: v if given[k] is None else given[k] for k, v in OPTIMIZER_DEFAULTS[name].items()}


_NO_DECAY_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.SyncBatchNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights of convs/linears (decayed) and everything else (norm affine, biases,
    0-d and 1-d parameters such as FCOS's per-level scales), not decayed."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, _NO_DECAY_TYPES) or name == "bias" or p.dim() <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_sgd(model: nn.Module, *, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4) -> torch.optim.SGD:
    if lr <= 0:
        raise ValueError(f"build_sgd: expected lr > 0, got {lr}")
    return torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum)


def build_optimizer(model: nn.Module, name: str, *, lr: float, momentum: float = 0.9,
                    weight_decay: float = 1e-4) -> torch.optim.Optimizer:
    """``"sgd"`` (momentum, the detection recipe) or ``"adamw"`` (decoupled decay; it learns a
    small detector from scratch in far fewer steps, which is what a CPU budget allows)."""
    if name == "sgd":
        return build_sgd(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        if lr <= 0:
            raise ValueError(f"build_optimizer: expected lr > 0, got {lr}")
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    raise ValueError(f"build_optimizer: optimizer must be 'sgd' or 'adamw', got {name!r}")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, warmup_factor: float = 0.001,
                  final_factor: float = 0.0) -> float:
    """Learning-rate factor at ``step`` (0-based): linear from ``warmup_factor`` to 1 over
    ``warmup_steps``, then a half cosine from 1 down to ``final_factor`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_factor + (1 - warmup_factor) * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / span, 1.0)
    return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * t))
