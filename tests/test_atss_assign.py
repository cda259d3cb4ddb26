import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nasx
from nasx.ops import _reference as ref

from conftest import needs_cuda
from targetgen import anchor_scene, dtypes, exact, gt_sets, pyramid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_targets import atss_vectorised  # noqa: E402  the benchmark's peer


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


# ---------------------------------------------------------------- errors, opcheck

B = torch.tensor([[0.0, 0.0, 4.0, 4.0]])

CASES = [
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


def test_opcheck(device):
    anchors, gts = anchor_scene(device)
    torch.library.opcheck(torch.ops.nasx.atss_assign.default, (anchors, [48, 12, 4], gts, 9))


# ---------------------------------------------------------------- CUDA


@needs_cuda
@given(scene=atss_scenes(), topk=st.sampled_from([1, 3, 9, 20]), dtype=dtypes)
def test_cuda_atss_matches_cpu(scene, topk, dtype):
    anchors, counts, gts = scene
    anchors, gts = anchors.to(dtype), gts.to(dtype)
    cpu = nasx.ops.atss_assign(anchors, counts, gts, topk)
    gpu = nasx.ops.atss_assign(anchors.cuda(), counts, gts.cuda(), topk)
    assert torch.equal(cpu[0], gpu[0].cpu())
    exact(gpu[1].cpu(), cpu[1])
