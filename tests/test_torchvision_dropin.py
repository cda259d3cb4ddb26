"""nasx.ops as a drop-in for torchvision.ops: signatures, box formats, quantized inputs, empty and
edge-case inputs, output dtypes, and what holds for the focal loss -- each compared with torchvision.

What is not equal is asserted as the README's "Differences from torchvision" states it.
"""
import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import nasx

from boxgen import box_sets

tv = pytest.importorskip("torchvision")
warnings.filterwarnings("ignore", message=".*quantize", category=UserWarning)

OPS = ["nms", "batched_nms", "box_iou", "generalized_box_iou", "roi_align", "deform_conv2d", "sigmoid_focal_loss"]


def _exact(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


# -- signatures --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", OPS)
def test_signature_is_torchvisions(name):
    """Same argument names, order and defaults; nasx may add trailing arguments (fmt of generalized_box_iou)."""
    ours = list(inspect.signature(getattr(nasx.ops, name)).parameters.values())
    theirs = list(inspect.signature(getattr(tv.ops, name)).parameters.values())
    assert [(p.name, p.default, p.kind) for p in ours[: len(theirs)]] == [(p.name, p.default, p.kind) for p in theirs]
    assert all(p.default is not inspect.Parameter.empty for p in ours[len(theirs):])


# -- box formats and batched boxes -------------------------------------------------------------
def _format(boxes: torch.Tensor, fmt: str) -> torch.Tensor:
    return tv.ops.box_convert(boxes, "xyxy", fmt) if fmt != "xyxy" else boxes


@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
@given(a=box_sets(max_n=40), b=box_sets(max_n=40))
def test_fmt_matches_torchvision(fmt, a, b):
    """xyxy bit for bit; xywh / cxcywh: nasx's areas come from the corners, torchvision's from w * h,
    so they agree to the rounding of the corners: exactly when those are exact (small integers, halves)."""
    boxes1, boxes2 = _format(a[0].double(), fmt).float(), _format(b[0].double(), fmt).float()
    ours, theirs = nasx.ops.box_iou(boxes1, boxes2, fmt=fmt), tv.ops.box_iou(boxes1, boxes2, fmt=fmt)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    if fmt == "xyxy":
        _exact(ours, theirs)
    else:
        # The corner x + w is rounded once: an error of ulp(x) in a side of length w.
        tol = 2 * torch.finfo(torch.float32).eps * (1 + boxes1[:, :2].abs().max().item() if len(boxes1) else 1)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=tol, equal_nan=True)
        integral1, integral2 = boxes1.round() * 2, boxes2.round() * 2  # even integers: exact halves and corners
        _exact(nasx.ops.box_iou(integral1, integral2, fmt=fmt), tv.ops.box_iou(integral1, integral2, fmt=fmt))


def test_fmt_generalized_box_iou_is_xyxy_of_converted_boxes():
    xyxy = torch.tensor([[0.0, 0, 4, 6], [2, 2, 8, 10], [20, 20, 21, 22]])
    for fmt in ("xywh", "cxcywh"):
        _exact(nasx.ops.generalized_box_iou(_format(xyxy, fmt), _format(xyxy, fmt), fmt=fmt),
               tv.ops.generalized_box_iou(xyxy, xyxy))


def test_unknown_fmt_raises_with_the_choices():
    with pytest.raises(ValueError, match="box_iou: expected fmt 'xyxy', 'xywh' or 'cxcywh', got 'cxcywhr'"):
        nasx.ops.box_iou(torch.zeros(2, 5), torch.zeros(2, 5), fmt="cxcywhr")


@pytest.mark.parametrize("shapes", [((2, 3), (2, 5)), ((2, 1, 3), (4, 5)), ((3,), (2, 1, 4)), ((2, 0), (2, 3)), ((0, 3), (1, 2))])
def test_leading_dims_broadcast_like_torchvision(shapes):
    (*lead1, n), (*lead2, m) = shapes
    g = torch.Generator().manual_seed(0)
    b1, b2 = torch.rand(*lead1, n, 4, generator=g) * 10, torch.rand(*lead2, m, 4, generator=g) * 10
    b1[..., 2:] += b1[..., :2]
    b2[..., 2:] += b2[..., :2]
    for op in ("box_iou", "generalized_box_iou"):
        ours, theirs = getattr(nasx.ops, op)(b1, b2), getattr(tv.ops, op)(b1, b2)
        assert ours.shape == theirs.shape
        _exact(ours, theirs)


