import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nasx
from nasx.ops import _reference as ref

from boxgen import box_sets, thresholds
from conftest import needs_cuda


@given(data=box_sets(), thr=thresholds, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_nms_matches_reference(data, thr, dtype):
    boxes, scores = data[0].to(dtype), data[1].to(dtype)
    assert torch.equal(nasx.ops.nms(boxes, scores, thr), ref.nms(boxes, scores, thr))


@given(data=box_sets(min_n=1, max_n=2000), thr=thresholds)
def test_nms_large_sets_cross_panels(data, thr):
    """More boxes than one kernel panel (256), so the parallel cross-panel path runs."""
    boxes, scores = data
    assert torch.equal(nasx.ops.nms(boxes, scores, thr), ref.nms(boxes, scores, thr))


@given(data=box_sets(), thr=thresholds, classes=st.integers(1, 12), offset=st.integers(-5, 5))
def test_batched_nms_matches_reference(data, thr, classes, offset):
    boxes, scores = data
    idxs = torch.randint(0, classes, (len(boxes),)) * 7 + offset  # arbitrary, negative, sparse ids
    assert torch.equal(nasx.ops.batched_nms(boxes, scores, idxs, thr), ref.batched_nms(boxes, scores, idxs, thr))


@given(data=box_sets(max_n=500), thr=thresholds)
def test_nms_matches_torchvision(data, thr):
    tv = pytest.importorskip("torchvision")
    boxes, scores = data
    assert torch.equal(nasx.ops.nms(boxes, scores, thr), tv.ops.nms(boxes, scores, thr))


@given(data=box_sets(max_n=500), thr=thresholds)
def test_batched_nms_matches_torchvision(data, thr):
    tv = pytest.importorskip("torchvision")
    boxes, scores = data
    # Distinct scores: torchvision orders equal scores of different classes arbitrarily.
    scores = torch.randperm(len(boxes)).float()
    idxs = torch.randint(0, 5, (len(boxes),))
    # torchvision shifts each class by (max coordinate + 1) and so rounds IoUs
    # differently; integer coordinates keep that shift exact.
    boxes = boxes.round()
    assert torch.equal(nasx.ops.batched_nms(boxes, scores, idxs, thr), tv.ops.batched_nms(boxes, scores, idxs, thr))


@pytest.mark.parametrize("op", ["nms", "batched_nms"])
def test_empty_and_single(op, device):
    for n in (0, 1):
        boxes = torch.tensor([[0.0, 0, 1, 1]] * n, device=device).reshape(n, 4)
        scores = torch.ones(n, device=device)
        args = (boxes, scores, torch.zeros(n, dtype=torch.int64, device=device)) if op == "batched_nms" else (boxes, scores)
        keep = getattr(nasx.ops, op)(*args, 0.5)
        assert keep.dtype == torch.int64 and keep.device.type == device and keep.tolist() == list(range(n))


def test_ties_keep_lower_index_first():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [20, 20, 30, 30]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.9])
    assert nasx.ops.nms(boxes, scores, 0.5).tolist() == [3, 0]


def test_threshold_is_strict_and_compared_in_double():
    # IoU exactly 0.5 is not "> 0.5". The float32 IoU 1/3 (0.33333334) lies above the
    # double 1/3, so torchvision suppresses it; rounding the threshold to float32 would not.
    boxes = torch.tensor([[0.0, 0, 2, 1], [1, 0, 3, 1], [0, 0, 1, 1]])
    assert nasx.ops.nms(boxes[:2], torch.tensor([1.0, 0.9]), 1 / 3).tolist() == [0]
    assert nasx.ops.nms(boxes[[0, 2]], torch.tensor([1.0, 0.9]), 0.5).tolist() == [0, 1]
    assert nasx.ops.nms(boxes[[0, 2]], torch.tensor([1.0, 0.9]), 0.4999).tolist() == [0]


def test_nan_policy(device):
    """Documented: NaN scores are never kept and suppress nothing; NaN boxes overlap nothing."""
    nan = float("nan")
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [nan, 0, 10, 10], [0, 0, 10, 10]], device=device)
    scores = torch.tensor([nan, 0.5, 0.9, 0.4], device=device)
    assert nasx.ops.nms(boxes, scores, 0.5).tolist() == [2, 1]
    assert nasx.ops.batched_nms(boxes, scores, torch.zeros(4, dtype=torch.long, device=device), 0.5).tolist() == [2, 1]
    inf = float("inf")
    boxes[2] = torch.tensor([-inf, -inf, inf, inf])
    assert nasx.ops.nms(boxes, scores, 0.5).tolist() == [2, 1]


def test_half_and_autocast():
    boxes = torch.tensor([[0.0, 0, 300, 300], [0, 0, 300, 290], [400, 400, 500, 500]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nasx.ops.nms(boxes.half(), scores.half(), 0.5).tolist() == [0, 2]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert nasx.ops.nms(boxes.bfloat16(), scores.bfloat16(), 0.5).tolist() == [0, 2]


@needs_cuda
@given(data=box_sets(max_n=3000), thr=thresholds, classes=st.integers(1, 10))
def test_cuda_matches_cpu(data, thr, classes):
    boxes, scores = data
    idxs = torch.randint(0, classes, (len(boxes),))
    assert torch.equal(nasx.ops.nms(boxes.cuda(), scores.cuda(), thr).cpu(), nasx.ops.nms(boxes, scores, thr))
    assert torch.equal(
        nasx.ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), thr).cpu(),
        nasx.ops.batched_nms(boxes, scores, idxs, thr),
    )


@needs_cuda
def test_cuda_large_input_and_nan():
    g = torch.Generator().manual_seed(0)
    centre = torch.rand(70_000, 2, generator=g) * 2000
    boxes = torch.cat([centre, centre + torch.rand(70_000, 2, generator=g) * 100 + 1], 1)
    scores = torch.rand(70_000, generator=g)
    scores[::97] = float("nan")
    assert torch.equal(nasx.ops.nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), nasx.ops.nms(boxes, scores, 0.5))
