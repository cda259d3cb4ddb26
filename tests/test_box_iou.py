import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nasx
from nasx.ops import _reference as ref

from boxgen import box_sets

OPS = [(nasx.ops.box_iou, ref.box_iou), (nasx.ops.generalized_box_iou, ref.generalized_box_iou)]


@pytest.mark.parametrize("op,reference", OPS)
@given(a=box_sets(max_n=60), b=box_sets(max_n=60), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_matches_reference(op, reference, a, b, dtype):
    boxes1, boxes2 = a[0].to(dtype), b[0].to(dtype)
    out = op(boxes1, boxes2)
    assert out.shape == (len(boxes1), len(boxes2)) and out.dtype == dtype
    # Same arithmetic in the same order: equal bit for bit, NaN where 0/0.
    torch.testing.assert_close(out, reference(boxes1, boxes2), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("op", [nasx.ops.box_iou, nasx.ops.generalized_box_iou])
@pytest.mark.parametrize("n,m", [(0, 0), (0, 5), (5, 0), (1, 1)])
def test_empty_and_single(op, n, m, device):
    out = op(torch.rand(n, 4, device=device) + torch.tensor([0, 0, 1, 1.0], device=device), torch.zeros(m, 4, device=device))
    assert out.shape == (n, m) and out.device.type == device


def test_known_values():
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    torch.testing.assert_close(nasx.ops.box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0]]))
    # GIoU of disjoint boxes: 0 - (36 - 5) / 36
    torch.testing.assert_close(nasx.ops.generalized_box_iou(a, b), torch.tensor([[1 / 7 - 2 / 9, 1.0, -31 / 36]]))


def test_nan_policy():
    """Documented: NaN coordinates give NaN for their pairs only; 0/0 for two empty boxes gives NaN."""
    a = torch.tensor([[0.0, 0, 1, 1], [float("nan"), 0, 1, 1], [2.0, 2, 2, 2]])
    out = nasx.ops.box_iou(a, a)
    assert out[0, 0] == 1 and torch.isnan(out[1]).all() and torch.isnan(out[:, 1]).all()
    assert torch.isnan(out[2, 2]) and out[0, 2] == 0


def test_half_inputs_computed_in_float32():
    # 300 x 300 = 90000 overflows float16: computing in half would give inf/inf = NaN.
    a = torch.tensor([[0.0, 0, 300, 300]])
    b = torch.tensor([[0.0, 0, 300, 150]])
    out = nasx.ops.box_iou(a.half(), b.half())
    assert out.dtype == torch.float16 and out.item() == 0.5
    assert nasx.ops.box_iou(a.half(), b).dtype == torch.float32  # promotion, as torch does


def test_autocast_returns_float32():
    a = torch.tensor([[0.0, 0, 300, 300]]).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = nasx.ops.box_iou(a, a)
    assert out.dtype == torch.float32 and out.item() == 1.0


@given(a=box_sets(max_n=40), b=box_sets(max_n=40))
def test_matches_torchvision(a, b):
    tv = pytest.importorskip("torchvision")
    torch.testing.assert_close(nasx.ops.box_iou(a[0], b[0]), tv.ops.box_iou(a[0], b[0]), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(
        nasx.ops.generalized_box_iou(a[0], b[0]), tv.ops.generalized_box_iou(a[0], b[0]), rtol=0, atol=0, equal_nan=True
    )
