"""The embedded default dataset: procedurally drawn multi-class detection images in COCO format.

Two class sets (``SynthConfig.classes``):

- ``"shapes"`` (the default): 4 classes, one per *shape* (disc, square, triangle, cross), each
  drawn with a random fill (stripes, checker, dots or solid) in random colours, so neither
  colour nor texture tells a class — the silhouette does, under rotation, aspect jitter and
  occlusion. Unannotated **decoys** are rings and stars, whose outlines a detector must not
  confuse with discs and crosses.
- ``"shape_pattern"``: 8 classes, each a shape filled with a *pattern*. Each shape carries two
  of the three patterns and each pattern appears on several shapes, and the four remaining
  combinations (plus solid-filled shapes) are the decoys: a detector has to recognise shape
  *and* pattern together. Much harder: a small FCOS trained from scratch needs far longer than
  the demo's budget to tell these apart.

On top of that come textured
backgrounds (gradients, value noise, stripes), unannotated strokes and rings, rotation,
aspect jitter, shading, pixel noise, blur, JPEG compression, and objects from a few percent
to about half the image side (log-uniform, so every octave is equally populated).

Occlusion rule. Items (objects and decoys) are stacked in a random drawing order. Going
from the top of the stack down, each object is placed where at least ``min_visible`` of its
own pixels stay visible (inside the image and not covered by anything above it); after
``placement_tries`` failed positions it is **not drawn at all**. So every drawn object is
annotated, and an annotation's ``bbox``, ``area`` and ``segmentation`` (RLE) describe its
*visible* pixels, as in COCO; an extra ``visible`` key records the visible share. Decoys are never annotated and may be covered freely.

Determinism: image ``i`` of a split is drawn from ``SeedSequence([seed, split, i])`` alone,
so the same seed gives byte-identical images and JSON for any number of workers.

Difficulty knobs live in :class:`SynthConfig`. The target is that a small FCOS trained from
scratch for the demo's budget lands between 0.3 and 0.7 COCO mAP on ``val``. With the defaults
(clutter, decoys, occlusion and textured backgrounds kept), FCOS with ``basicblock_16_1-21-21-21``
reaches 0.397 mAP in 11.6 CPU minutes (the README's Data section has the command and the
calibration runs).
"""
from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageFilter
from pycocotools import mask as mask_utils

from nasx.atomic import write_text

__all__ = ["SynthConfig", "CLASSES", "DECOYS", "SHAPE_CLASSES", "SHAPE_DECOYS", "categories", "render_image",
           "write_synth_dataset"]

