"""Checks shared by the COCO and VOC readers: box sanitising with warnings that name the
file and the entry, and image decoding with errors that name the path and the image.

A box outside its image is clipped to it; a box that is empty, inverted or not finite
(after clipping) is dropped. Both are reported once per dataset as an
:class:`AnnotationWarning` listing the first few entries, so a large file with many bad
boxes gives one readable warning per problem, not thousands.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["AnnotationError", "AnnotationWarning", "UnreadableImageError", "BoxReport", "read_image"]

_SHOWN = 5  # entries quoted per warning


class AnnotationError(ValueError):
    """A malformed annotation file or entry; the message names the file and the entry."""


class AnnotationWarning(UserWarning):
    """Boxes were clipped or dropped while reading annotations."""


class UnreadableImageError(OSError):
    """An image file exists but cannot be decoded; the message names the path and the image."""


class BoxReport:
    """Sanitises boxes and collects what was changed, for one warning per kind of problem.

    Args:
        source: what the warnings are about (an annotation file, or a VOC folder).
    """

    def __init__(self, source: str):
        self.source = source
        self.clipped: list[str] = []
        self.dropped: list[str] = []

    def check(self, box, width: float, height: float, entry: str) -> Optional[list]:
        """Return ``box`` (x1, y1, x2, y2 in pixels) clipped to a width x height image, or
        None when nothing of positive size is left; ``entry`` names the box in warnings."""
        x1, y1, x2, y2 = (float(v) for v in box)
        shown = f"{entry} [x1, y1, x2, y2] = [{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            self.dropped.append(f"{shown}: not finite")
            return None
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if cx2 <= cx1 or cy2 <= cy1:
            why = "zero or negative size" if (x2 <= x1 or y2 <= y1) else f"outside its {width:g}x{height:g} image"
            self.dropped.append(f"{shown}: {why}")
            return None
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            self.clipped.append(f"{shown} in a {width:g}x{height:g} image")
        return [cx1, cy1, cx2, cy2]

    def warn(self, stacklevel: int = 3) -> None:
        for items, what in ((self.clipped, "extend outside their image and were clipped to it"),
                            (self.dropped, "have no area inside their image and were dropped")):
            if items:
                more = f"; ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
                warnings.warn(
                    f"{self.source}: {len(items)} box(es) {what}: " + "; ".join(items[:_SHOWN]) + more,
                    AnnotationWarning,
                    stacklevel=stacklevel,
                )


def boxes_array(boxes: list) -> np.ndarray:
    """list of [x1, y1, x2, y2] -> float32 ndarray[K, 4] (also for K = 0)."""
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def read_image(path: Path, entry: str) -> torch.Tensor:
    """Decode an image file to a uint8 Tensor[3, H, W] (RGB).

    Raises:
        FileNotFoundError: the file does not exist (message: ``entry`` and the path).
        UnreadableImageError: it exists but cannot be decoded (truncated, not an image).
    """
    try:
        with Image.open(path) as im:
            pixels = np.array(im.convert("RGB"))  # convert() forces the full decode
    except FileNotFoundError:
        raise FileNotFoundError(f"{entry}: image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImageError(f"{entry}: cannot decode image file {path}: {e}") from e
    # channels first in numpy: a small single-threaded copy (torch's may wake its thread pool)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
