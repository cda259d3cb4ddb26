"""Inputs shared by the target-assignment tests (fcos_targets, match_anchors, atss_assign)."""
import math

import torch
from hypothesis import strategies as st

INF = float("inf")


def exact(a, b):
    """Bit-for-bit equal, NaN where the other has NaN."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def pyramid(h, w, strides=(8, 16, 32), bounds=(-1, 64, 128, INF)):
    """FCOS points of an h x w image, their strides and size ranges (the authors' layout)."""
    pts, st_, rng = [], [], []
    for level, s in enumerate(strides):
        ys, xs = torch.meshgrid(
            torch.arange(math.ceil(h / s)) * s + s // 2, torch.arange(math.ceil(w / s)) * s + s // 2, indexing="ij"
        )
        pts.append(torch.stack([xs.flatten(), ys.flatten()], 1).double())
        st_.append(torch.full((xs.numel(),), float(s), dtype=torch.float64))
        rng.append(torch.tensor([[bounds[level], bounds[level + 1]]], dtype=torch.float64).expand(xs.numel(), 2))
    return torch.cat(pts), torch.cat(st_), torch.cat(rng)


@st.composite
def gt_sets(draw, max_g=40, extent=(96.0, 128.0)):
    """GT boxes with duplicates (equal areas), degenerate boxes and integer or fractional corners."""
    g = draw(st.integers(0, max_g))
    seed = draw(st.integers(0, 2**31 - 1))
    integral = draw(st.booleans())
    gen = torch.Generator().manual_seed(seed)
    size = torch.tensor(extent, dtype=torch.float64)
    wh = torch.rand(g, 2, generator=gen, dtype=torch.float64) ** 2 * size + 1
    xy = torch.rand(g, 2, generator=gen, dtype=torch.float64) * size - wh / 3
    boxes = torch.cat([xy, xy + wh], 1)
    if integral:
        boxes = boxes.round()
    if g > 1:
        dup = torch.rand(g, generator=gen) < 0.2
        boxes[dup] = boxes[torch.randint(0, g, (g,), generator=gen)[dup]]
        flat = torch.rand(g, generator=gen) < 0.1
        boxes[flat, 2] = boxes[flat, 0]
    return boxes


dtypes = st.sampled_from([torch.float32, torch.float64])


def anchor_scene(device):
    """Square anchors on the 48 x 64 pyramid and 6 random GT boxes: the inputs the opchecks of
    match_anchors and atss_assign share (counts per level 48, 12, 4)."""
    points, _, _ = (t.float().to(device) for t in pyramid(48, 64))
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(6, 2, generator=gen) * 40
    gts = torch.cat([xy, xy + torch.rand(6, 2, generator=gen) * 30 + 4], 1).to(device)
    return torch.cat([points - 8, points + 8], 1), gts