# (name, shape, pattern). Category ids are 1 + the position in this list.
CLASSES = (
    ("striped_disc", "disc", "stripes"),
    ("checkered_disc", "disc", "checker"),
    ("checkered_square", "square", "checker"),
    ("dotted_square", "square", "dots"),
    ("dotted_triangle", "triangle", "dots"),
    ("striped_triangle", "triangle", "stripes"),
    ("striped_cross", "cross", "stripes"),
    ("checkered_cross", "cross", "checker"),
)
SHAPES = ("disc", "square", "triangle", "cross")
PATTERNS = ("stripes", "checker", "dots")
# Every shape/pattern pair that is not a class, and every shape filled plainly: never annotated.
DECOYS = tuple(
    (s, p) for s in SHAPES for p in PATTERNS + ("solid",) if (s, p) not in {(c[1], c[2]) for c in CLASSES}
)
# The "shapes" class set: a class per shape, any fill; rings and stars are never annotated.
SHAPE_CLASSES = SHAPES
FILLS = PATTERNS + ("solid",)
SHAPE_DECOYS = ("ring", "star")
SPLITS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SynthConfig:
    """What the generator draws. All sizes are relative to the (square) image side.

    size: image side in pixels.
    classes: ``"shapes"`` (4 classes by silhouette) or ``"shape_pattern"`` (8 shape-and-pattern classes).
    min_scale, max_scale: object side as a fraction of ``size``, drawn log-uniformly
        (0.12-0.5 at 128 px: 15 to 64 px, two octaves of object size).
    max_objects: objects per image are uniform in 1..max_objects before the occlusion rule.
    empty_prob: share of images with no objects at all (decoys and clutter only).
    max_decoys: unannotated decoy shapes per image, uniform in 0..max_decoys.
    max_strokes: unannotated lines and rings under the objects, uniform in 0..max_strokes.
    min_visible: an object must keep this share of its pixels visible to be drawn.
    placement_tries: positions tried before an object that would be hidden is left out.
    max_aspect: width/height of an object is in [1/max_aspect, max_aspect].
    fills: the fills a ``"shapes"`` object or decoy is drawn with, uniformly (any of stripes, checker, dots, solid).
    pattern_cycles: (lo, hi) pattern periods across an object's side.
    min_contrast: least luminance difference between an object's two colours.
    noise_std: std of the Gaussian pixel noise (intensities in [0, 1]).
    max_blur: Gaussian blur radius in pixels is uniform in [0, max_blur] on half the images.
    image_format: "jpg" (quality ``jpeg_quality``) or "png".
    """

    size: int = 128
    classes: str = "shapes"
    min_scale: float = 0.12
    max_scale: float = 0.5
    max_objects: int = 5
    empty_prob: float = 0.03
    max_decoys: int = 1
    max_strokes: int = 2
    min_visible: float = 0.7
    placement_tries: int = 4
    max_aspect: float = 1.4
    fills: tuple = ("stripes", "checker", "dots", "solid")
    pattern_cycles: tuple = (1.5, 3.0)
    min_contrast: float = 0.3
    noise_std: float = 0.02
    max_blur: float = 0.5
    image_format: str = "jpg"
    jpeg_quality: int = 90

    def __post_init__(self):
        if self.size < 16:
            raise ValueError(f"SynthConfig: expected size >= 16 pixels, got {self.size}")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(
                f"SynthConfig: expected 0 < min_scale <= max_scale <= 1, got {self.min_scale} and {self.max_scale}"
            )
        if self.max_objects < 1:
            raise ValueError(f"SynthConfig: expected max_objects >= 1, got {self.max_objects}")
        if not 0 < self.min_visible <= 1:
            raise ValueError(f"SynthConfig: expected 0 < min_visible <= 1, got {self.min_visible}")
        if self.classes not in ("shapes", "shape_pattern"):
            raise ValueError(f'SynthConfig: expected classes "shapes" or "shape_pattern", got "{self.classes}"')
        if not self.fills or any(f not in FILLS for f in self.fills):
            raise ValueError(f"SynthConfig: fills must be a non-empty subset of {FILLS}, got {self.fills}")
        if self.image_format not in ("jpg", "png"):
            raise ValueError(f'SynthConfig: expected image_format "jpg" or "png", got "{self.image_format}"')


def categories(config: Optional[SynthConfig] = None) -> list[dict]:
    """The COCO ``categories`` list of ``config.classes`` (default: the default config's):
    ids 1..K, the class name, and its shape as supercategory."""
    if (config or SynthConfig()).classes == "shapes":
        return [{"id": i + 1, "name": shape, "supercategory": shape} for i, shape in enumerate(SHAPE_CLASSES)]
    return [{"id": i + 1, "name": name, "supercategory": shape} for i, (name, shape, _) in enumerate(CLASSES)]


# ----------------------------------------------------------------------------- drawing


def _value_noise(rng, size: int, cells: int, channels: int) -> np.ndarray:
    """Smooth random field [size, size, channels] in [0, 1] from a cells x cells grid."""
    coarse = rng.random((channels, cells, cells), dtype=np.float32)
    # Pillow's bilinear upsampling: single-threaded C, no BLAS thread pool to wake per image
    up = [np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR)) for c in coarse]
    return np.stack(up, -1)


