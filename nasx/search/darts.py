"""Differentiable architecture search (DARTS, Liu et al. 2019) as FNA runs it (Fang et al. 2020):
a one-shot trainer, not an ask/tell strategy, so it has its own loop here.

Two data streams (the training set split in halves): **weight steps** on one, each with a single
path sampled through the super network (uniformly during the warm-up, then by softmax(α / T)) and
only the network's weights updated; **architecture steps** on the other, every op mixed by
softmax(α / T) and only α updated, on L_det + λ · log_τ(expected MACs). After ``warmup`` weight
steps, one architecture step follows every ``arch_every`` weight steps (FNA's SSDLite: 1 : 5).

The super network is any module with ``arch_parameters()``, ``weight_parameters()``,
``op_weights()``, ``sample_path(generator, uniform)``, ``set_path(path | None)``, ``derive()`` and
``expected_macs()`` (:class:`~nasx.models.backbones.mbconv_supernet.MBConvSupernet`); the loss is
a callable ``batch -> {name: loss}``, so this loop knows nothing of detectors or data formats.

Resumable: ``state_path`` holds the weights, α, both optimisers, both streams' positions, the
step counters and α's history, written atomically every ``checkpoint_every`` weight steps; a
killed search resumes from there with the same batches and the same sampled paths.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from nasx.atomic import save_torch
from nasx.progress import Progress
from nasx.train.checkpoint import load_checkpoint
from nasx.train.optim import param_groups, warmup_cosine

__all__ = ["DartsConfig", "DartsSearch", "BatchStream"]


@dataclass
class DartsConfig:
    """steps: weight steps in all (architecture steps come on top). warmup: weight steps with uniform
    path sampling and no architecture step. arch_every: weight steps per architecture step.
    lr / weight_decay: the weights' AdamW. arch_lr, arch_betas, arch_weight_decay: α's Adam (FNA:
    3e-4, (0.5, 0.999), 1e-3; a short search needs a larger rate to move α at all). cost_lambda,
    cost_base: λ and τ of λ · log_τ(MACs) (seed 003: 0.2, 10; 0 switches the cost term off).
    grad_clip: max gradient norm of the weights and of α. checkpoint_every: weight steps.
    min_arch_steps: architecture steps taken even past the budget (a search stopped before α moved
    would derive its random initialisation)."""

    steps: int = 500
    warmup: int = 150
    arch_every: int = 5
    lr: float = 2e-3
    weight_decay: float = 0.05
    arch_lr: float = 3e-3
    arch_betas: tuple = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    cost_lambda: float = 0.2
    cost_base: float = 10.0
    grad_clip: float = 10.0
    checkpoint_every: int = 50
    min_arch_steps: int = 20
    seed: int = 0

    def __post_init__(self):
        self.arch_betas = tuple(self.arch_betas)
        if self.min_arch_steps < 0:
            raise ValueError(f"DartsConfig: min_arch_steps must be >= 0, got {self.min_arch_steps}")
        if self.steps < 1 or self.arch_every < 1 or self.checkpoint_every < 1:
            raise ValueError(f"DartsConfig: steps, arch_every and checkpoint_every must be >= 1, got {self.steps}, "
                             f"{self.arch_every} and {self.checkpoint_every}")
        if not 0 <= self.warmup <= self.steps:
            raise ValueError(f"DartsConfig: warmup must be in [0, steps={self.steps}], got {self.warmup}")
        if self.lr <= 0 or self.arch_lr <= 0:
            raise ValueError(f"DartsConfig: lr and arch_lr must be > 0, got {self.lr} and {self.arch_lr}")
        if self.cost_lambda < 0 or self.cost_base <= 1:
            raise ValueError(f"DartsConfig: expected cost_lambda >= 0 and cost_base > 1, got {self.cost_lambda} and "
                             f"{self.cost_base}")


class BatchStream:
    """Endless batches from a loader whose sampler has ``set_epoch(epoch, start)`` (nasx's
    :func:`~nasx.data.build_loader`), resumable at any batch: ``position`` counts the batches drawn."""

    def __init__(self, loader, position: int = 0):
        if len(loader) == 0:
            raise ValueError("BatchStream: the loader yields no batches (too few images for one batch?)")
        self.loader, self.position, self._it = loader, int(position), None

    def next(self):
        while True:
            if self._it is None:
                epoch, offset = divmod(self.position, len(self.loader))
                self.loader.sampler.set_epoch(epoch, start=offset * self.loader.batch_size)
                self._it = iter(self.loader)
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                continue
            self.position += 1
            return batch


class DartsSearch:
    """Args:
        model: the module trained (e.g. SSDLite on the super network); its state is checkpointed.
        supernet: the super network inside it (see the module docstring).
        loss: ``batch -> {name: Tensor}`` of ``model`` in training mode.
        weight_loader, arch_loader: the two halves of the training set.
        config: :class:`DartsConfig`. state_path: the checkpoint (resumed if present).

    ``run(time_left=None, progress=True)`` returns ``{"choices", "weight_steps", "arch_steps",
    "seconds", "history", "final_expected_macs", "stopped"}``; ``history`` has one entry per
    architecture step (and one at the start of the architecture phase): the step, the op weights of
    every layer, the expected MACs and the detection loss.
    """

    def __init__(self, model: nn.Module, supernet: nn.Module, loss: Callable[[object], dict], *, weight_loader,
                 arch_loader, config: DartsConfig, state_path, device: str = "cpu"):
        self.model, self.supernet, self.loss, self.config = model, supernet, loss, config
        self.device = torch.device(device)
        self.model.to(self.device)
        self.state_path = Path(state_path)
        arch_ids = {id(p) for p in supernet.arch_parameters()}
        # The detection recipe's decay / no-decay groups, without α (Adam below owns it).
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in arch_ids]}
                  for g in param_groups(model, config.weight_decay)]
        self.w_opt = torch.optim.AdamW(groups, lr=config.lr)
        self._weights = [p for g in groups for p in g["params"]]
        self.a_opt = torch.optim.Adam(supernet.arch_parameters(), lr=config.arch_lr, betas=config.arch_betas,
                                      weight_decay=config.arch_weight_decay)
        self.w_stream, self.a_stream = BatchStream(weight_loader), BatchStream(arch_loader)
        self.w_step = self.a_step = 0
        self.history: list[dict] = []
        self.seconds = 0.0
        if self.state_path.exists():
            self._load()

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                "w_step": self.w_step, "a_step": self.a_step, "w_pos": self.w_stream.position,
                "a_pos": self.a_stream.position, "history": self.history, "seconds": self.seconds,
                "config": asdict(self.config)}

    def _load(self) -> None:
        state = load_checkpoint(self.state_path, required_keys=("model", "w_opt", "a_opt", "w_step", "config"))
        if state["config"] != asdict(self.config):
            raise ValueError(f"{self.state_path} was written by a search with other settings ({state['config']}); "
                             f"resume it with the same settings or delete it")
        self.model.load_state_dict(state["model"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.w_step, self.a_step = int(state["w_step"]), int(state["a_step"])
        self.w_stream.position, self.a_stream.position = int(state["w_pos"]), int(state["a_pos"])
        self.history, self.seconds = list(state["history"]), float(state["seconds"])

    def checkpoint(self) -> None:
        save_torch(self.state_dict(), self.state_path)

    # -- steps ---------------------------------------------------------------------------------
    def cost_term(self) -> torch.Tensor:
        """λ · log_τ(expected MACs): its gradient in α does not depend on the MACs' unit."""
        cfg = self.config
        return cfg.cost_lambda * torch.log(self.supernet.expected_macs()) / math.log(cfg.cost_base)

    def weight_step(self) -> dict:
        cfg = self.config
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.w_step)
        self.supernet.sample_path(g, uniform=self.w_step < cfg.warmup)
        for group in self.w_opt.param_groups:
            group["lr"] = cfg.lr * warmup_cosine(self.w_step, cfg.steps, min(100, cfg.steps // 5), 0.001)
        losses = self.loss(self.w_stream.next())
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(f"DARTS weight step {self.w_step}: loss is {float(total)} "
                                     f"({ {k: float(v) for k, v in losses.items()} }); try a lower lr (now {cfg.lr})")
        self.w_opt.zero_grad(set_to_none=True)
        total.backward()
        for a in self.supernet.arch_parameters():
            a.grad = None                                   # α moves only in architecture steps
        nn.utils.clip_grad_norm_(self._weights, cfg.grad_clip)
        self.w_opt.step()
        self.w_step += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def arch_step(self) -> dict:
        cfg = self.config
        self.supernet.set_path(None)
        losses = self.loss(self.a_stream.next())
        det = sum(losses.values())
        cost = self.cost_term() if cfg.cost_lambda > 0 else det.new_zeros(())
        alphas = self.supernet.arch_parameters()
        grads = torch.autograd.grad(det + cost.to(det.dtype), alphas)   # no weight gradients computed
        for a, g in zip(alphas, grads):
            a.grad = g
        nn.utils.clip_grad_norm_(alphas, cfg.grad_clip)
        self.a_opt.step()
        self.a_opt.zero_grad(set_to_none=True)
        self.a_step += 1
        return {"det": float(det.detach()), "cost": float(cost.detach())}

    def _record(self, det_loss: float) -> None:
        with torch.no_grad():
            self.history.append({"weight_step": self.w_step, "arch_step": self.a_step,
                                 "op_weights": [[round(float(v), 5) for v in w] for w in self.supernet.op_weights()],
                                 "expected_macs": float(self.supernet.expected_macs()), "det_loss": det_loss})

    # -- loop ----------------------------------------------------------------------------------
    def run(self, *, time_left: Optional[Callable[[], float]] = None, progress: bool = True,
            on_checkpoint: Optional[Callable[[int], None]] = None) -> dict:
        """Alternate weight and architecture steps until ``config.steps`` weight steps (or until
        ``time_left()`` drops to 0 after the warm-up and ``min_arch_steps``: the search then ends early,
        ``stopped="budget"``)."""
        cfg = self.config
        self.model.train()
        bar = Progress(cfg.steps, "DARTS", unit="step", initial=self.w_step, enabled=progress)
        stopped, start = "steps", time.perf_counter() - self.seconds
        try:
            while self.w_step < cfg.steps:
                if (time_left is not None and self.w_step >= cfg.warmup and self.a_step >= cfg.min_arch_steps
                        and time_left() <= 0):
                    stopped = "budget"
                    break
                stats = self.weight_step()
                arch = {}
                if self.w_step >= cfg.warmup and (self.w_step - cfg.warmup) % cfg.arch_every == 0:
                    if not self.history:
                        self._record(math.nan)
                    arch = self.arch_step()
                    self._record(arch["det"])
                bar.update(1, loss=sum(stats.values()), **({"macs_M": self.history[-1]["expected_macs"] / 1e6}
                                                           if arch else {}))
                if self.w_step % cfg.checkpoint_every == 0 or self.w_step == cfg.steps:
                    self.seconds = time.perf_counter() - start
                    self.checkpoint()
                    if on_checkpoint is not None:
                        on_checkpoint(self.w_step)
        finally:
            bar.close()
        self.seconds = time.perf_counter() - start
        self.checkpoint()
        return {"choices": self.supernet.derive(), "weight_steps": self.w_step, "arch_steps": self.a_step,
                "seconds": self.seconds, "history": self.history, "stopped": stopped,
                "final_expected_macs": float(self.supernet.expected_macs().detach())}

