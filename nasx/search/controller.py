"""An LSTM controller that samples a sequence of discrete decisions (Zoph & Le 2017; NAS-FCOS §3.3).

One LSTM cell is stepped once per decision. Its input is a learned start vector at the first
step and then the embedding of the previous decision's choice (one embedding table per
decision, so the same index means different things at different steps); a linear layer per
decision turns the hidden state into logits. Choices at or beyond a decision's valid count are
masked out -- pool-id decisions see only the ids the pool holds at that step.

Logits: ``logits / temperature``, then ``tanh_constant * tanh(.)`` when ``tanh_constant`` is set
(bounded logits keep the policy from collapsing early, as in ENAS).

Letters: N sequences, D decisions, A the most choices of any decision.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LSTMController"]


class LSTMController(nn.Module):
    """Args:
        decision_sizes: the number of outputs of each decision (its most choices).
        valid_counts: how many of them are valid at each step (default: all); choices
            ``valid .. size - 1`` are never sampled.
        hidden: LSTM width (also the embedding width).
        temperature: logits are divided by it (> 1 flattens the policy).
        tanh_constant: if set, logits become ``tanh_constant * tanh(logits)``.
    """

    def __init__(self, decision_sizes: Sequence[int], *, valid_counts: Optional[Sequence[int]] = None,
                 hidden: int = 64, temperature: float = 1.0, tanh_constant: Optional[float] = None):
        super().__init__()
        sizes = [int(s) for s in decision_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"LSTMController: decision_sizes must be a non-empty list of positive ints, got {sizes}")
        valid = sizes if valid_counts is None else [int(v) for v in valid_counts]
        if len(valid) != len(sizes):
            raise ValueError(f"LSTMController: {len(sizes)} decision_sizes but {len(valid)} valid_counts")
        bad = [i for i, (v, s) in enumerate(zip(valid, sizes)) if not 1 <= v <= s]
        if bad:
            raise ValueError(f"LSTMController: valid_counts must be in 1..decision_size; decisions {bad} are not "
                             f"(sizes {[sizes[i] for i in bad]}, valid {[valid[i] for i in bad]})")
        if temperature <= 0:
            raise ValueError(f"LSTMController: temperature must be > 0, got {temperature}")
        self.decision_sizes, self.valid_counts = sizes, valid
        self.temperature, self.tanh_constant = float(temperature), tanh_constant
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.cell = nn.LSTMCell(hidden, hidden)
        self.embeddings = nn.ModuleList(nn.Embedding(s, hidden) for s in sizes[:-1])   # choice d -> input of d + 1
        self.heads = nn.ModuleList(nn.Linear(hidden, s) for s in sizes)
        widest = max(sizes)
        mask = torch.zeros(len(sizes), widest, dtype=torch.bool)                          # (D, A) True = allowed
        for d, v in enumerate(valid):
            mask[d, :v] = True
        self.register_buffer("mask", mask, persistent=False)
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    @property
    def num_decisions(self) -> int:
        return len(self.decision_sizes)

    def _logits(self, h: Tensor, d: int) -> Tensor:
        logits = self.heads[d](h) / self.temperature                                    # (N, size_d)
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits.masked_fill(~self.mask[d, : logits.shape[1]], float("-inf"))

    def _run(self, n: int, choose) -> tuple[Tensor, Tensor, Tensor]:
        """Step through all decisions for n sequences; ``choose(d, logits)`` -> (N,) choices."""
        hidden = self.start.shape[1]
        h = self.start.new_zeros(n, hidden)
        c = self.start.new_zeros(n, hidden)
        x = self.start.expand(n, hidden)
        choices, log_prob, entropy = [], h.new_zeros(n), h.new_zeros(n)
        for d in range(self.num_decisions):
            h, c = self.cell(x, (h, c))
            logits = self._logits(h, d)
            logp = F.log_softmax(logits, dim=1)                                        # (N, size_d), -inf masked
            choice = choose(d, logits)                                                 # (N,)
            log_prob = log_prob + logp.gather(1, choice[:, None])[:, 0]
            allowed = self.mask[d, : logits.shape[1]]
            entropy = entropy - (logp.exp() * logp.masked_fill(~allowed, 0.0)).sum(1)
            choices.append(choice)
            if d + 1 < self.num_decisions:
                x = self.embeddings[d](choice)
        return torch.stack(choices, dim=1), log_prob, entropy

    @torch.no_grad()
    def sample(self, n: int = 1, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor, Tensor]:
        """Sample n sequences: ``(choices LongTensor[N, D], log_prob Tensor[N], entropy Tensor[N])``,
        without gradients (:meth:`evaluate` recomputes them with gradients for the update)."""
        if n < 1:
            raise ValueError(f"LSTMController.sample: n must be >= 1, got {n}")

        def choose(d, logits):
            return torch.multinomial(F.softmax(logits, dim=1), 1, generator=generator)[:, 0]
        return self._run(n, choose)

    @torch.no_grad()
    def greedy(self) -> Tensor:
        """The most probable choice at every step, LongTensor[D]."""
        return self._run(1, lambda d, logits: logits.argmax(1))[0][0]

    def evaluate(self, choices: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probability and entropy (both Tensor[N], differentiable) of given sequences
        ``choices`` LongTensor[N, D] under the current policy."""
        choices = torch.as_tensor(choices, dtype=torch.long, device=self.start.device)
        if choices.dim() == 1:
            choices = choices[None]
        if choices.dim() != 2 or choices.shape[1] != self.num_decisions:
            raise ValueError(f"LSTMController.evaluate: expected choices of shape [N, {self.num_decisions}], "
                             f"got {list(choices.shape)}")
        limits = torch.tensor(self.valid_counts, device=choices.device)
        bad = (choices < 0) | (choices >= limits)
        if bad.any():
            n, d = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"LSTMController.evaluate: sequence {n}, decision {d}: choice {int(choices[n, d])} "
                             f"is not valid (expected 0..{self.valid_counts[d] - 1})")
        _, log_prob, entropy = self._run(choices.shape[0], lambda d, logits: choices[:, d])
        return log_prob, entropy