@functools.lru_cache(maxsize=4)
def _pixel_centres(s: int):
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _background(rng, s: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A textured background [s, s, 3] in [0, 1]: gradient + smooth noise + one texture."""
    angle = rng.uniform(0, 2 * math.pi)
    t = (xx * math.cos(angle) + yy * math.sin(angle)) / s
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
    img = c0 + (c1 - c0) * t[..., None]
    img += (_value_noise(rng, s, int(rng.integers(3, 8)), 3) - 0.5) * rng.uniform(0.2, 0.6)
    kind = rng.integers(4)
    amp = rng.uniform(0.05, 0.25)
    if kind == 0:  # waves at a random angle and frequency
        a, f = rng.uniform(0, math.pi), rng.uniform(0.1, 0.8)
        tex = np.sin((xx * math.cos(a) + yy * math.sin(a)) * f)
    elif kind == 1:  # fine-grained noise
        tex = _value_noise(rng, s, int(rng.integers(s // 8, s // 3)), 1)[..., 0] * 2 - 1
    elif kind == 2:  # wood-like: waves bent by smooth noise
        warp = _value_noise(rng, s, 4, 1)[..., 0] * rng.uniform(10, 40)
        tex = np.sin((xx + warp) * rng.uniform(0.2, 0.6))
    else:  # plain
        tex = np.zeros_like(xx)
    img += (amp * tex)[..., None] * (rng.random(3, dtype=np.float32) * 2 - 1)
    return img


def _strokes(rng, img: np.ndarray, yy: np.ndarray, xx: np.ndarray, n: int) -> None:
    """Unannotated clutter under the objects: line segments and rings of random colour."""
    s = img.shape[0]
    for _ in range(n):
        width = rng.uniform(1.0, 3.5)
        colour = rng.random(3, dtype=np.float32)
        line = rng.random() < 0.6
        if line:
            px, py, qx, qy = (float(c) * s for c in rng.uniform(-0.1, 1.1, 4))
            lo_x, hi_x, lo_y, hi_y = min(px, qx), max(px, qx), min(py, qy), max(py, qy)
        else:
            cx, cy, r = (float(c) * s for c in rng.uniform((0, 0, 0.05), (1, 1, 0.4)))
            lo_x, hi_x, lo_y, hi_y = cx - r, cx + r, cy - r, cy + r
        # only the stroke's bounding window; python floats keep the arithmetic in float32
        pad = width / 2 + 1
        y0, y1 = max(int(lo_y - pad), 0), min(int(hi_y + pad) + 1, s)
        x0, x1 = max(int(lo_x - pad), 0), min(int(hi_x + pad) + 1, s)
        if y0 >= y1 or x0 >= x1:
            continue
        wy, wx = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
        if line:
            dx, dy = qx - px, qy - py
            t = np.clip(((wx - px) * dx + (wy - py) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
            dist = np.hypot(wx - (px + t * dx), wy - (py + t * dy))
        else:
            dist = np.abs(np.hypot(wx - cx, wy - cy) - r)
        alpha = np.clip(width / 2 + 0.5 - dist, 0, 1)[..., None]
        win = img[y0:y1, x0:x1]
        win *= 1 - alpha
        win += alpha * colour


def _luminance(c: np.ndarray) -> float:
    return float(c @ np.array([0.299, 0.587, 0.114], np.float32))


def _two_colours(rng, min_contrast: float):
    """Base and pattern colours whose luminances differ by at least min_contrast."""
    for _ in range(100):
        a, b = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
        if abs(_luminance(a) - _luminance(b)) >= min_contrast:
            return a, b
    return np.zeros(3, np.float32), np.ones(3, np.float32)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in object coordinates, where the object spans about [-1, 1]^2."""
    if shape == "disc":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if shape == "triangle":  # equilateral, circumradius 1.2: three half-planes at distance 0.6
        inside = -v <= 0.6
        for a in (math.pi / 6, 5 * math.pi / 6):
            inside &= u * math.cos(a) + v * math.sin(a) <= 0.6
        return inside
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 1) & (av <= 0.36)) | ((av <= 1) & (au <= 0.36))
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if shape == "star":  # five points: the radius runs linearly from 1 at a point to 0.45 between two
        frac = (np.arctan2(v, u) / (2 * math.pi / 5)) % 1.0
        return np.hypot(u, v) <= 0.45 + 0.55 * np.abs(2 * frac - 1)
    raise ValueError(f"unknown shape {shape!r}")


