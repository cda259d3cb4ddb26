"""Resumable "train this detector N steps here", the one way every pipeline trains on images.

``train_steps(model, dataset, steps=N, out_dir=D, recipe=R)`` trains with :func:`nasx.train.train`
(its checkpoints in ``D/last.pt``, exact mid-run resume) and, once finished, writes ``D/done.json``
with what it measured; called again it only loads the finished weights. ``s_per_step`` is
measured over the steps the finishing call ran (NaN if it ran none), so a pipeline can plan
what is left of its budget from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from nasx.atomic import read_json, write_json
from nasx.train.optim import optimizer_settings

__all__ = ["TrainRecipe", "train_steps"]


@dataclass
class TrainRecipe:
    """How a pipeline trains detectors on images. ``lr`` / ``weight_decay`` None: the
    optimizer's defaults (:data:`nasx.train.OPTIMIZER_DEFAULTS`). ``warmup``: linear warm-up
    over this share of the steps, at most 100 steps. ``loader_workers``: data-loading processes."""

    batch_size: int = 16
    optimizer: str = "adamw"
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    seed: int = 0
    device: str = "cpu"
    warmup: float = 0.2
    loader_workers: int = 1
    progress: bool = True

    def __post_init__(self):
        settings = optimizer_settings(self.optimizer, self.lr, self.weight_decay)
        self.lr, self.weight_decay = settings["lr"], settings["weight_decay"]


def train_steps(model, dataset, *, steps: int, out_dir, recipe: TrainRecipe, meta: Optional[dict] = None,
                on_checkpoint=None, on_log=None) -> dict:
    """Train ``model`` ``steps`` steps on ``dataset`` in ``out_dir`` (resumable); returns the
    loop's summary plus ``s_per_step``. ``meta`` goes into the checkpoints (``meta["build"]``
    is how ``nasx eval`` rebuilds the model). ``on_checkpoint(step)``: e.g. the run's clock;
    ``on_log(step, losses)``: e.g. TensorBoard (see :func:`nasx.train.train`)."""
    from nasx.data import build_loader
    from nasx.train import TrainConfig, train
    from nasx.train.checkpoint import load_checkpoint

    out_dir = Path(out_dir)
    done = out_dir / "done.json"
    if done.exists():
        model.load_state_dict(load_checkpoint(out_dir / "last.pt")["model"])
        return read_json(done)
    torch.manual_seed(recipe.seed)
    loader = build_loader(dataset, recipe.batch_size, shuffle=True, workers=recipe.loader_workers, seed=recipe.seed,
                          drop_last=len(dataset) >= recipe.batch_size)
    config = TrainConfig(epochs=10 ** 6, max_steps=steps, optimizer=recipe.optimizer, lr=recipe.lr,
                         weight_decay=recipe.weight_decay, warmup_steps=min(100, int(steps * recipe.warmup)),
                         checkpoint_every=max(50, steps // 4))
    before = 0
    if (out_dir / "last.pt").exists():
        before = int(load_checkpoint(out_dir / "last.pt", required_keys=("step",))["step"])
    result = train(model, loader, config, device=recipe.device, out_dir=out_dir, meta=meta, progress=recipe.progress,
                   on_checkpoint=on_checkpoint, on_log=on_log)
    ran = result["steps"] - before
    result["s_per_step"] = result["seconds"] / ran if ran > 0 else math.nan
    write_json(done, result)
    return result
