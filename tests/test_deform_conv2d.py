"""deform_conv2d and DeformConv2d against the pure-torch reference and torchvision."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import nasx
from nasx.ops import _reference as ref

from conftest import needs_cuda


def random_case(seed, batch=2, groups=1, c_per_group=2, out_per_group=2, offset_groups=1, height=7, width=8,
                kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), use_mask=True, use_bias=True,
                spread=2.0, dtype=torch.float64):
    """Inputs of one call; offsets of +-spread pixels push many taps past the map's borders."""
    g = torch.Generator().manual_seed(seed)
    c_in, c_out = groups * c_per_group, groups * out_per_group
    kh, kw = kernel
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    k = kh * kw
    x = torch.randn(batch, c_in, height, width, generator=g, dtype=dtype)
    offset = (torch.rand(batch, 2 * offset_groups * k, out_h, out_w, generator=g, dtype=dtype) * 2 - 1) * spread
    weight = torch.randn(c_out, c_per_group, kh, kw, generator=g, dtype=dtype)
    mask = torch.rand(batch, offset_groups * k, out_h, out_w, generator=g, dtype=dtype) if use_mask else None
    bias = torch.randn(c_out, generator=g, dtype=dtype) if use_bias else None
    return dict(input=x, offset=offset, weight=weight, bias=bias, stride=stride, padding=padding, dilation=dilation,
                mask=mask)


def grads_of(fn, case, names=("input", "offset", "weight", "mask", "bias"), grad=None):
    """Output and gradients of every tensor argument for a fixed random (or the given) output gradient."""
    args = {k: (v.clone().requires_grad_() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    out = fn(**args)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype).to(out.device) if grad is None else grad
    tensors = [args[n] for n in names if isinstance(args[n], torch.Tensor)]
    return [out.detach()] + list(torch.autograd.grad(out, tensors, g))


cases = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "batch": st.integers(1, 2),
        "groups": st.integers(1, 2),
        "c_per_group": st.integers(1, 3),
        "out_per_group": st.integers(1, 2),
        "offset_groups": st.sampled_from([1, 2]),
        "height": st.integers(3, 7),
        "width": st.integers(3, 7),
        "kernel": st.sampled_from([(1, 1), (3, 3), (2, 3)]),
        "stride": st.sampled_from([(1, 1), (2, 1)]),
        "padding": st.sampled_from([(0, 0), (1, 1), (2, 0)]),
        "dilation": st.sampled_from([(1, 1), (2, 1)]),
        "use_mask": st.booleans(),
        "use_bias": st.booleans(),
        "spread": st.sampled_from([0.5, 3.0]),
    }
)


def _fits(case):
    """Offset groups divide the channels and the output is not empty."""
    c_in = case["groups"] * case["c_per_group"]
    out = [(size + 2 * pad - dil * (k - 1) - 1) // stride + 1 for size, pad, dil, k, stride in zip(
        (case["height"], case["width"]), case["padding"], case["dilation"], case["kernel"], case["stride"])]
    return c_in % case["offset_groups"] == 0 and min(out) > 0


@given(case=cases.filter(_fits))
def test_matches_reference_with_gradients(case):
    args = random_case(**case)
    got = grads_of(nasx.ops.deform_conv2d, args)
    expected = grads_of(ref.deform_conv2d, args)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


TV_CASES = {
    "dense v1": dict(use_mask=False),
    "dense v2": dict(),
    "weight groups": dict(groups=2, c_per_group=3, out_per_group=2),
    "offset groups": dict(c_per_group=4, offset_groups=2),
    "stride pad dilation": dict(stride=(2, 1), padding=(2, 1), dilation=(2, 1), height=9),
    "depthwise": dict(groups=4, c_per_group=1, out_per_group=1, offset_groups=2),
    "depthwise v1 multiplier": dict(groups=3, c_per_group=1, out_per_group=2, use_mask=False),
    "large offsets": dict(spread=6.0),
}


@pytest.mark.parametrize("name", list(TV_CASES))
def test_matches_torchvision(name):
    tv = pytest.importorskip("torchvision")
    args = random_case(5, dtype=torch.float32, **TV_CASES[name])
    got = grads_of(nasx.ops.deform_conv2d, args)
    expected = grads_of(tv.ops.deform_conv2d, args)
    for what, a, b in zip(("output", "input", "offset", "weight", "mask", "bias"), got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}, {what}: {m}")


@pytest.mark.parametrize("name", ["dense v2", "depthwise"])
def test_gradcheck_float64(name):
    case = random_case(7, batch=1, height=4, width=4, spread=1.5, **dict(TV_CASES[name], c_per_group=1 if name == "depthwise" else 2, groups=2))
    names = [k for k in ("input", "offset", "weight", "mask", "bias") if case[k] is not None]
    rest = {k: v for k, v in case.items() if k not in names}

    def fn(*tensors):
        return nasx.ops.deform_conv2d(**dict(zip(names, tensors)), **rest)

    assert torch.autograd.gradcheck(fn, tuple(case[k].requires_grad_() for k in names))