def _pattern(pattern: str, u: np.ndarray, v: np.ndarray, period: float, phase) -> np.ndarray:
    """Pattern colour weight in {0, 1} at object coordinates (already rotated)."""
    a, b = u / period + phase[0], v / period + phase[1]
    if pattern == "stripes":
        return (a - np.floor(a)) < 0.5
    if pattern == "checker":
        return (np.floor(a) + np.floor(b)) % 2 == 0
    if pattern == "dots":
        return (a - np.round(a)) ** 2 + (b - np.round(b)) ** 2 < 0.3**2
    if pattern == "solid":
        return np.zeros(u.shape, bool)
    raise ValueError(f"unknown pattern {pattern!r}")


def _sum2x2(a: np.ndarray) -> np.ndarray:
    """Sum of each 2x2 block of a bool array [2n, 2n] -> float32 [n, n] (supersampling)."""
    a = a.view(np.uint8)
    return (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]).astype(np.float32)


@dataclass
class _Item:
    shape: str
    pattern: str
    category_id: int  # 0 for decoys
    half: float
    aspect: float
    angle: float
    pattern_angle: float
    period: float
    phase: tuple
    colours: tuple
    shade: tuple
    radius: int = 0
    cx: float = 0.0
    cy: float = 0.0
    alpha: Optional[np.ndarray] = None  # (2r+1, 2r+1) coverage in [0, 1]
    colour: Optional[np.ndarray] = None  # (2r+1, 2r+1, 3)

    def rasterise(self) -> None:
        """Coverage and colour over a (2r+1)^2 window around the centre, 2x2 supersampled.

        The window geometry depends only on the sub-pixel part of the centre, so it is
        drawn again for every placement tried.
        """
        hx, hy = self.half * math.sqrt(self.aspect), self.half / math.sqrt(self.aspect)
        r = self.radius = int(math.ceil(max(hx, hy) * 1.25)) + 1
        n = 2 * r + 1
        offs = (np.arange(2 * n, dtype=np.float32) + 0.5) / 2 - r - 0.5  # sub-pixel centres
        fx, fy = self.cx - math.floor(self.cx) - 0.5, self.cy - math.floor(self.cy) - 0.5
        dx, dy = offs[None, :] - fx, offs[:, None] - fy
        c, s = math.cos(self.angle), math.sin(self.angle)
        u, v = (dx * c + dy * s) / hx, (-dx * s + dy * c) / hy
        inside = _shape_mask(self.shape, u, v)
        c, s = math.cos(self.pattern_angle), math.sin(self.pattern_angle)
        pat = _pattern(self.pattern, u * c + v * s, -u * s + v * c, self.period, self.phase)
        count = _sum2x2(inside)
        cov = count * 0.25
        pw = _sum2x2(inside & pat) / np.maximum(count, 1)
        base, fg = self.colours
        shade = 1 + self.shade[0] * (u[::2, ::2] * math.cos(self.shade[1]) + v[::2, ::2] * math.sin(self.shade[1]))
        col = base + (fg - base) * pw[..., None]
        self.alpha, self.colour = cov, np.clip(col * shade[..., None], 0, 1)

    def window(self, s: int):
        """(image slice y, image slice x, window slice y, window slice x), clipped to the image."""
        x0, y0 = int(math.floor(self.cx)) - self.radius, int(math.floor(self.cy)) - self.radius
        n = 2 * self.radius + 1
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + n, s), min(y0 + n, s)
        if ix0 >= ix1 or iy0 >= iy1:
            return None
        return slice(iy0, iy1), slice(ix0, ix1), slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0)


