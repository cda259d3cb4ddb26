import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nasx
from nasx.ops import _reference as ref

from boxgen import box_sets
from conftest import needs_cuda

params = st.fixed_dictionaries(
    {
        "iou_threshold": st.sampled_from([0.0, 0.3, 0.5, 0.9]),
        "sigma": st.sampled_from([0.1, 0.5, 2.0]),
        "score_threshold": st.sampled_from([0.0, 0.001, 0.1, 0.5]),
        "method": st.sampled_from(["gaussian", "linear"]),
    }
)


@given(data=box_sets(max_n=120), p=params, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_matches_reference(data, p, dtype):
    boxes, scores = data[0].to(dtype), data[1].to(dtype)
    keep, new_scores = nasx.ops.soft_nms(boxes, scores, **p)
    ref_keep, ref_scores = ref.soft_nms(boxes, scores, **p)
    assert torch.equal(keep, ref_keep)
    # exp() may differ by an ulp between libm and torch; linear decay is exact.
    tol = 0 if p["method"] == "linear" else 1e-5
    torch.testing.assert_close(new_scores, ref_scores, rtol=tol, atol=tol)
    assert new_scores.dtype == dtype and bool((new_scores[1:] <= new_scores[:-1]).all())


def test_rules_by_hand():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, s = nasx.ops.soft_nms(boxes, scores, method="gaussian", sigma=0.5)
    # box 1 overlaps box 0 with IoU 0.5 -> 0.8 * exp(-0.25 / 0.5)
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(s, torch.tensor([0.9, 0.7, 0.8 * math.exp(-0.5)]))
    keep, s = nasx.ops.soft_nms(boxes, scores, iou_threshold=0.4, method="linear")
    torch.testing.assert_close(s, torch.tensor([0.9, 0.7, 0.4]))
    keep, s = nasx.ops.soft_nms(boxes, scores, iou_threshold=0.6, method="linear")
    assert keep.tolist() == [0, 1, 2]  # IoU 0.5 <= 0.6: no decay
    keep, _ = nasx.ops.soft_nms(boxes, scores, iou_threshold=0.4, score_threshold=0.5, method="linear")
    assert keep.tolist() == [0, 2]  # 0.4 falls below 0.5


def test_empty_and_nan(device):
    keep, s = nasx.ops.soft_nms(torch.zeros(0, 4, device=device), torch.zeros(0, device=device))
    assert keep.shape == (0,) and s.shape == (0,) and keep.dtype == torch.int64
    boxes = torch.tensor([[0.0, 0, 1, 1]] * 3, device=device)
    keep, _ = nasx.ops.soft_nms(boxes, torch.tensor([float("nan"), 0.5, 0.0001], device=device))
    assert keep.tolist() == [1]  # NaN dropped, 0.0001 < score_threshold dropped


@needs_cuda
@given(data=box_sets(max_n=800), p=params)
def test_cuda_matches_cpu(data, p):
    boxes, scores = data
    keep, s = nasx.ops.soft_nms(boxes, scores, **p)
    ckeep, cs = nasx.ops.soft_nms(boxes.cuda(), scores.cuda(), **p)
    assert torch.equal(ckeep.cpu(), keep)
    torch.testing.assert_close(cs.cpu(), s, rtol=1e-5, atol=1e-6)
