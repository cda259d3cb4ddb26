import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nasx
from nasx.ops import _reference as ref

from conftest import needs_cuda

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_targets import atss_vectorised, fcos_vectorised  # noqa: E402  the benchmark's peers

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


radii = st.sampled_from([None, 1.5, 2.5, 0.3])
dtypes = st.sampled_from([torch.float32, torch.float64])


# ---------------------------------------------------------------- fcos_targets


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


# ---------------------------------------------------------------- match_anchors

threshold_pairs = st.sampled_from([(0.5, 0.4), (0.7, 0.3), (0.5, 0.5), (0.7, 0.7), (0.0, 0.0), (1.0, 0.0), (0.3, 0.1)])


@st.composite
def anchor_scenes(draw, max_n=400, max_g=30):
    """Anchors and GTs on a coarse integer grid, so that IoU ties (per anchor and per GT) are common."""
    n, g = draw(st.integers(1, max_n)), draw(st.integers(1, max_g))  # torchvision rejects empty sets
    seed = draw(st.integers(0, 2**31 - 1))
    grid = draw(st.sampled_from([1.0, 4.0, 0.0]))  # 0: continuous coordinates
    gen = torch.Generator().manual_seed(seed)

    def boxes(k):
        xy = torch.rand(k, 2, generator=gen, dtype=torch.float64) * 64
        wh = torch.rand(k, 2, generator=gen, dtype=torch.float64) * 32 + 1
        b = torch.cat([xy, xy + wh], 1)
        return (b / grid).round() * grid if grid else b

    anchors, gts = boxes(n), boxes(g)
    if n > 2 and draw(st.booleans()):
        anchors[: n // 3] = gts[torch.randint(0, g, (n // 3,), generator=gen)]  # exact matches: IoU 1 ties
    return anchors, gts


@given(scene=anchor_scenes(), thr=threshold_pairs, low_quality=st.booleans(), dtype=dtypes)
def test_match_anchors_matches_torchvision_matcher(scene, thr, low_quality, dtype):
    tv = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import Matcher

    anchors, gts = (t.to(dtype) for t in scene)
    matched, max_iou = nasx.ops.match_anchors(anchors, gts, thr[0], thr[1], low_quality)
    quality = tv.ops.box_iou(gts, anchors)
    expected = Matcher(thr[0], thr[1], allow_low_quality_matches=low_quality)(quality)
    assert torch.equal(matched, expected)
    exact(max_iou, quality.max(dim=0).values)  # zero-area pairs give NaN, as box_iou
    r_matched, r_iou = ref.match_anchors(anchors, gts, thr[0], thr[1], low_quality)
    assert torch.equal(matched, r_matched)
    exact(max_iou, r_iou)


def test_match_anchors_thresholds_compared_in_iou_dtype():
    """float32(0.7) < 0.7: an IoU of exactly float32(0.7) is foreground, as in torchvision."""
    tv = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import Matcher

    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    anchors = torch.tensor([[0.0, 0.0, 10.0, 7.0], [0.0, 0.0, 10.0, 3.0]])  # IoU 0.7 and 0.3 in float32
    iou = tv.ops.box_iou(gts, anchors)
    assert iou[0, 0].item() < 0.7
    for hi, lo in [(0.7, 0.3), (0.7, 0.7)]:
        expected = Matcher(hi, lo, allow_low_quality_matches=False)(iou)
        assert torch.equal(nasx.ops.match_anchors(anchors, gts, hi, lo)[0], expected)


def test_match_anchors_nan_boxes_like_torchvision():
    tv = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import Matcher

    nan = float("nan")
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [nan, 0.0, 5.0, 5.0], [2.0, 2.0, 2.0, 2.0]])
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0], [3.0, 3.0, 3.0, 3.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    iou = tv.ops.box_iou(gts, anchors)
    for low_quality in (False, True):
        expected = Matcher(0.5, 0.4, allow_low_quality_matches=low_quality)(iou)
        matched, max_iou = nasx.ops.match_anchors(anchors, gts, 0.5, 0.4, low_quality)
        assert torch.equal(matched, expected)
        torch.testing.assert_close(max_iou, iou.max(dim=0).values, equal_nan=True)


def test_match_anchors_empty(device):
    anchors = torch.rand(5, 4, device=device) + torch.tensor([0.0, 0.0, 1.0, 1.0], device=device)
    matched, iou = nasx.ops.match_anchors(anchors, torch.zeros(0, 4, device=device), 0.5, 0.4, True)
    assert matched.tolist() == [-1] * 5 and iou.tolist() == [0.0] * 5
    matched, iou = nasx.ops.match_anchors(anchors[:0], anchors, 0.5, 0.4, True)
    assert matched.shape == (0,) and iou.shape == (0,)


def test_match_anchors_large_scene_against_torchvision():
    tv = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import Matcher

    gen = torch.Generator().manual_seed(5)
    xy = torch.rand(20_000, 2, generator=gen) * 800
    anchors = torch.cat([xy, xy + torch.rand(20_000, 2, generator=gen) * 100 + 8], 1)
    gts = torch.cat([xy[:60] + 3, xy[:60] + 90], 1)
    expected = Matcher(0.5, 0.4, allow_low_quality_matches=True)(tv.ops.box_iou(gts, anchors))
    assert torch.equal(nasx.ops.match_anchors(anchors, gts, 0.5, 0.4, True)[0], expected)


# ---------------------------------------------------------------- atss_assign


@st.composite
def atss_scenes(draw):
    """Anchors laid out as a detector's pyramid (one square anchor per location) and GTs."""
    h, w = draw(st.sampled_from([(64, 64), (96, 80), (40, 120)]))
    strides = draw(st.sampled_from([(8, 16, 32), (8, 16, 32, 64), (16,)]))
    points, stride, _ = pyramid(h, w, strides=strides, bounds=(0,) * (len(strides) + 1))
    scale = draw(st.sampled_from([2.0, 4.0, 8.0]))
    anchors = torch.cat([points - stride[:, None] * scale / 2, points + stride[:, None] * scale / 2], 1)
    counts = torch.unique_consecutive(stride, return_counts=True)[1].tolist()
    gts = draw(gt_sets(max_g=25, extent=(float(w), float(h))))
    return anchors, counts, gts


@given(scene=atss_scenes(), topk=st.sampled_from([1, 3, 9, 20]), dtype=dtypes)
def test_atss_matches_reference(scene, topk, dtype):
    anchors, counts, gts = scene
    anchors, gts = anchors.to(dtype), gts.to(dtype)
    matched, iou = nasx.ops.atss_assign(anchors, counts, gts, topk)
    r_matched, r_iou = ref.atss_assign(anchors, counts, gts, topk)
    assert matched.dtype == torch.int64 and iou.dtype == dtype
    assert torch.equal(matched, r_matched)
    assert torch.equal(iou, r_iou)


def test_atss_matches_authors_vectorised_form():
    """Continuous GT coordinates (no distance ties, where topk's order is unspecified)."""
    pytest.importorskip("torchvision")
    points, stride, _ = pyramid(320, 256, strides=(8, 16, 32, 64), bounds=(0,) * 5)
    anchors = torch.cat([points - stride[:, None] * 4, points + stride[:, None] * 4], 1).float()
    counts = torch.unique_consecutive(stride, return_counts=True)[1].tolist()
    gen = torch.Generator().manual_seed(11)
    xy = torch.rand(40, 2, generator=gen) * 220
    gts = torch.cat([xy, xy + torch.rand(40, 2, generator=gen) * 150 + 10], 1)
    ours = nasx.ops.atss_assign(anchors, counts, gts)
    theirs = atss_vectorised(anchors, counts, gts)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert (ours[0] >= 0).sum() > 40


def test_atss_by_hand():
    # One level of four anchors around the GT centre (5, 5): anchor 0 is the GT itself
    # (IoU 1), anchors 1 and 3 are equally far (IoU 64/136 each), anchor 2 is far away.
    anchors = torch.tensor([[0.0, 0, 10, 10], [2, 2, 12, 12], [30, 30, 40, 40], [-2, -2, 8, 8]])
    gts = torch.tensor([[0.0, 0, 10, 10]])
    # topk 3: candidates 0, 1, 3; threshold = mean + std = 0.647 + 0.306 -> only anchor 0.
    matched, iou = nasx.ops.atss_assign(anchors, [4], gts, 3)
    assert matched.tolist() == [0, -1, -1, -1] and iou.tolist() == [1.0, 0.0, 0.0, 0.0]
    # topk 2: two candidates put mean + std above the larger IoU: nothing is positive.
    assert nasx.ops.atss_assign(anchors, [4], gts, 2)[0].tolist() == [-1] * 4
    # topk 1: a single candidate has no std (NaN): nothing is positive, as in the authors' code.
    assert nasx.ops.atss_assign(anchors, [4], gts, 1)[0].tolist() == [-1] * 4
    # Equal IoUs (a small GT inside identical anchors): std 0, threshold = that IoU, all pass.
    same = torch.tensor([[0.0, 0, 100, 100]] * 3)
    matched, _ = nasx.ops.atss_assign(same, [3], torch.tensor([[40.0, 40, 60, 60]]), 3)
    assert matched.tolist() == [0, 0, 0]


def test_atss_empty(device):
    anchors = torch.tensor([[0.0, 0, 10, 10]] * 3, device=device)
    matched, iou = nasx.ops.atss_assign(anchors, [3], torch.zeros(0, 4, device=device))
    assert matched.tolist() == [-1] * 3 and iou.tolist() == [0.0] * 3
    matched, _ = nasx.ops.atss_assign(anchors[:0], [0, 0], anchors)
    assert matched.shape == (0,)


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
    (lambda: nasx.ops.match_anchors(B, B, 0.4, 0.5), ValueError,
     "match_anchors: expected low_threshold <= high_threshold, got low_threshold 0.5 and high_threshold 0.4"),
    (lambda: nasx.ops.match_anchors(B[:, :2], B, 0.5, 0.4), ValueError, "match_anchors: expected anchors of shape [N, 4]"),
    (lambda: nasx.ops.match_anchors(B, B.int(), 0.5, 0.4), TypeError, "match_anchors: expected gt_boxes to be a floating-point"),
    (lambda: nasx.ops.match_anchors(B, B, float("nan"), 0.4), ValueError, "thresholds must be numbers"),
    (lambda: nasx.ops.atss_assign(B, [2], B), ValueError,
     "atss_assign: expected num_anchors_per_level to sum to anchors.size(0) = 1, got [2] (sum 2)"),
    (lambda: nasx.ops.atss_assign(B, [2, -1], B), ValueError, "expected num_anchors_per_level to hold counts >= 0"),
    (lambda: nasx.ops.atss_assign(B, [1], B, topk=0), ValueError, "atss_assign: expected topk >= 1, got 0"),
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
    anchors = torch.cat([points - 8, points + 8], 1)
    valid = torch.tensor([[True] * 6, [True, False] * 3], device=device)
    return [
        (torch.ops.nasx.fcos_targets.default, (points, strides, ranges, gts, 1.5)),
        (torch.ops.nasx.fcos_targets.default, (points, strides, ranges, gts, None)),
        (torch.ops.nasx.fcos_targets_batched.default, (points, strides, ranges, torch.stack([gts, gts.flip(0)]), valid, 1.5)),
        (torch.ops.nasx.match_anchors.default, (anchors, gts, 0.5, 0.4, True)),
        (torch.ops.nasx.atss_assign.default, (anchors, [48, 12, 4], gts, 9)),
    ]


@pytest.mark.parametrize("i", range(5))
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


@needs_cuda
@given(scene=anchor_scenes(max_n=3000, max_g=300), thr=threshold_pairs, low_quality=st.booleans(), dtype=dtypes)
def test_cuda_match_anchors_matches_cpu(scene, thr, low_quality, dtype):
    anchors, gts = (t.to(dtype) for t in scene)
    cpu = nasx.ops.match_anchors(anchors, gts, thr[0], thr[1], low_quality)
    gpu = nasx.ops.match_anchors(anchors.cuda(), gts.cuda(), thr[0], thr[1], low_quality)
    assert torch.equal(cpu[0], gpu[0].cpu())
    exact(gpu[1].cpu(), cpu[1])


@needs_cuda
@given(scene=atss_scenes(), topk=st.sampled_from([1, 3, 9, 20]), dtype=dtypes)
def test_cuda_atss_matches_cpu(scene, topk, dtype):
    anchors, counts, gts = scene
    anchors, gts = anchors.to(dtype), gts.to(dtype)
    cpu = nasx.ops.atss_assign(anchors, counts, gts, topk)
    gpu = nasx.ops.atss_assign(anchors.cuda(), counts, gts.cuda(), topk)
    assert torch.equal(cpu[0], gpu[0].cpu())
    exact(gpu[1].cpu(), cpu[1])
