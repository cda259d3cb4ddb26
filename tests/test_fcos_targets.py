import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nasx
from nasx.ops import _reference as ref

from conftest import needs_cuda
from targetgen import INF, dtypes, exact, gt_sets, pyramid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_targets import fcos_vectorised  # noqa: E402  the benchmark's peer

radii = st.sampled_from([None, 1.5, 2.5, 0.3])


@given(gts=gt_sets(), radius=radii, dtype=dtypes, size=st.sampled_from([(96, 128), (64, 40), (8, 8)]))
def test_fcos_matches_reference_and_vectorised(gts, radius, dtype, size):
    points, strides, ranges = pyramid(*size)
    args = (points.to(dtype), strides.to(dtype), ranges.to(dtype), gts.to(dtype))
    idx, reg, ctr = nasx.ops.fcos_targets(*args, radius)
    r_idx, r_reg, r_ctr = ref.fcos_targets(*args, radius)
    v_idx, v_reg, v_ctr = fcos_vectorised(*args, radius)
    assert idx.dtype == torch.int64 and reg.dtype == dtype and ctr.dtype == dtype
    assert torch.equal(idx, r_idx) and torch.equal(idx, v_idx)
    assert torch.equal(reg, r_reg) and torch.equal(reg, v_reg)
    # torch's vectorised float32 division is not always correctly rounded: 1 ulp apart at most.
    torch.testing.assert_close(ctr, r_ctr)
    torch.testing.assert_close(ctr, v_ctr)


def test_fcos_rules_by_hand():
    # Two nested GTs: the smaller wins where both apply; the border is not inside.
    points = torch.tensor([[5.0, 5.0], [15.0, 15.0], [10.0, 5.0], [30.0, 30.0]])
    strides = torch.full((4,), 8.0)
    ranges = torch.tensor([[0.0, INF]] * 4)
    gts = torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 10.0, 10.0]])
    idx, reg, ctr = nasx.ops.fcos_targets(points, strides, ranges, gts, None)
    assert idx.tolist() == [1, 0, 0, -1]  # (10, 5) is on the small box's right edge: not strictly inside
    assert reg[1].tolist() == [15.0, 15.0, 5.0, 5.0] and reg[3].tolist() == [0.0] * 4
    assert ctr[0].item() == 1.0 and ctr[3].item() == 0.0
    assert ctr[1].item() == pytest.approx(1 / 3)
    # Center sampling: radius 0.5 x stride 8 = 4 px around (10, 10); (15, 15) is outside that square.
    idx, _, _ = nasx.ops.fcos_targets(points, strides, ranges, gts, 0.5)
    assert idx.tolist() == [1, -1, -1, -1]
    # max(l, t, r, b) = 15 at (15, 15): ranges are inclusive at both ends.
    for lo, hi, expected in [(15.0, 20.0, 0), (0.0, 15.0, 0), (15.5, 20.0, -1), (0.0, 14.9, -1)]:
        out, _, _ = nasx.ops.fcos_targets(points[1:2], strides[:1], torch.tensor([[lo, hi]]), gts, None)
        assert out.item() == expected, (lo, hi)
    # Equal areas: the lower GT index wins.
    twins = torch.tensor([[0.0, 0.0, 20.0, 10.0], [0.0, 0.0, 10.0, 20.0]])
    assert nasx.ops.fcos_targets(points[:1], strides[:1], ranges[:1], twins, None)[0].item() == 0


def test_fcos_empty(device):
    points, strides, ranges = (t.float().to(device) for t in pyramid(32, 32))
    idx, reg, ctr = nasx.ops.fcos_targets(points, strides, ranges, torch.zeros(0, 4, device=device))
    assert (idx == -1).all() and (reg == 0).all() and (ctr == 0).all() and reg.shape == (len(points), 4)
    idx, reg, ctr = nasx.ops.fcos_targets(points[:0], strides[:0], ranges[:0], torch.ones(3, 4, device=device))
    assert idx.shape == (0,) and reg.shape == (0, 4) and ctr.shape == (0,)


def test_fcos_thousands_of_gts():
    """No P x G intermediate: 3000 GTs on 1.3k points, checked against the vectorised form."""
    points, strides, ranges = (t.float() for t in pyramid(256, 320, strides=(8, 16, 32, 64), bounds=(-1, 64, 128, 256, INF)))
    gen = torch.Generator().manual_seed(3)
    xy = torch.rand(3000, 2, generator=gen) * 300
    gts = torch.cat([xy, xy + torch.rand(3000, 2, generator=gen) * 120 + 2], 1)
    ours = nasx.ops.fcos_targets(points, strides, ranges, gts)
    theirs = fcos_vectorised(points, strides, ranges, gts)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert (ours[0] >= 0).sum() > 100