# -- quantized inputs ---------------------------------------------------------------------------
QDTYPES = [torch.quint8, torch.qint8, torch.qint32]


@pytest.mark.parametrize("dtype", QDTYPES)
@given(data=box_sets(max_n=80), thr=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]),
       scale=st.sampled_from([0.25, 1.0, 3.0]), zero_point=st.sampled_from([0, 7]))
def test_quantized_nms_matches_torchvision(dtype, data, thr, scale, zero_point):
    boxes, scores = data[0].float(), data[1].float()
    if dtype == torch.qint8:
        boxes, zero_point = boxes - 64, -zero_point
    qboxes = torch.quantize_per_tensor(boxes / 8, scale / 8, zero_point, dtype)  # coordinates up to ~1000 / 8
    qscores = torch.quantize_per_tensor(scores, 0.01, 0 if dtype != torch.qint8 else -3, dtype)
    _exact(nasx.ops.nms(qboxes, qscores, thr), tv.ops.nms(qboxes, qscores, thr))
    # batched_nms: within each category, torchvision's quantized NMS (its own batched_nms shifts
    # coordinates by category, which rounds, and nasx compares categories exactly).
    classes = torch.arange(len(boxes)) % 3
    keep = nasx.ops.batched_nms(qboxes, qscores, classes, thr)
    for c in range(3):
        members = torch.nonzero(classes == c).flatten()
        per_class = members[tv.ops.nms(qboxes[members], qscores[members], thr)]
        _exact(keep[classes[keep] == c], per_class)


