import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nasx
from nasx.ops import _reference as ref

from conftest import needs_cuda

REDUCTIONS = ["none", "mean", "sum"]
alphas = st.sampled_from([0.25, 0.5, 0.9, 0.0, -1.0])
gammas = st.sampled_from([0.0, 1.0, 2.0, 1.5, 3.0, 0.5])


@st.composite
def logits_and_labels(draw, max_n=2000, dtype=torch.float64):
    """Logits from tiny to saturated, hard or soft labels, any shape."""
    shape = draw(st.sampled_from([(0,), (1,), (7,), (13, 5), (3, 4, 9)] + [(draw(st.integers(1, max_n)),)]))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.1, 3.0, 30.0]))
    soft = draw(st.booleans())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    if not soft:
        t = (t < 0.3).double()
    return x.to(dtype), t.to(dtype)


@given(data=logits_and_labels(dtype=torch.float32), alpha=alphas, gamma=gammas, reduction=st.sampled_from(REDUCTIONS))
def test_forward_matches_torchvision(data, alpha, gamma, reduction):
    tv = pytest.importorskip("torchvision")
    x, t = data
    ours = nasx.ops.sigmoid_focal_loss(x, t, alpha, gamma, reduction)
    theirs = tv.ops.sigmoid_focal_loss(x, t, alpha, gamma, reduction)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=1e-6, equal_nan=True)


@given(data=logits_and_labels(), alpha=alphas, gamma=gammas, reduction=st.sampled_from(REDUCTIONS))
def test_gradients_match_autograd_of_reference(data, alpha, gamma, reduction):
    """Inputs and (soft) targets gradients equal autograd through the term-by-term formula."""
    x, t = data
    xa, ta = x.clone().requires_grad_(), t.clone().requires_grad_()
    xb, tb = x.clone().requires_grad_(), t.clone().requires_grad_()
    ours = nasx.ops.sigmoid_focal_loss(xa, ta, alpha, gamma, reduction)
    theirs = ref.sigmoid_focal_loss(xb, tb, alpha, gamma, reduction)
    torch.testing.assert_close(ours, theirs, equal_nan=True)
    if x.numel() == 0:
        return
    g = torch.rand_like(theirs)
    ours.backward(g)
    theirs.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, equal_nan=True)
    torch.testing.assert_close(ta.grad, tb.grad, equal_nan=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 1.5), (0.6, 0.0), (0.25, 3.0)])
def test_gradcheck(reduction, alpha, gamma, device):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 5, generator=g, dtype=torch.float64) * 2).to(device).requires_grad_()
    t = torch.rand(6, 5, generator=g, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: nasx.ops.sigmoid_focal_loss(a, b, alpha, gamma, reduction), (x, t))


def test_only_inputs_need_grad_leaves_targets_alone():
    x = torch.randn(10, 3, requires_grad=True)
    t = (torch.rand(10, 3) < 0.5).float()
    nasx.ops.sigmoid_focal_loss(x, t, reduction="mean").backward()
    xb = x.detach().clone().requires_grad_()
    ref.sigmoid_focal_loss(xb, t, reduction="mean").backward()
    torch.testing.assert_close(x.grad, xb.grad)
    assert t.grad is None


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty(reduction, device):
    x = torch.empty(0, 80, device=device, requires_grad=True)
    out = nasx.ops.sigmoid_focal_loss(x, torch.empty(0, 80, device=device), reduction=reduction)
    expected = ref.sigmoid_focal_loss(torch.empty(0, 80), torch.empty(0, 80), reduction=reduction)
    assert out.shape == expected.shape
    torch.testing.assert_close(out.cpu(), expected, equal_nan=True)  # mean of nothing is NaN, as torch
    if reduction != "mean":
        out.sum().backward()
        assert x.grad.shape == x.shape


def test_extreme_logits_stay_finite():
    x = torch.tensor([-200.0, -30.0, 0.0, 30.0, 200.0], requires_grad=True)
    t = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    loss = nasx.ops.sigmoid_focal_loss(x, t)
    xb = x.detach().clone().requires_grad_()
    expected = ref.sigmoid_focal_loss(xb, t)
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    expected.sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, xb.grad)