def test_fcos_nan_and_half():
    points, strides, ranges = (t.float() for t in pyramid(64, 64))
    gts = torch.tensor([[0.0, 0.0, 40.0, 40.0], [float("nan"), 0.0, 30.0, 30.0], [10.0, 10.0, 60.0, 60.0]])
    idx, _, _ = nasx.ops.fcos_targets(points, strides, ranges, gts)
    assert not (idx == 1).any() and torch.equal(idx, ref.fcos_targets(points, strides, ranges, gts)[0])
    h_idx, h_reg, h_ctr = nasx.ops.fcos_targets(points.half(), strides.half(), ranges, gts[[0, 2]].half())
    r_idx, r_reg, r_ctr = ref.fcos_targets(points.half(), strides.half(), ranges, gts[[0, 2]].half())
    assert h_reg.dtype == torch.float16 and torch.equal(h_idx, r_idx) and torch.equal(h_reg, r_reg)


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 600), g=st.integers(0, 60), radius=radii, dtype=dtypes)
def test_fcos_scattered_points_and_odd_boxes(seed, n, g, radius, dtype):
    """Points off any grid (clustered, repeated, NaN, +-inf) and boxes that are huge, inverted,
    infinite or NaN: the CPU kernel only scans the GTs whose box reaches a point's grid cell,
    so the cell bookkeeping must never drop a candidate."""
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(n, 2, generator=gen, dtype=torch.float64) * torch.tensor([300.0, 200.0]) - 20
    points[torch.rand(n, generator=gen) < 0.3] = points[0].clone()  # repeats: a degenerate bounding box if all
    odd = torch.rand(n, 2, generator=gen) < 0.03
    points[odd] = torch.tensor([float("nan"), INF, -INF], dtype=torch.float64)[torch.randint(0, 3, (int(odd.sum()),), generator=gen)]
    strides = torch.tensor([4.0, 8.0, 16.0], dtype=torch.float64)[torch.randint(0, 3, (n,), generator=gen)]
    lo = torch.rand(n, generator=gen, dtype=torch.float64) * 40 - 1
    ranges = torch.stack([lo, torch.where(torch.rand(n, generator=gen) < 0.5, lo + 80, torch.full_like(lo, INF))], 1)
    xy = torch.rand(g, 2, generator=gen, dtype=torch.float64) * torch.tensor([300.0, 200.0]) - 30
    wh = torch.rand(g, 2, generator=gen, dtype=torch.float64) ** 2 * 300 - 10  # some inverted (negative)
    gts = torch.cat([xy, xy + wh], 1)
    special = torch.rand(g, 4, generator=gen) < 0.04
    gts[special] = torch.tensor([float("nan"), INF, -INF, 1e30], dtype=torch.float64)[torch.randint(0, 4, (int(special.sum()),), generator=gen)]
    args = (points.to(dtype), strides.to(dtype), ranges.to(dtype), gts.to(dtype))
    idx, reg, ctr = nasx.ops.fcos_targets(*args, radius)
    r_idx, r_reg, r_ctr = ref.fcos_targets(*args, radius)
    assert torch.equal(idx, r_idx)
    exact(reg, r_reg)
    torch.testing.assert_close(ctr, r_ctr, equal_nan=True)


@given(data=st.lists(gt_sets(max_g=12), min_size=1, max_size=4), radius=radii, use_counts=st.booleans())
def test_fcos_batched_equals_per_image(data, radius, use_counts):
    points, strides, ranges = (t.float() for t in pyramid(64, 96))
    g = max(len(b) for b in data)
    padded = torch.full((len(data), g, 4), 7.0)  # padding that would win if it were used
    for i, b in enumerate(data):
        padded[i, : len(b)] = b.float()
    counts = torch.tensor([len(b) for b in data])
    valid = counts if use_counts else torch.arange(g) < counts[:, None]
    idx, reg, ctr = nasx.ops.fcos_targets_batched(points, strides, ranges, padded, valid, radius)
    assert idx.shape == (len(data), len(points)) and reg.shape == (len(data), len(points), 4)
    for i, b in enumerate(data):
        e_idx, e_reg, e_ctr = nasx.ops.fcos_targets(points, strides, ranges, b.float(), radius)
        assert torch.equal(idx[i], e_idx) and torch.equal(reg[i], e_reg) and torch.equal(ctr[i], e_ctr)


def test_fcos_batched_mask_with_holes():
    points, strides, ranges = (t.float() for t in pyramid(64, 64))
    gts = torch.tensor([[[0.0, 0.0, 30.0, 30.0], [0.0, 0.0, 60.0, 60.0], [5.0, 5.0, 20.0, 20.0]]])
    mask = torch.tensor([[False, True, True]])
    idx, _, _ = nasx.ops.fcos_targets_batched(points, strides, ranges, gts, mask)
    expected, _, _ = nasx.ops.fcos_targets(points, strides, ranges, gts[0, 1:])
    assert torch.equal(idx[0], torch.where(expected >= 0, expected + 1, expected))


