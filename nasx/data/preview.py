"""A contact sheet of dataset samples with their boxes drawn: the quickest sanity check."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["contact_sheet"]

_PALETTE = [(255, 64, 64), (64, 255, 64), (64, 160, 255), (255, 220, 0),
            (255, 64, 255), (0, 255, 255), (255, 140, 0), (255, 255, 255)]


def contact_sheet(
    dataset,
    indices: Optional[Sequence[int]] = None,
    *,
    cols: int = 4,
    scale: int = 3,
    class_names: Optional[Sequence[str]] = None,
) -> Image.Image:
    """Draw samples ``indices`` (default: the first 16) of a dataset of uint8
    ``(Tensor[3, H, W], target)`` samples in a grid, each enlarged ``scale`` times, with every
    box outlined in its class colour and labelled with its class name."""
    indices = list(range(min(16, len(dataset)))) if indices is None else list(indices)
    if not indices:
        raise ValueError("contact_sheet: expected at least one sample to draw, got none")
    names = class_names or getattr(dataset, "class_names", None)
    tiles = []
    for i in indices:
        image, target = dataset[i]
        tile = Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy()))
        tile = tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            colour = _PALETTE[label % len(_PALETTE)]
            draw.rectangle([v * scale for v in box], outline=colour, width=2)
            text = names[label] if names else str(label)
            draw.text((box[0] * scale + 2, box[1] * scale + 1), text, fill=colour)
        tiles.append(tile)
    tw, th = max(t.width for t in tiles), max(t.height for t in tiles)
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * (tw + 4), rows * (th + 4)), (24, 24, 24))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % cols) * (tw + 4) + 2, (k // cols) * (th + 4) + 2))
    return sheet