@pytest.mark.parametrize("sampling_ratio,aligned", [(-1, False), (2, False), (0, True), (3, True)])
@pytest.mark.parametrize("seed", range(4))
def test_quantized_roi_align_matches_torchvision(seed, sampling_ratio, aligned):
    """Dequantize, pool in float32, requantize with the input's scale and zero point: the same
    integers as torchvision's quantized kernel (which needs quint8 boxes and one image)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 5, 13, 17, generator=g) * 4 - 1
    qx = torch.quantize_per_tensor(x, 0.02 + 0.01 * seed, 10 * seed, torch.quint8)
    xy = torch.rand(9, 2, generator=g) * 14
    rois = torch.cat([torch.zeros(9, 1), xy, xy + torch.rand(9, 2, generator=g) * 10], 1)
    qrois = torch.quantize_per_tensor(rois, 0.125, 0, torch.quint8)
    ours = nasx.ops.roi_align(qx, qrois, (3, 2), 0.8, sampling_ratio, aligned)
    theirs = tv.ops.roi_align(qx, qrois, (3, 2), 0.8, sampling_ratio, aligned)
    assert ours.dtype == theirs.dtype and (ours.q_scale(), ours.q_zero_point()) == (theirs.q_scale(), theirs.q_zero_point())
    _exact(ours.int_repr(), theirs.int_repr())
    # nasx also takes float boxes, a list of boxes and several images (torchvision: quint8 boxes, N = 1).
    _exact(nasx.ops.roi_align(qx, [qrois.dequantize()[:, 1:]], (3, 2), 0.8, sampling_ratio, aligned).int_repr(),
           ours.int_repr())
    q2 = torch.quantize_per_tensor(torch.cat([x, x.flip(0)]), qx.q_scale(), qx.q_zero_point(), torch.quint8)
    exact_rois = qrois.dequantize()
    two = nasx.ops.roi_align(q2, torch.cat([exact_rois, exact_rois + torch.tensor([1.0, 0, 0, 0, 0])]), (3, 2), 0.8,
                             sampling_ratio, aligned)
    _exact(two.int_repr()[:9], ours.int_repr())


def test_quantized_box_iou_is_the_iou_of_the_dequantized_boxes():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 4, 4]])
    q = torch.quantize_per_tensor(boxes, 0.5, 3, torch.quint8)
    _exact(nasx.ops.box_iou(q, q), tv.ops.box_iou(boxes, boxes))


def test_per_channel_quantized_roi_align_input_rejected():
    x = torch.quantize_per_channel(torch.rand(1, 3, 4, 4), torch.tensor([0.1, 0.2, 0.3]), torch.zeros(3, dtype=torch.long),
                                   1, torch.quint8)
    with pytest.raises(ValueError, match=r"roi_align: expected input quantized per tensor \(torch.quantize_per_tensor\)"):
        nasx.ops.roi_align(x, torch.tensor([[0.0, 0, 0, 2, 2]]), 2)


Q = torch.quantize_per_tensor(torch.rand(4, 4), 0.1, 0, torch.quint8)
REJECTED = [
    ("sigmoid_focal_loss", "inputs", lambda: nasx.ops.sigmoid_focal_loss(Q, torch.rand(4, 4))),
    ("deform_conv2d", "input", lambda: nasx.ops.deform_conv2d(Q[None, None], torch.zeros(1, 18, 2, 2), torch.rand(1, 1, 3, 3))),
    ("soft_nms", "boxes", lambda: nasx.ops.soft_nms(Q, torch.rand(4))),
    ("match_anchors", "gt_boxes", lambda: nasx.ops.match_anchors(torch.rand(4, 4), Q, 0.5, 0.4)),
]


@pytest.mark.parametrize("op,name,call", REJECTED, ids=[r[0] for r in REJECTED])
def test_quantized_input_without_a_quantized_peer_is_named(op, name, call):
    with pytest.raises(TypeError, match=rf"{op}: expected {name} to be a floating-point tensor, got a quantized tensor"):
        call()


# -- empty and edge-case inputs -----------------------------------------------------------------
E4, E0 = torch.zeros(0, 4), torch.zeros(0)
_G = torch.Generator().manual_seed(0)
FMAP = torch.rand(2, 3, 10, 12, generator=_G)
DCN_X, DCN_W = torch.rand(1, 2, 7, 7, generator=_G), torch.rand(3, 2, 3, 3, generator=_G)
DCN_OFF1, DCN_OFF2 = torch.randn(1, 18, 5, 5, generator=_G), torch.randn(1, 18, 3, 3, generator=_G)  # stride 1, 2
EDGE_CASES = [
    ("nms, no boxes", lambda m: m.nms(E4, E0, 0.5)),
    ("batched_nms, no boxes", lambda m: m.batched_nms(E4, E0, torch.zeros(0, dtype=torch.long), 0.5)),
    ("batched_nms, no boxes, None scores and idxs", lambda m: m.batched_nms(E4, None, None, 0.5)),
    ("batched_nms, no boxes, cuda-less float64", lambda m: m.batched_nms(E4.double(), None, None, 0.5)),
    ("box_iou, no boxes", lambda m: m.box_iou(E4, torch.rand(3, 4))),
    ("box_iou, none on either side", lambda m: m.box_iou(E4, E4)),
    ("generalized_box_iou, no boxes", lambda m: m.generalized_box_iou(torch.rand(2, 4), E4)),
    ("roi_align, no boxes", lambda m: m.roi_align(FMAP, torch.zeros(0, 5), (2, 3))),
    ("roi_align, list of empty boxes", lambda m: m.roi_align(FMAP, [E4, E4], 2)),
    ("roi_align, list of boxes", lambda m: m.roi_align(FMAP, [torch.tensor([[0.0, 0, 5, 5]]), torch.tensor([[1.0, 2, 9, 7], [3, 3, 3, 3]])], 2)),
    ("roi_align, tuple of boxes", lambda m: m.roi_align(FMAP, (torch.tensor([[0.5, 0, 5, 5]]), E4), [3, 2])),
    ("roi_align, aligned, adaptive sampling", lambda m: m.roi_align(FMAP, torch.tensor([[1.0, 0.3, 0.2, 7.9, 9.1]]), 3, 0.7, 0, True)),
    ("roi_align, negative sampling_ratio", lambda m: m.roi_align(FMAP, torch.tensor([[0.0, -3, -2, 20, 4]]), 2, 1.0, -5, False)),
    ("roi_align, keywords", lambda m: m.roi_align(input=FMAP, boxes=[torch.tensor([[0.0, 0, 5, 5]]), E4], output_size=[2, 2],
                                                   spatial_scale=0.5, sampling_ratio=2, aligned=True)),
    ("deform_conv2d, no images", lambda m: m.deform_conv2d(DCN_X[:0], DCN_OFF1[:0], DCN_W)),
    ("deform_conv2d, int stride", lambda m: m.deform_conv2d(DCN_X, DCN_OFF2, DCN_W, stride=2)),
    ("sigmoid_focal_loss, nothing, none", lambda m: m.sigmoid_focal_loss(E0, E0)),
    ("sigmoid_focal_loss, nothing, sum", lambda m: m.sigmoid_focal_loss(E0, E0, reduction="sum")),
    ("sigmoid_focal_loss, nothing, mean (NaN)", lambda m: m.sigmoid_focal_loss(torch.zeros(0, 80), torch.zeros(0, 80), reduction="mean")),
]


@pytest.mark.parametrize("case,call", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_case_returns_what_torchvision_returns(case, call):
    ours, theirs = call(nasx.ops), call(tv.ops)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape and ours.device == theirs.device
    _exact(ours, theirs)


def test_batched_nms_empty_on_the_boxes_device_and_int64():
    keep = nasx.ops.batched_nms(torch.zeros(0, 4, dtype=torch.float64), None, None, 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,) and keep.device == torch.device("cpu")


def test_output_dtypes_match_torchvision():
    boxes = torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 5]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    for name, args in (("nms", (boxes, scores, 0.5)), ("batched_nms", (boxes, scores, torch.tensor([0, 0]), 0.5)),
                       ("box_iou", (boxes, boxes.float())), ("generalized_box_iou", (boxes.float(), boxes.float()))):
        assert getattr(nasx.ops, name)(*args).dtype == getattr(tv.ops, name)(*args).dtype, name


# -- sigmoid focal loss -------------------------------------------------------------------------
def _logits(n=20000, seed=0, scale=4.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g, dtype=torch.float64) * scale).to(dtype), (torch.rand(n, generator=g) < 0.3).to(dtype)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.5, 1.5), (1.0, 3.0)])
def test_focal_loss_wrapper_adds_nothing_to_the_kernel(alpha, gamma, reduction):
    x, t = _logits()
    _exact(nasx.ops.sigmoid_focal_loss(x, t, alpha, gamma, reduction),
           torch.ops.nasx.sigmoid_focal_loss(x, t, float(alpha), float(gamma), reduction))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.5, 1.5), (1.0, 3.0), (0.0, 1.0)])
def test_focal_loss_agrees_with_torchvision_to_rounding(alpha, gamma, reduction):
    """The README's bound: per element 2e-4 relative (where the loss is tiny) or 1e-6 absolute; the
    reductions 1e-6 relative."""
    x, t = _logits()
    ours, theirs = nasx.ops.sigmoid_focal_loss(x, t, alpha, gamma, reduction), tv.ops.sigmoid_focal_loss(x, t, alpha, gamma, reduction)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    rtol, atol = (2e-4, 1e-6) if reduction == "none" else (1e-6, 0.0)
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol)


def test_focal_loss_bit_identical_to_torchvision():
    x, t = _logits()
    _exact(nasx.ops.sigmoid_focal_loss(x, t), tv.ops.sigmoid_focal_loss(x, t))
    _exact(nasx.ops.sigmoid_focal_loss(x, t, -1.0, 0.0), F.binary_cross_entropy_with_logits(x, t, reduction="none"))


@pytest.mark.parametrize("alpha", [1.5, -0.5, -2.0, 1.0 + 1e-9])
def test_focal_loss_alpha_outside_its_range_raises_as_torchvision(alpha):
    x, t = _logits(8)
    with pytest.raises(ValueError, match=r"expected alpha in \[0, 1\] or -1 \(no weighting\), got"):
        nasx.ops.sigmoid_focal_loss(x, t, alpha)
    with pytest.raises(ValueError):
        tv.ops.sigmoid_focal_loss(x, t, alpha)


def test_focal_loss_gradient_agrees_with_torchvision():
    x, t = _logits(5000, seed=1, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    nasx.ops.sigmoid_focal_loss(xa, t, reduction="sum").backward()
    tv.ops.sigmoid_focal_loss(xb, t, reduction="sum").backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-12)