# ---------------------------------------------------------------- errors, opcheck, compile

P = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
S = torch.tensor([8.0, 8.0])
R = torch.tensor([[0.0, 64.0], [0.0, 64.0]])
B = torch.tensor([[0.0, 0.0, 4.0, 4.0]])

CASES = [
    (lambda: nasx.ops.fcos_targets(P[:, :1], S, R, B), ValueError,
     "fcos_targets: expected points of shape [P, 2] (x, y), got shape [2, 1]"),
    (lambda: nasx.ops.fcos_targets(P.long(), S, R, B), TypeError, "fcos_targets: expected points to be a floating-point tensor"),
    (lambda: nasx.ops.fcos_targets(P, S[:1], R, B), ValueError,
     "expected strides of shape [P] with P = points.size(0) = 2, got shape [1]"),
    (lambda: nasx.ops.fcos_targets(P, S, R[:, :1], B), ValueError, "expected size_ranges of shape [P, 2] (lo, hi)"),
    (lambda: nasx.ops.fcos_targets(P, S, R, B[:, :3]), ValueError, "fcos_targets: expected gt_boxes of shape [N, 4]"),
    (lambda: nasx.ops.fcos_targets(P, S.bool(), R, B), TypeError, "expected strides to be a real"),
    (lambda: nasx.ops.fcos_targets(P, S, R, B, center_radius=0.0), ValueError, "expected center_radius > 0 (or None), got 0"),
    (lambda: nasx.ops.fcos_targets_batched(P, S, R, B, torch.tensor([True])), ValueError,
     "fcos_targets_batched: expected gt_boxes of shape [B, G, 4]"),
    (lambda: nasx.ops.fcos_targets_batched(P, S, R, B[None], torch.tensor([[True, False]])), ValueError,
     "expected gt_valid of shape [B, G] = [1, 1], got shape [1, 2]"),
    (lambda: nasx.ops.fcos_targets_batched(P, S, R, B[None], torch.tensor([2])), ValueError,
     "expected counts in [0, G = 1], got [2]"),
    (lambda: nasx.ops.fcos_targets_batched(P, S, R, B[None], torch.tensor([0.5])), TypeError,
     "expected gt_valid to be a bool mask [B, G] or integer counts [B]"),
]


@pytest.mark.parametrize("call,exc,fragment", CASES)
def test_bad_input_message(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)


def _calls(device):
    points, strides, ranges = (t.float().to(device) for t in pyramid(48, 64))
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(6, 2, generator=gen) * 40
    gts = torch.cat([xy, xy + torch.rand(6, 2, generator=gen) * 30 + 4], 1).to(device)
    valid = torch.tensor([[True] * 6, [True, False] * 3], device=device)
    return [
        (torch.ops.nasx.fcos_targets.default, (points, strides, ranges, gts, 1.5)),
        (torch.ops.nasx.fcos_targets.default, (points, strides, ranges, gts, None)),
        (torch.ops.nasx.fcos_targets_batched.default, (points, strides, ranges, torch.stack([gts, gts.flip(0)]), valid, 1.5)),
    ]


@pytest.mark.parametrize("i", range(3))
def test_opcheck(i, device):
    op, args = _calls(device)[i]
    torch.library.opcheck(op, args)


def test_compile_fullgraph_targets():
    points, strides, ranges = (t.float() for t in pyramid(48, 64))
    gts = torch.tensor([[2.0, 3, 40, 30], [10, 10, 60, 45]])

    def assign(points, gts):
        idx, reg, ctr = nasx.ops.fcos_targets(points, strides, ranges, gts)
        m, _ = nasx.ops.match_anchors(torch.cat([points - 8, points + 8], 1), gts, 0.5, 0.4, True)
        return (idx >= 0).sum(), reg * ctr[:, None], m

    compiled = torch.compile(assign, fullgraph=True, backend="eager")
    for a, b in zip(compiled(points, gts), assign(points, gts)):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- CUDA


@needs_cuda
@given(gts=gt_sets(max_g=300), radius=radii, dtype=dtypes)
def test_cuda_fcos_matches_cpu(gts, radius, dtype):
    points, strides, ranges = (t.to(dtype) for t in pyramid(128, 160))
    cpu = nasx.ops.fcos_targets(points, strides, ranges, gts.to(dtype), radius)
    gpu = nasx.ops.fcos_targets(points.cuda(), strides.cuda(), ranges.cuda(), gts.to(dtype).cuda(), radius)
    for a, b in zip(cpu, gpu):
        assert torch.equal(a, b.cpu())
    batched = nasx.ops.fcos_targets_batched(
        points.cuda(), strides.cuda(), ranges.cuda(), gts.to(dtype).cuda()[None].repeat(2, 1, 1),
        torch.tensor([len(gts), len(gts) // 2], device="cuda"), radius,
    )
    assert torch.equal(batched[0][0].cpu(), cpu[0])
