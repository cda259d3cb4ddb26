"""Transforms keep boxes on their pixels; collate pads; the loader is reproducible across workers."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nasx.data import build_loader, collate_detection
from nasx.data.transforms import (
    Compose, Normalize, RandomHorizontalFlip, RandomResize, Resize, ToFloat, hflip, resize, resized_shape,
)


def painted(h, w, box):
    """A uint8 image, zero except a solid rectangle at integer box (x1, y1, x2, y2)."""
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    img[:, y1:y2, x1:x2] = 200
    return img, {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([3]), "image_id": 5}


def extent(img, thresh=100):
    ys, xs = torch.nonzero(img[0] > thresh, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


@st.composite
def image_and_box(draw):
    h, w = draw(st.integers(4, 90)), draw(st.integers(4, 90))
    x1, y1 = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
    x2, y2 = draw(st.integers(x1 + 1, w)), draw(st.integers(y1 + 1, h))
    return h, w, (x1, y1, x2, y2)


@given(image_and_box())
def test_flip_moves_box_with_pixels(case):
    h, w, box = case
    img, target = painted(h, w, box)
    fimg, ft = hflip(img, target)
    assert ft["boxes"][0].tolist() == extent(fimg)
    assert ft["labels"] is target["labels"] and ft["image_id"] == 5  # other keys pass through
    back, bt = hflip(fimg, ft)
    assert torch.equal(back, img) and torch.equal(bt["boxes"], target["boxes"])


@given(image_and_box(), st.integers(8, 120), st.one_of(st.none(), st.integers(8, 160)))
def test_resize_keeps_aspect_and_scales_boxes_exactly(case, min_size, max_size):
    h, w, box = case
    if max_size is not None and max_size < min_size:
        min_size, max_size = max_size, min_size
    img, target = painted(h, w, box)
    out, t = Resize(min_size, max_size)(img, target)
    nh, nw = out.shape[1:]
    assert (nh, nw) == resized_shape(h, w, min_size, max_size)
    # shorter side reaches min_size unless the longer side hit max_size
    if max_size is not None and max(nh, nw) == max_size and min(nh, nw) < min_size:
        assert max(h, w) * min_size / min(h, w) > max_size - 0.5
    else:
        assert min(nh, nw) == min_size
    # aspect kept: both sides are one scale factor times the original, up to rounding to pixels
    scale = min_size / min(h, w) if max_size is None else min(min_size / min(h, w), max_size / max(h, w))
    assert abs(nh - max(h * scale, 1)) <= 0.5 + 1e-9 and abs(nw - max(w * scale, 1)) <= 0.5 + 1e-9  # >= 1 px
    sx, sy = nw / w, nh / h
    expected = torch.tensor([[box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]])
    torch.testing.assert_close(t["boxes"], expected)
    assert out.dtype == torch.uint8


def test_resized_box_covers_resized_pixels():
    img, target = painted(60, 80, (20, 10, 50, 40))
    out, t = resize(img, target, (30, 40))
    assert t["boxes"][0].tolist() == [10, 5, 25, 20] and extent(out) == [10, 5, 25, 20]
    out, t = resize(img.float(), target, (120, 160))
    assert t["boxes"][0].tolist() == [40, 20, 100, 80] and extent(out) == [40, 20, 100, 80]
    assert out.dtype == torch.float32


def test_resized_shape_examples():
    assert resized_shape(480, 640, 800, 1333) == (800, 1067)
    assert resized_shape(100, 1000, 800, 1333) == (133, 1333)
    assert resized_shape(128, 128, 96) == (96, 96)


def test_random_transforms_follow_torch_seed():
    img, target = painted(40, 60, (5, 5, 20, 30))
    tf = Compose([RandomResize([32, 48, 64], max_size=100), RandomHorizontalFlip(0.5)])
    seen = set()
    for seed in range(30):
        torch.manual_seed(seed)
        a = tf(img, target)
        torch.manual_seed(seed)
        b = tf(img, target)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
        seen.add((a[0].shape[1], a[1]["boxes"][0, 0].item() > a[0].shape[2] / 2))
        assert a[1]["boxes"][0].tolist() == pytest.approx(extent(a[0]), abs=1)
    assert {s for s, _ in seen} == {32, 48, 64} and {f for _, f in seen} == {True, False}
    assert "RandomResize" in repr(tf)


def test_float_and_normalize():
    img = torch.tensor([[[0, 255]], [[51, 102]], [[255, 0]]], dtype=torch.uint8)
    f, _ = ToFloat()(img, {})
    assert f.dtype == torch.float32 and f[0, 0].tolist() == [0, 1]
    n, _ = Normalize((0.5, 0.2, 0.5), (0.5, 0.1, 0.25))(img, {})
    torch.testing.assert_close(n, torch.tensor([[[-1.0, 1]], [[0, 2]], [[2, -2]]]))
    with pytest.raises(ValueError, match="Normalize: expected 3 means and 3 positive stds"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError, match="Resize: expected 1 <= min_size <= max_size, got 100 and 50"):
        Resize(100, 50)


def test_collate_pads_to_multiple():
    a, ta = painted(30, 50, (1, 1, 5, 5))
    b, tb = painted(70, 20, (2, 2, 6, 6))
    batch = collate_detection([(a, ta), (b, tb)])
    assert batch.images.shape == (2, 3, 96, 64) and batch.images.dtype == torch.uint8
    assert batch.image_sizes == [(30, 50), (70, 20)]
    assert torch.equal(batch.images[0, :, :30, :50], a) and batch.images[0, :, 30:].sum() == 0
    assert torch.equal(batch.images[1, :, :70, :20], b) and batch.images[1, :, :, 20:].sum() == 0
    assert batch.targets[1] is tb
    images, sizes, targets = collate_detection([(a.float(), ta)], size_divisible=1, pad_value=-1)
    assert images.shape == (1, 3, 30, 50)
    assert collate_detection([(a.float(), ta), (b.float(), tb)], pad_value=-1).images[0, 0, 40, 0] == -1
    with pytest.raises(ValueError, match="collate_detection: expected at least one sample"):
        collate_detection([])
    with pytest.raises(ValueError, match="expected images of one dtype"):
        collate_detection([(a, ta), (b.float(), tb)])


class Boxes(torch.utils.data.Dataset):
    """Images of varying size, each a function of its index, under random transforms."""

    def __init__(self, n=22):
        self.n = n
        self.tf = Compose([RandomResize(range(24, 57, 8), max_size=80), RandomHorizontalFlip()])

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        h, w = 20 + (i * 7) % 30, 20 + (i * 13) % 40
        return self.tf(*painted(h, w, (i % 10, 1, i % 10 + 8, 15)))


def _batches(loader):
    return [(b.images.clone(), b.image_sizes, [t["boxes"] for t in b.targets]) for b in loader]


def _same(xs, ys):
    return len(xs) == len(ys) and all(
        torch.equal(a[0], b[0]) and a[1] == b[1] and all(torch.equal(p, q) for p, q in zip(a[2], b[2]))
        for a, b in zip(xs, ys)
    )


def test_loader_same_batches_for_any_worker_count():
    ds = Boxes()
    inline = build_loader(ds, 4, shuffle=True, workers=0, seed=7)
    pooled = build_loader(ds, 4, shuffle=True, workers=2, seed=7)
    e0, e1 = _batches(inline), _batches(inline)
    assert _same(_batches(pooled), e0) and _same(_batches(pooled), e1)  # two epochs, persistent workers
    assert not _same(e0, e1)  # a new order and new random transforms each epoch
    assert len(e0) == math.ceil(22 / 4) and all(b[0].shape[-1] % 32 == 0 for b in e0)
    inline.sampler.set_epoch(0)
    assert _same(_batches(inline), e0)  # resume: replay an epoch
    assert not _same(_batches(build_loader(ds, 4, shuffle=True, seed=8)), e0)


def test_loader_leaves_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _batches(build_loader(Boxes(6), 2, shuffle=True))
    assert torch.equal(torch.rand(3), expected)


def test_loader_unshuffled_order_and_errors():
    b = _batches(build_loader(Boxes(5), 2, drop_last=True, size_divisible=8))
    assert len(b) == 2 and all(x[0].shape[-1] % 8 == 0 for x in b)
    with pytest.raises(ValueError, match="build_loader: expected batch_size >= 1, got 0"):
        build_loader(Boxes(), 0)
