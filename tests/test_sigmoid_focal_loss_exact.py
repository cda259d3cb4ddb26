"""sigmoid_focal_loss equals torchvision's bit for bit (reduction="none").

The CPU kernel follows torchvision's formula operation by operation: torch.sigmoid,
torch.log_sigmoid and (for a non-integer gamma) torch.pow come from torch itself, whose
exp / log1p / pow pick SLEEF, MKL or libm per element by build, CPU capability, size and
thread count; the rest is exact arithmetic in torchvision's order. So the elements are
identical, not merely close: 0 ulp, at every position, whatever the size (the sizes
below cross torch's vector widths and parallel grain, where its kernels switch paths).
"""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nasx
from nasx.ops import _reference as ref

from conftest import needs_cuda

PARAMS = [(0.25, 2.0), (0.25, 0.0), (-1.0, 2.0), (-1.0, 0.0), (0.5, 1.0), (0.3, 1.5), (0.9, 0.5), (0.1, 3.0), (0.0, 2.0)]
SIZES = [1, 15, 16, 33, 1000, 32768, 32769, 65536 + 77, 200_003]


def scene(n, dtype, seed, soft):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64) * torch.tensor([0.1, 3.0, 30.0], dtype=torch.float64)[
        torch.randint(0, 3, (n,), generator=g)
    ]
    t = torch.rand(n, generator=g, dtype=torch.float64)
    if not soft:
        t = (t < 0.2).double()
    return x.to(dtype), t.to(dtype)


def assert_bit_identical(ours, theirs):
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    diff = ours != theirs
    assert torch.equal(ours, theirs), (
        f"{int(diff.sum())} of {ours.numel()} elements differ, first at {diff.nonzero()[:5].flatten().tolist()}, "
        f"by up to {float((ours - theirs).abs().max())}"
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha,gamma", PARAMS)
def test_bit_identical_to_torchvision(dtype, alpha, gamma):
    tv = pytest.importorskip("torchvision")
    for n in SIZES:
        x, t = scene(n, dtype, seed=n, soft=n % 2 == 1)
        assert_bit_identical(nasx.ops.sigmoid_focal_loss(x, t, alpha, gamma), tv.ops.sigmoid_focal_loss(x, t, alpha, gamma))


@given(n=st.integers(1, 5000), seed=st.integers(0, 2**31 - 1), soft=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), params=st.sampled_from(PARAMS))
def test_bit_identical_to_the_formula(n, seed, soft, dtype, params):
    """The same check against nasx's reference, which is torchvision's formula written out
    (torch ops only), so that it runs where torchvision is not installed."""
    alpha, gamma = params
    x, t = scene(n, dtype, seed, soft)
    assert_bit_identical(nasx.ops.sigmoid_focal_loss(x, t, alpha, gamma), ref.sigmoid_focal_loss(x, t, alpha, gamma))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gamma_zero_without_alpha_is_bce(dtype):
    x, t = scene(4099, dtype, seed=1, soft=True)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert_bit_identical(nasx.ops.sigmoid_focal_loss(x, t, alpha=-1, gamma=0), bce)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.3, 1.5)])
def test_gradient_consistent_with_autograd_of_the_formula(dtype, alpha, gamma):
    x, t = scene(3000, dtype, seed=2, soft=True)
    xa, ta = x.clone().requires_grad_(), t.clone().requires_grad_()
    xb, tb = x.clone().requires_grad_(), t.clone().requires_grad_()
    nasx.ops.sigmoid_focal_loss(xa, ta, alpha, gamma, "sum").backward()
    ref.sigmoid_focal_loss(xb, tb, alpha, gamma, "sum").backward()
    tol = {} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(xa.grad, xb.grad, **tol)
    torch.testing.assert_close(ta.grad, tb.grad, **tol)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha,gamma", PARAMS)
def test_cuda_bit_identical_to_torchvision_on_cuda(dtype, alpha, gamma):
    """On the GPU both sides use CUDA's expf/log1pf/powf, the same functions."""
    tv = pytest.importorskip("torchvision")
    x, t = scene(100_003, dtype, seed=3, soft=True)
    x, t = x.cuda(), t.cuda()
    assert_bit_identical(nasx.ops.sigmoid_focal_loss(x, t, alpha, gamma), tv.ops.sigmoid_focal_loss(x, t, alpha, gamma))
