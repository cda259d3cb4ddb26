"""Proximal policy optimisation (Schulman et al. 2017) of a controller, as NAS-FCOS trains its
LSTM controller (§3.3).

Per update: advantage = reward - baseline, the baseline being an exponential moving average of
past rewards (initialised to the first batch's mean, and moved after the advantage is taken);
then ``epochs`` gradient steps on the clipped surrogate
``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A)) - entropy_coef * mean(entropy)`` with
``r = exp(log_prob - old_log_prob)``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from nasx.search.controller import LSTMController

__all__ = ["PPO"]


class PPO:
    """Args:
        controller: the policy; needs ``evaluate(choices) -> (log_prob, entropy)``.
        lr: Adam learning rate.
        clip: eps of the clipped ratio.
        entropy_coef: weight of the entropy bonus.
        baseline_decay: the moving average's decay.
        epochs: gradient steps per :meth:`update`.
        max_grad_norm: clip the gradient norm to this (None: no clipping).
    """

    def __init__(self, controller: LSTMController, *, lr: float = 3.5e-4, clip: float = 0.2,
                 entropy_coef: float = 1e-4, baseline_decay: float = 0.95, epochs: int = 4,
                 max_grad_norm: Optional[float] = 5.0):
        if not 0 <= baseline_decay < 1:
            raise ValueError(f"PPO: baseline_decay must be in [0, 1), got {baseline_decay}")
        if clip <= 0 or epochs < 1:
            raise ValueError(f"PPO: clip must be > 0 and epochs >= 1, got clip={clip}, epochs={epochs}")
        self.controller = controller
        self.clip, self.entropy_coef, self.baseline_decay = float(clip), float(entropy_coef), float(baseline_decay)
        self.epochs, self.max_grad_norm = int(epochs), max_grad_norm
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=lr)
        self.baseline: Optional[float] = None
        self.updates = 0

    def update(self, choices: Tensor, old_log_prob: Tensor, rewards) -> dict:
        """One PPO update from sampled ``choices`` [N, D], their log-probabilities at sampling
        time ``old_log_prob`` [N] and their ``rewards`` [N]. Returns statistics (floats)."""
        device = self.controller.start.device
        old_log_prob = torch.as_tensor(old_log_prob, dtype=torch.float32, device=device).detach().reshape(-1)
        rewards = torch.as_tensor(rewards, dtype=torch.float32, device=device).reshape(-1)
        if rewards.numel() != old_log_prob.numel() or len(choices) != rewards.numel():
            raise ValueError(f"PPO.update: {len(choices)} choices, {old_log_prob.numel()} old log-probs and "
                             f"{rewards.numel()} rewards; expected one of each per sample")
        if not torch.isfinite(rewards).all():
            raise ValueError(f"PPO.update: rewards must be finite, got {rewards.tolist()}")
        mean_reward = float(rewards.mean())
        if self.baseline is None:
            self.baseline = mean_reward
        advantage = rewards - self.baseline                                            # (N,)
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * mean_reward

        for _ in range(self.epochs):
            log_prob, entropy = self.controller.evaluate(choices)
            ratio = torch.exp(log_prob - old_log_prob)
            surrogate = torch.min(ratio * advantage, ratio.clamp(1 - self.clip, 1 + self.clip) * advantage)
            loss = -surrogate.mean() - self.entropy_coef * entropy.mean()
            self.optimizer.zero_grad()
            loss.backward()
            if self.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.controller.parameters(), self.max_grad_norm)
            self.optimizer.step()
        self.updates += 1
        with torch.no_grad():
            log_prob, entropy = self.controller.evaluate(choices)
            ratio = torch.exp(log_prob - old_log_prob)
        return {"loss": float(loss.detach()), "reward_mean": mean_reward, "baseline": self.baseline,
                "advantage_mean": float(advantage.mean()), "entropy": float(entropy.mean()),
                "ratio_mean": float(ratio.mean()),
                "clip_fraction": float(((ratio - 1).abs() > self.clip).float().mean()),
                "approx_kl": float((old_log_prob - log_prob).mean())}

    def state_dict(self) -> dict:
        """Everything to resume: the controller, the optimiser and the baseline."""
        return {"controller": self.controller.state_dict(), "optimizer": self.optimizer.state_dict(),
                "baseline": self.baseline, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        keys = {"controller", "optimizer", "baseline", "updates"}
        if not isinstance(state, dict) or not keys <= set(state):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"PPO.load_state_dict: expected a dict with keys {sorted(keys)}, got {got}")
        baseline = state["baseline"]
        if baseline is not None and not math.isfinite(float(baseline)):
            raise ValueError(f"PPO.load_state_dict: baseline must be finite or None, got {baseline}")
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = None if baseline is None else float(baseline)
        self.updates = int(state["updates"])