def _sample_item(rng, cfg: SynthConfig, shape: str, pattern: str, category_id: int) -> _Item:
    s = cfg.size
    side = s * math.exp(rng.uniform(math.log(cfg.min_scale), math.log(cfg.max_scale)))
    return _Item(
        shape=shape,
        pattern=pattern,
        category_id=category_id,
        half=side / 2,
        aspect=math.exp(rng.uniform(-1, 1) * math.log(cfg.max_aspect)),
        angle=rng.uniform(0, 2 * math.pi),
        pattern_angle=rng.uniform(0, 2 * math.pi),
        period=2.0 / rng.uniform(*cfg.pattern_cycles),
        phase=tuple(float(p) for p in rng.random(2)),
        colours=_two_colours(rng, cfg.min_contrast),
        shade=(rng.uniform(0, 0.25), rng.uniform(0, 2 * math.pi)),
    )


def _place(rng, item: _Item, s: int) -> None:
    item.cx, item.cy = (float(c) * s for c in rng.uniform(0.02, 0.98, 2))
    item.rasterise()


def render_image(cfg: SynthConfig, rng: np.random.Generator):
    """Draw one image.

    Returns:
        (uint8 ndarray[S, S, 3], list of (category_id, visible mask bool ndarray[S, S],
        visible share of the object's pixels)) for the annotated objects, bottom of the stack first.
    """
    s = cfg.size
    yy, xx = _pixel_centres(s)
    img = _background(rng, s, yy, xx)
    _strokes(rng, img, yy, xx, int(rng.integers(0, cfg.max_strokes + 1)))

    n_obj = 0 if rng.random() < cfg.empty_prob else int(rng.integers(1, cfg.max_objects + 1))
    items = []
    by_shape = cfg.classes == "shapes"
    for _ in range(n_obj):
        if by_shape:
            k = int(rng.integers(len(SHAPE_CLASSES)))
            items.append(_sample_item(rng, cfg, SHAPE_CLASSES[k], cfg.fills[int(rng.integers(len(cfg.fills)))], k + 1))
        else:
            k = int(rng.integers(len(CLASSES)))
            items.append(_sample_item(rng, cfg, CLASSES[k][1], CLASSES[k][2], k + 1))
    for _ in range(int(rng.integers(0, cfg.max_decoys + 1))):
        if by_shape:
            shape, pattern = SHAPE_DECOYS[int(rng.integers(len(SHAPE_DECOYS)))], cfg.fills[int(rng.integers(len(cfg.fills)))]
        else:
            shape, pattern = DECOYS[int(rng.integers(len(DECOYS)))]
        items.append(_sample_item(rng, cfg, shape, pattern, 0))
    order = rng.permutation(len(items))
    stack = [items[i] for i in order]  # drawing order: stack[-1] on top

    covered = np.zeros((s, s), bool)  # pixels taken by items above the current one
    kept, visible = [], {}
    for item in reversed(stack):
        tries = cfg.placement_tries if item.category_id else 1
        for _ in range(tries):
            _place(rng, item, s)
            full = item.alpha >= 0.5
            win = item.window(s)
            if win is None:
                continue
            iy, ix, wy, wx = win
            vis = full[wy, wx] & ~covered[iy, ix]
            if item.category_id == 0 or np.count_nonzero(vis) >= cfg.min_visible * max(np.count_nonzero(full), 1):
                break
        else:
            continue  # an object that cannot stay visible enough is not drawn at all
        if win is None:
            continue
        if item.category_id:
            m = np.zeros((s, s), bool)
            m[iy, ix] = vis
            visible[id(item)] = (m, np.count_nonzero(vis) / max(np.count_nonzero(full), 1))
        covered[iy, ix] |= full[wy, wx]
        kept.append(item)

    objects = []
    for item in reversed(kept):  # paint bottom-up
        iy, ix, wy, wx = item.window(s)
        a = item.alpha[wy, wx][..., None]
        img[iy, ix] = img[iy, ix] * (1 - a) + item.colour[wy, wx] * a
        if item.category_id:
            objects.append((item.category_id, *visible[id(item)]))

    img += rng.standard_normal(img.shape, dtype=np.float32) * cfg.noise_std
    out = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0, cfg.max_blur)))
    return np.asarray(out), objects


# ----------------------------------------------------------------------------- writing


