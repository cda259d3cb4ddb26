"""Balanced sampling of foreground / background training examples (anchors of an RPN, RoIs of an
R-CNN head): at most ``num * positive_fraction`` positives, the rest negatives, both drawn at random
without replacement. The same rule as torchvision's ``BalancedPositiveNegativeSampler`` and mmdet's
``RandomSampler``; the draws differ (different random streams)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["balanced_sample"]


def _draw(index: Tensor, count: int, generator: Optional[torch.Generator]) -> Tensor:
    if index.numel() <= count:
        return index
    order = torch.randperm(index.numel(), generator=generator, device="cpu")[:count]
    return index[order.to(index.device)]


def balanced_sample(matched: Tensor, num: int, positive_fraction: float,
                    generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Indices of the sampled positives and negatives.

    Args:
        matched: Tensor[N] int64 as ``nasx.ops.match_anchors`` labels examples: a GT index (>= 0)
            for positives, -1 for negatives, -2 for ignored (never sampled).
        num: examples per image.
        positive_fraction: the largest share of positives; missing positives are made up by
            negatives (torchvision's and mmdet's rule).
        generator: a ``torch.Generator`` on the CPU for reproducible draws.

    Returns:
        (positive indices Tensor[P] int64, negative indices Tensor[Q] int64), P + Q <= num.
    """
    if num < 1 or not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"balanced_sample: need num >= 1 and 0 <= positive_fraction <= 1, got {num}, "
                         f"{positive_fraction}")
    pos = torch.nonzero(matched >= 0).squeeze(1)
    neg = torch.nonzero(matched == -1).squeeze(1)
    pos = _draw(pos, int(num * positive_fraction), generator)
    neg = _draw(neg, num - pos.numel(), generator)
    return pos, neg