def test_half_inputs_computed_in_float32():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, generator=g) * 4
    t = (torch.rand(100, generator=g) < 0.5).float()
    out = nasx.ops.sigmoid_focal_loss(x.half(), t.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, ref.sigmoid_focal_loss(x.half().float(), t.half().float()).half())
    xb = x.bfloat16().requires_grad_()
    nasx.ops.sigmoid_focal_loss(xb, t.bfloat16(), reduction="sum").backward()
    assert xb.grad.dtype == torch.bfloat16


CASES = [
    (lambda: nasx.ops.sigmoid_focal_loss(torch.zeros(3), torch.zeros(4)), ValueError,
     "sigmoid_focal_loss: expected targets of the same shape as inputs [3], got shape [4]"),
    (lambda: nasx.ops.sigmoid_focal_loss(torch.zeros(3, dtype=torch.long), torch.zeros(3)), TypeError,
     "sigmoid_focal_loss: expected inputs to be a floating-point tensor"),
    (lambda: nasx.ops.sigmoid_focal_loss(torch.zeros(3), torch.zeros(3, dtype=torch.bool)), TypeError,
     "expected targets to be a floating-point tensor"),
    (lambda: nasx.ops.sigmoid_focal_loss(torch.zeros(3), torch.zeros(3), reduction="avg"), ValueError,
     'expected reduction "none", "mean" or "sum", got "avg"'),
    (lambda: nasx.ops.sigmoid_focal_loss(torch.zeros(3), torch.zeros(3), gamma=-1), ValueError,
     "expected gamma >= 0, got -1"),
    (lambda: nasx.ops.sigmoid_focal_loss(torch.zeros(3), torch.zeros(3), alpha=float("nan")), ValueError,
     "alpha must be a number"),
]


@pytest.mark.parametrize("call,exc,fragment", CASES)
def test_bad_input_message(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_opcheck(reduction, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=g).to(device).requires_grad_()
    t = torch.rand(8, 3, generator=g).to(device).requires_grad_()
    torch.library.opcheck(torch.ops.nasx.sigmoid_focal_loss.default, (x, t, 0.25, 2.0, reduction))
    grad = torch.ones(() if reduction != "none" else (8, 3), device=device)
    torch.library.opcheck(
        torch.ops.nasx.sigmoid_focal_loss_backward.default, (grad, x.detach(), t.detach(), 0.25, 2.0, reduction, True)
    )


def test_compile_fullgraph_with_backward():
    def step(x, t):
        return nasx.ops.sigmoid_focal_loss(x, t, reduction="mean") * 2

    x = torch.randn(32, 4, requires_grad=True)
    t = (torch.rand(32, 4) < 0.2).float()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(x, t)
    loss.backward()
    xb = x.detach().clone().requires_grad_()
    expected = step(xb, t)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(x.grad, xb.grad)


@needs_cuda
@given(data=logits_and_labels(max_n=100_000, dtype=torch.float32), alpha=alphas, gamma=gammas,
       reduction=st.sampled_from(REDUCTIONS))
def test_cuda_matches_cpu(data, alpha, gamma, reduction):
    x, t = data
    xc, xg = x.clone().requires_grad_(), x.cuda().requires_grad_()
    tc, tg = t.clone().requires_grad_(), t.cuda().requires_grad_()
    a = nasx.ops.sigmoid_focal_loss(xc, tc, alpha, gamma, reduction)
    b = nasx.ops.sigmoid_focal_loss(xg, tg, alpha, gamma, reduction)
    torch.testing.assert_close(b.cpu(), a, equal_nan=True)
    if x.numel():
        a.sum().backward()
        b.sum().backward()
        torch.testing.assert_close(xg.grad.cpu(), xc.grad)
        torch.testing.assert_close(tg.grad.cpu(), tc.grad)
