"""The box head of an R-CNN stage: two fully connected layers on the pooled RoI features
("2FC", Lin et al. 2017), and the predictor of class logits and box deltas.

Letters: R RoIs, C channels, S pooled size, K classes (the background is one more, index 0).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BoxPredictor", "TwoFCHead"]


class TwoFCHead(nn.Module):
    """Flatten, FC + ReLU, FC + ReLU: Tensor[R, C, S, S] -> Tensor[R, fc_channels].

    1024 wide in Faster R-CNN with FPN, Cascade R-CNN and SM-NAS; PyTorch's default
    initialisation of ``nn.Linear``, as torchvision.
    """

    def __init__(self, *, in_channels: int, roi_size: int = 7, fc_channels: int = 1024):
        super().__init__()
        self.out_channels = fc_channels
        self.fc6 = nn.Linear(in_channels * roi_size * roi_size, fc_channels)
        self.fc7 = nn.Linear(fc_channels, fc_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(start_dim=1)))))


class BoxPredictor(nn.Module):
    """Class logits Tensor[R, K + 1] (background first) and box deltas: Tensor[R, (K + 1) * 4], one
    box per class, or Tensor[R, 4] with ``class_agnostic`` (Cascade R-CNN)."""

    def __init__(self, *, in_channels: int, num_classes: int, class_agnostic: bool = False):
        super().__init__()
        self.num_classes, self.class_agnostic = num_classes, class_agnostic
        self.cls_score = nn.Linear(in_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(in_channels, 4 if class_agnostic else (num_classes + 1) * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)