def _annotation(category_id: int, mask: np.ndarray, visible: float) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "category_id": category_id,
        "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
        "area": int(mask.sum()),
        "iscrowd": 0,
        "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
        "visible": round(visible, 4),  # share of the object's pixels not hidden or cut off
    }


def _make_one(job):
    """Render, save and annotate image ``index`` of a split (a worker's unit of work)."""
    cfg, seed, split, index, image_dir = job
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index]))
    pixels, objects = render_image(cfg, rng)
    name = f"{index + 1:06d}.{cfg.image_format}"
    path = Path(image_dir) / name
    if cfg.image_format == "jpg":
        Image.fromarray(pixels).save(path, quality=cfg.jpeg_quality)
    else:
        Image.fromarray(pixels).save(path)
    return name, [_annotation(*obj) for obj in objects]


def _coco_json(cfg: SynthConfig, seed: int, split: str, results) -> dict:
    images, annotations = [], []
    for i, (name, anns) in enumerate(results):
        images.append({"id": i + 1, "file_name": name, "width": cfg.size, "height": cfg.size})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **ann})
    info = {
        "description": f"nasx synthetic {cfg.classes} detection dataset, {split} split",
        "version": "1",
        "generator": "nasx.data.synth",
        "seed": seed,
        "config": asdict(cfg),
    }
    return {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories(cfg)}


def write_synth_dataset(
    out,
    *,
    train: int = 2000,
    val: int = 300,
    seed: int = 0,
    config: SynthConfig = SynthConfig(),
    workers: Optional[int] = None,
    force: bool = False,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> dict:
    """Write the synthetic dataset to ``out`` in COCO layout::

        out/train/000001.jpg ...    out/val/000001.jpg ...
        out/annotations/instances_train.json    out/annotations/instances_val.json

    The JSON files are written last, each through a temporary file and a rename, so an
    interrupted run never leaves a dataset that looks complete.

    Args:
        out: target directory; must be empty or missing unless ``force``.
        train, val: number of images per split.
        seed: the same seed gives byte-identical files (for any ``workers``).
        config: what to draw (:class:`SynthConfig`).
        workers: processes drawing in parallel (default: the CPU count, at most 8; 0 draws inline).
        force: replace ``out/train``, ``out/val`` and ``out/annotations`` when ``out`` is not empty.
        progress: called as ``progress(split, done, total)`` while drawing.

    Returns:
        dict with the written paths and the image and object counts per split.
    """
    out = Path(out)
    if train < 0 or val < 0:
        raise ValueError(f"write_synth_dataset: expected non-negative image counts, got train={train}, val={val}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"write_synth_dataset: {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(
                f"write_synth_dataset: {out} is not empty; use force=True (--force) to replace its "
                "train/, val/ and annotations/"
            )
        for sub in ("annotations", "train", "val"):  # the JSON first: the old set stops looking valid
            if (out / sub).exists():
                shutil.rmtree(out / sub)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)

    ann_dir = out / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    summary, pending = {"root": str(out), "splits": {}}, []
    # fork is cheap and safe here (workers only run numpy and Pillow); spawn where there is no fork.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = multiprocessing.get_context(method).Pool(workers) if workers > 0 else None
    try:
        for split, n in (("train", train), ("val", val)):
            image_dir = out / split
            image_dir.mkdir(parents=True, exist_ok=True)
            jobs = [(config, seed, split, i, str(image_dir)) for i in range(n)]
            it = pool.imap(_make_one, jobs, chunksize=16) if pool else map(_make_one, jobs)
            results = []
            for r in it:
                results.append(r)
                if progress and (len(results) % 100 == 0 or len(results) == n):
                    progress(split, len(results), n)
            data = _coco_json(config, seed, split, results)
            pending.append((ann_dir / f"instances_{split}.json", data))
            summary["splits"][split] = {
                "images": n,
                "objects": len(data["annotations"]),
                "image_dir": str(image_dir),
                "annotations": str(ann_dir / f"instances_{split}.json"),
            }
    finally:
        if pool:
            pool.close()
            pool.join()
    for path, data in pending:
        write_text(path, json.dumps(data, separators=(",", ":")))
    return summary