def test_cpu_backward_deterministic_across_thread_counts():
    case = random_case(9, batch=2, groups=1, c_per_group=40, out_per_group=3, height=10, width=9, dtype=torch.float32)
    dw = random_case(9, batch=2, groups=40, c_per_group=1, out_per_group=1, height=10, width=9, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        for args in (case, dw):
            torch.set_num_threads(1)
            one = grads_of(nasx.ops.deform_conv2d, args)
            torch.set_num_threads(max(2, threads))
            many = grads_of(nasx.ops.deform_conv2d, args)
            assert all(torch.equal(a, b) for a, b in zip(one[1:], many[1:]))
    finally:
        torch.set_num_threads(threads)


def test_empty_and_degenerate(device):
    case = random_case(3, batch=0)
    case = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    out = nasx.ops.deform_conv2d(**case)
    assert out.shape == (0, 2, 7, 8)
    grads = grads_of(nasx.ops.deform_conv2d, case)
    assert all(g.numel() == 0 or not g.any() for g in grads[1:4])
    # Zero offsets and no mask: an ordinary convolution.
    case = random_case(4, dtype=torch.float64, use_mask=False)
    case = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    case["offset"] = torch.zeros_like(case["offset"])
    torch.testing.assert_close(nasx.ops.deform_conv2d(**case),
                               F.conv2d(case["input"], case["weight"], case["bias"], 1, 1), rtol=1e-12, atol=1e-12)
    # Every tap far outside the map, or a NaN offset: zero samples, output = bias.
    for fill in (100.0, float("nan")):
        far = dict(case, offset=torch.full_like(case["offset"], fill))
        out = nasx.ops.deform_conv2d(**far)
        assert torch.equal(out, case["bias"][None, :, None, None].expand_as(out))


def test_half_precision_computed_in_float32(device):
    case = random_case(6, dtype=torch.float32)
    case = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    half = {k: (v.half() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    out = nasx.ops.deform_conv2d(**half)
    assert out.dtype == torch.float16
    expected = nasx.ops.deform_conv2d(**{k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in half.items()})
    assert torch.equal(out, expected.half())


def _op_args(case):
    return (case["input"], case["weight"], case["offset"], case["mask"], case["bias"], *case["stride"],
            *case["padding"], *case["dilation"])


@pytest.mark.parametrize("name", ["dense v2", "depthwise v1 multiplier"])
def test_opcheck(name, device):
    case = random_case(8, dtype=torch.float32, **TV_CASES[name])
    case = {k: (v.to(device).requires_grad_() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    torch.library.opcheck(torch.ops.nasx.deform_conv2d.default, _op_args(case))
    grad = torch.randn(nasx.ops.deform_conv2d(**case).shape, device=device)
    bwd_args = (grad,) + _op_args(case)[:4] + _op_args(case)[5:]
    torch.library.opcheck(torch.ops.nasx._deform_conv2d_backward.default, tuple(
        a.detach() if isinstance(a, torch.Tensor) else a for a in bwd_args))


def test_compile_fullgraph_module():
    layer = nasx.ops.DeformConv2d(4, 6, 3, groups=2, offset_groups=2)
    x = torch.randn(2, 4, 9, 9)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    assert torch.equal(compiled(x), layer(x))


def test_module_starts_as_plain_convolution_and_learns_offsets():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 10, 11)
    for groups in (1, 6):
        v1 = nasx.ops.DeformConv2d(6, 12, 3, stride=2, groups=groups, modulated=False)
        plain = F.conv2d(x, v1.weight, v1.bias, stride=2, padding=1, groups=groups)
        torch.testing.assert_close(v1(x), plain, rtol=1e-5, atol=1e-5)
        v2 = nasx.ops.DeformConv2d(6, 6, 3, groups=groups, bias=False)
        torch.testing.assert_close(v2(x), 0.5 * F.conv2d(x, v2.weight, padding=1, groups=groups), rtol=1e-5, atol=1e-5)
        v2(x).square().mean().backward()
        assert v2.offset_conv.weight.grad.abs().sum() > 0 and v2.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="DeformConv2d: expected in_channels \\(6\\) to be a multiple of offset_groups \\(4\\)"):
        nasx.ops.DeformConv2d(6, 6, offset_groups=4)


C = random_case(0, dtype=torch.float32)
BAD = [
    (lambda: nasx.ops.deform_conv2d(C["input"][0], C["offset"], C["weight"]), ValueError,
     "deform_conv2d: expected input of shape [N, C_in, H, W], got shape [2, 7, 8]"),
    (lambda: nasx.ops.deform_conv2d(C["input"].long(), C["offset"], C["weight"]), TypeError,
     "deform_conv2d: expected input to be a floating-point tensor"),
    (lambda: nasx.ops.deform_conv2d(C["input"], C["offset"][:, :5], C["weight"], padding=1), ValueError,
     "deform_conv2d: expected offset of shape [2, 2 * offset_groups * 3 * 3, 7, 8], got shape [2, 5, 7, 8]"),
    (lambda: nasx.ops.deform_conv2d(C["input"], C["offset"], C["weight"][:, :, :, :0], padding=1), ValueError,
     "expected a kernel of at least 1 x 1"),
    (lambda: nasx.ops.deform_conv2d(C["input"], C["offset"], torch.zeros(3, 3, 3, 3), padding=1), ValueError,
     "deform_conv2d: expected input channels (2) to be a multiple of weight.size(1) (3)"),
    (lambda: nasx.ops.deform_conv2d(C["input"], C["offset"], C["weight"], padding=1, mask=C["mask"][:, :4]), ValueError,
     "deform_conv2d: expected mask of shape [2, 9, 7, 8] (offset_groups * kH * kW channels), got shape [2, 4, 7, 8]"),
    (lambda: nasx.ops.deform_conv2d(C["input"], C["offset"], C["weight"], torch.zeros(3), padding=1), ValueError,
     "deform_conv2d: expected bias of shape [2], got shape [3]"),
    (lambda: nasx.ops.deform_conv2d(C["input"], C["offset"], C["weight"], padding=1, stride=0), ValueError,
     "deform_conv2d: expected stride_h > 0, got 0"),
    (lambda: nasx.ops.deform_conv2d(C["input"], C["offset"], C["weight"], padding=-1), ValueError,
     "deform_conv2d: expected padding >= 0, got (-1, -1)"),
    (lambda: nasx.ops.deform_conv2d(C["input"][:, :, :1, :1], C["offset"], C["weight"]), ValueError,
     "deform_conv2d: the output would be empty: input of 1 x 1 with padding (0, 0) is smaller than the dilated kernel of 3 x 3"),
    (lambda: nasx.ops.deform_conv2d(torch.zeros(2, 3, 7, 8), torch.zeros(2, 36, 7, 8), torch.zeros(3, 3, 3, 3), padding=1),
     ValueError, "deform_conv2d: expected input channels (3) to be a multiple of offset_groups (2)"),
]


@pytest.mark.parametrize("call,exc,fragment", BAD)
def test_bad_input_message(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)


@needs_cuda
@pytest.mark.parametrize("name", list(TV_CASES))
def test_cuda_matches_cpu(name):
    case = random_case(11, batch=3, dtype=torch.float32, height=12, width=13, **TV_CASES[name])
    on_gpu = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    for a, b in zip(grads_of(nasx.ops.deform_conv2d, on_gpu), grads_of(nasx.ops.deform_conv2d, case)):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)


@needs_cuda
def test_cuda_64bit_indexing():
    """An input of more than 2^31 elements: offsets into it need 64-bit indices."""
    if torch.cuda.get_device_properties(0).total_memory < 40 * 2**30:
        pytest.skip("needs a GPU with 40 GiB")
    case = random_case(12, batch=1, c_per_group=64, out_per_group=1, height=64, width=64, dtype=torch.float32)
    big = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    for k in ("input", "offset", "mask"):
        big[k] = big[k].expand(9000, *big[k].shape[1:]).contiguous()  # input: 2.36e9 elements
    out = nasx.ops.deform_conv2d(**big)
    torch.testing.assert_close(out[-1:].cpu(), nasx.ops.deform_conv2d(**case), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["dense v2", "depthwise"])
def test_batch_split_into_chunks_matches_per_image(name):
    """8 images of 16 x 128 x 128 exceed the CPU kernels' per-chunk buffer budget, so they
    run in several chunks; every image must come out as when computed alone."""
    shape = dict(groups=1, c_per_group=16, out_per_group=4) if name == "dense v2" else dict(groups=16, c_per_group=1, out_per_group=1)
    case = random_case(13, batch=8, height=128, width=128, dtype=torch.float32, **shape)
    grad = torch.randn(8, case["weight"].shape[0], 128, 128, generator=torch.Generator().manual_seed(2))
    batched = grads_of(nasx.ops.deform_conv2d, case, grad=grad)
    singles = [grads_of(nasx.ops.deform_conv2d, {k: (v[i:i + 1] if k in ("input", "offset", "mask") else v)
                                                  for k, v in case.items()}, grad=grad[i:i + 1]) for i in range(8)]
    for j in (0, 1, 2, 4):  # output, input, offset, mask gradients: per image
        torch.testing.assert_close(batched[j], torch.cat([s[j] for s in singles]), rtol=1e-4, atol=1e-4)
    for j in (3, 5):  # weight and bias gradients: summed over images
        torch.testing.assert_close(batched[j], sum(s[j] for s in singles), rtol=1e-4, atol=1e-3)


def test_autocast_computes_in_float32_and_keeps_input_dtype():
    case = random_case(14, dtype=torch.float32)
    bf16 = dict(case, input=case["input"].bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = nasx.ops.deform_conv2d(**bf16)
    assert out.dtype == torch.bfloat16
    expected = nasx.ops.deform_conv2d(**dict(case, input=case["input"].bfloat16().float()))
    assert torch.equal(out, expected.bfloat16())
    x = case["input"].clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nasx.ops.deform_conv2d(**dict(case, input=x)).sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
