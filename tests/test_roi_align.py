"""roi_align against the pure-torch reference and torchvision: forward, gradient, edge cases."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nasx
from nasx.ops import _reference as ref

from conftest import needs_cuda


def random_case(seed, batch=2, channels=3, height=9, width=11, num_rois=5, scale=0.5, dtype=torch.float64):
    """Feature map and RoIs in image coordinates; boxes reach past every border of the map."""
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(batch, channels, height, width, generator=g, dtype=dtype)
    ext = torch.tensor([width, height], dtype=dtype) / scale
    lo = torch.rand(num_rois, 2, generator=g, dtype=dtype) * (ext * 1.2) - ext * 0.2
    size = torch.rand(num_rois, 2, generator=g, dtype=dtype) * ext * 0.8
    idx = torch.randint(0, batch, (num_rois, 1), generator=g).to(dtype)
    return feat, torch.cat([idx, lo, lo + size], dim=1)


cases = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "batch": st.integers(1, 3),
        "channels": st.integers(1, 4),
        "height": st.integers(1, 10),
        "width": st.integers(1, 10),
        "num_rois": st.integers(0, 5),
        "scale": st.sampled_from([1.0, 0.5, 0.25]),
    }
)
settings_ = st.tuples(
    st.integers(1, 3), st.integers(1, 3), st.sampled_from([-1, 0, 1, 2, 3]), st.booleans()
)


@given(case=cases, setting=settings_)
def test_matches_reference_forward_and_gradient(case, setting):
    ph, pw, sampling_ratio, aligned = setting
    feat, rois = random_case(**case)
    args = ((ph, pw), case["scale"], sampling_ratio, aligned)
    x = feat.clone().requires_grad_()
    out = nasx.ops.roi_align(x, rois, *args)
    x_ref = feat.clone().requires_grad_()
    expected = ref.roi_align(x_ref, rois, *args)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, g)
    grad_ref = torch.autograd.grad(expected, x_ref, g, allow_unused=True)[0] if expected.requires_grad else None
    torch.testing.assert_close(grad, torch.zeros_like(feat) if grad_ref is None else grad_ref, rtol=1e-10, atol=1e-12)


@given(seed=st.integers(0, 2**31 - 1), sampling_ratio=st.sampled_from([-1, 0, 2]), aligned=st.booleans(),
       scale=st.sampled_from([1.0, 0.25, 0.0625]))
def test_bitwise_equal_to_torchvision_cpu(seed, sampling_ratio, aligned, scale):
    """Forward and (deterministic) backward are bit-identical to torchvision's CPU kernels."""
    tv = pytest.importorskip("torchvision")
    feat, rois = random_case(seed, batch=2, channels=5, height=13, width=17, num_rois=20, scale=scale,
                             dtype=torch.float32)
    x1, x2 = feat.clone().requires_grad_(), feat.clone().requires_grad_()
    a = nasx.ops.roi_align(x1, rois, (3, 4), scale, sampling_ratio, aligned)
    b = tv.ops.roi_align(x2, rois, (3, 4), scale, sampling_ratio, aligned)
    assert torch.equal(a, b)
    g = torch.randn_like(a)
    a.backward(g)
    b.backward(g)
    assert torch.equal(x1.grad, x2.grad)


def test_list_of_boxes_like_torchvision():
    tv = pytest.importorskip("torchvision")
    feat, _ = random_case(1, batch=3, dtype=torch.float32)
    g = torch.Generator().manual_seed(2)
    boxes = []
    for k in (4, 0, 3):
        xy = torch.rand(k, 2, generator=g) * 15
        boxes.append(torch.cat([xy, xy + torch.rand(k, 2, generator=g) * 8], 1))
    out = nasx.ops.roi_align(feat, boxes, 2, 0.5, 2, True)
    assert out.shape == (7, 3, 2, 2)
    assert torch.equal(out, tv.ops.roi_align(feat, boxes, 2, 0.5, 2, True))
    assert nasx.ops.roi_align(feat, [], 2).shape == (0, 3, 2, 2)


