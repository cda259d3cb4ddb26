"""An image classifier on a backbone: global average pooling of its last map, dropout, a linear
layer (MobileNetV2's classifier). What network adaptation pre-trains its seed as."""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Classifier"]


class Classifier(nn.Module):
    """Args:
        backbone: returns a dict of maps; the one named ``feature`` is classified.
        channels: that map's channels. num_classes: K. dropout: before the linear layer (0.2).

    ``forward(images: Tensor[B, 3, H, W]) -> logits Tensor[B, K]``.
    """

    def __init__(self, *, backbone: nn.Module, feature: str, channels: int, num_classes: int, dropout: float = 0.2):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"Classifier: num_classes must be >= 1, got {num_classes}")
        self.backbone, self.feature = backbone, feature
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, images: Tensor) -> Tensor:
        x = self.backbone(images)[self.feature].mean(dim=(2, 3))   # (B, C)
        return self.fc(self.dropout(x))