def test_empty_and_degenerate(device):
    feat = torch.randn(2, 3, 5, 6, device=device, requires_grad=True)
    empty = torch.zeros(0, 5, device=device)
    out = nasx.ops.roi_align(feat, empty, (2, 3))
    assert out.shape == (0, 3, 2, 3)
    out.sum().backward()
    assert torch.equal(feat.grad, torch.zeros_like(feat))
    # Zero-size and inverted boxes: legacy mode samples a 1x1 box, aligned mode samples nothing.
    rois = torch.tensor([[0, 2.0, 2, 2, 2], [1, 4, 3, 1, 1], [1, 50, 50, 60, 60]], device=device)
    for aligned in (False, True):
        expected = ref.roi_align(feat.detach().cpu().double(), rois.cpu().double(), (2, 2), 1.0, -1, aligned)
        got = nasx.ops.roi_align(feat.detach(), rois, (2, 2), 1.0, -1, aligned)
        torch.testing.assert_close(got.cpu().double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(got[1:], torch.zeros_like(got[1:]))  # inverted aligned box, box off the map
    no_channels = torch.zeros(2, 0, 5, 6, device=device)
    assert nasx.ops.roi_align(no_channels, rois, 2).shape == (3, 0, 2, 2)


def test_gradcheck_float64():
    feat, rois = random_case(3, batch=2, channels=2, height=5, width=6, num_rois=3, scale=1.0)
    x = feat.requires_grad_()
    for sampling_ratio, aligned in ((-1, False), (2, True)):
        assert torch.autograd.gradcheck(lambda t: nasx.ops.roi_align(t, rois, (2, 2), 1.0, sampling_ratio, aligned), (x,))


def test_half_precision_computed_in_float32(device):
    feat, rois = random_case(4, dtype=torch.float32)
    feat, rois = feat.to(device), rois.to(device)
    for dtype in (torch.float16, torch.bfloat16):
        out = nasx.ops.roi_align(feat.to(dtype), rois.to(dtype), 2, 0.5, 2)
        assert out.dtype == dtype
        expected = nasx.ops.roi_align(feat.to(dtype).float(), rois.to(dtype).float(), 2, 0.5, 2)
        assert torch.equal(out, expected.to(dtype))


def test_opcheck(device):
    feat, rois = random_case(5, dtype=torch.float32)
    feat, rois = feat.to(device).requires_grad_(), rois.to(device)
    torch.library.opcheck(torch.ops.nasx.roi_align.default, (feat, rois, 0.5, 2, 3, -1, False))
    torch.library.opcheck(torch.ops.nasx.roi_align.default, (feat, rois[:0], 0.5, 2, 2, 2, True))
    grad = torch.randn(rois.shape[0], 3, 2, 3, device=device)
    torch.library.opcheck(torch.ops.nasx._roi_align_backward.default, (grad, rois, 0.5, 2, 3, 2, 3, 9, 11, -1, False))


def test_compile_fullgraph():
    feat, rois = random_case(6, dtype=torch.float32)
    fn = torch.compile(lambda f, r: nasx.ops.roi_align(f, r, 3, 0.5, 2, True).relu(), fullgraph=True, backend="eager")
    assert torch.equal(fn(feat, rois), nasx.ops.roi_align(feat, rois, 3, 0.5, 2, True).relu())


F = torch.zeros(1, 2, 4, 4)
R = torch.tensor([[0.0, 0, 0, 2, 2]])
BAD = [
    (lambda: nasx.ops.roi_align(F[0], R, 2), ValueError, "roi_align: expected input of shape [N, C, H, W], got shape [2, 4, 4]"),
    (lambda: nasx.ops.roi_align(F.long(), R, 2), TypeError, "roi_align: expected input to be a floating-point tensor"),
    (lambda: nasx.ops.roi_align(F, R[:, :4], 2), ValueError, "expected rois of shape [K, 5] (batch index, x1, y1, x2, y2), got shape [1, 4]"),
    (lambda: nasx.ops.roi_align(F, R.long(), 2), TypeError, "roi_align: expected rois to be a floating-point tensor"),
    (lambda: nasx.ops.roi_align(F, R, (0, 2)), ValueError, "roi_align: expected pooled_height > 0, got 0"),
    (lambda: nasx.ops.roi_align(F, R, 2, spatial_scale=0.0), ValueError, "roi_align: expected spatial_scale > 0, got 0"),
    (lambda: nasx.ops.roi_align(F, torch.tensor([[1.0, 0, 0, 2, 2]]), 2), ValueError,
     "roi_align: expected rois[:, 0] to be a batch index in [0, 1), got 1 in row 0"),
    (lambda: nasx.ops.roi_align(F, [torch.zeros(2, 3)], 2), ValueError, "roi_align: expected boxes[0] of shape [K_i, 4]"),
]


@pytest.mark.parametrize("call,exc,fragment", BAD)
def test_bad_input_message(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)


@needs_cuda
def test_cuda_matches_cpu():
    for seed, sampling_ratio, aligned in ((7, -1, False), (8, 2, True), (9, 0, True)):
        feat, rois = random_case(seed, batch=2, channels=8, height=20, width=24, num_rois=40, scale=0.25,
                                 dtype=torch.float32)
        x_cpu, x_gpu = feat.clone().requires_grad_(), feat.cuda().requires_grad_()
        a = nasx.ops.roi_align(x_cpu, rois, (4, 3), 0.25, sampling_ratio, aligned)
        b = nasx.ops.roi_align(x_gpu, rois.cuda(), (4, 3), 0.25, sampling_ratio, aligned)
        torch.testing.assert_close(b.cpu(), a, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(a)
        a.backward(g)
        b.backward(g.cuda())
        torch.testing.assert_close(x_gpu.grad.cpu(), x_cpu.grad, rtol=1e-4, atol=1e-5)


def test_autocast_computes_in_float32_and_keeps_input_dtype():
    feat, rois = random_case(10, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = nasx.ops.roi_align(feat.bfloat16(), rois, 2, 0.5, 2, True)
        same = nasx.ops.roi_align(feat, rois, 2, 0.5, 2, True)
    assert out.dtype == torch.bfloat16 and same.dtype == torch.float32
    assert torch.equal(out, nasx.ops.roi_align(feat.bfloat16().float(), rois, 2, 0.5, 2, True).bfloat16())
