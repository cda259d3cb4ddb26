"""Every nasx.ops wrapper compiles with torch.jit.script and gives what it gives eagerly.

A torchvision model that is scripted must keep scripting once nasx's ops replace torchvision's
(by hand or through nasx.torchvision_ops), so every public op function -- and DeformConv2d as a
module -- is TorchScript-compatible, including the argument forms torchvision's scripted
signatures take (list of boxes, int or pair sizes, fmt, None mask / bias) and quantized inputs.
"""
import warnings

import pytest
import torch

import nasx

warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*quantize", category=UserWarning)


def _boxes(n, seed=0, extent=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * extent
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * extent * 0.4 + 1], 1)


def _scores(n, seed=1):
    return torch.rand(n, generator=torch.Generator().manual_seed(seed))


def _feature_map(n=2, c=3, h=12, w=14, seed=2):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


B, S, IDX = _boxes(60), _scores(60), torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(3))
QB = torch.quantize_per_tensor(B, 0.5, 0, torch.quint8)
QS = torch.quantize_per_tensor(S, 0.01, 0, torch.quint8)
X = _feature_map(n=3)
ROIS = torch.cat([torch.tensor([[0.0], [1.0], [1.0]]), _boxes(3, seed=4, extent=10.0)], 1)
BOX_LIST = [_boxes(2, seed=5, extent=10.0), _boxes(0), _boxes(3, seed=6, extent=10.0)]
G = torch.Generator().manual_seed(7)
DCN_IN, DCN_W = torch.rand(2, 4, 7, 8, generator=G), torch.rand(6, 2, 3, 3, generator=G)  # 2 weight groups
DCN_OFF, DCN_MASK = torch.randn(2, 2 * 2 * 9, 5, 6, generator=G), torch.rand(2, 2 * 9, 5, 6, generator=G)
DCN_BIAS = torch.rand(6, generator=G)
POINTS = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="xy"), -1).reshape(-1, 2) * 16 + 8
STRIDES = torch.full((20,), 16.0)
RANGES = torch.tensor([[0.0, float("inf")]]).expand(20, 2).contiguous()
OBJ = torch.rand(30, 3, generator=G)

# (name, function, arguments) -- several forms per op where the signature has them
CASES = [
    ("box_iou", nasx.ops.box_iou, (B, B[:7])),
    ("box_iou xywh", nasx.ops.box_iou, (B, B[:7], "xywh")),
    ("box_iou cxcywh", nasx.ops.box_iou, (B, B[:7], "cxcywh")),
    ("box_iou batched", nasx.ops.box_iou, (B[:12].reshape(2, 6, 4), B[:5])),
    ("box_iou quantized", nasx.ops.box_iou, (QB, QB[:4])),
    ("generalized_box_iou", nasx.ops.generalized_box_iou, (B[:9], B)),
    ("generalized_box_iou cxcywh", nasx.ops.generalized_box_iou, (B[:9], B, "cxcywh")),
    ("nms", nasx.ops.nms, (B, S, 0.5)),
    ("nms empty", nasx.ops.nms, (B[:0], S[:0], 0.5)),
    ("nms quantized", nasx.ops.nms, (QB, QS, 0.5)),
    ("batched_nms", nasx.ops.batched_nms, (B, S, IDX, 0.5)),
    ("batched_nms empty", nasx.ops.batched_nms, (B[:0], S[:0], IDX[:0], 0.5)),
    ("soft_nms", nasx.ops.soft_nms, (B, S, 0.3, 0.5, 0.001, "linear")),
    ("roi_align", nasx.ops.roi_align, (X, ROIS, 3)),
    ("roi_align list", nasx.ops.roi_align, (X, BOX_LIST, [2, 3], 0.5, 0, True)),
    ("roi_align empty list", nasx.ops.roi_align, (X, [_boxes(0), _boxes(0), _boxes(0)], 2)),
    ("roi_align quantized", nasx.ops.roi_align,
     (torch.quantize_per_tensor(X[:1], 0.01, 4, torch.quint8), ROIS[:1], 2, 1.0, 2)),
    ("deform_conv2d", nasx.ops.deform_conv2d, (DCN_IN, DCN_OFF, DCN_W)),
    ("deform_conv2d v2", nasx.ops.deform_conv2d, (DCN_IN, DCN_OFF, DCN_W, DCN_BIAS, (1, 1), (0, 0), (1, 1), DCN_MASK)),
    ("sigmoid_focal_loss", nasx.ops.sigmoid_focal_loss, (torch.randn(8, 5, generator=G), (torch.rand(8, 5, generator=G) < 0.3).float())),
    ("sigmoid_focal_loss mean", nasx.ops.sigmoid_focal_loss,
     (torch.randn(8, 5, generator=G), torch.rand(8, 5, generator=G), -1.0, 1.5, "mean")),
    ("match_anchors", nasx.ops.match_anchors, (B, B[:4] + 3, 0.7, 0.3, True)),
    ("atss_assign", nasx.ops.atss_assign, (B, [40, 20], B[:3] + 2, 9)),
    ("fcos_targets", nasx.ops.fcos_targets, (POINTS, STRIDES, RANGES, B[:3] * 0.5, 1.5)),
    ("fcos_targets plain", nasx.ops.fcos_targets, (POINTS, STRIDES, RANGES, B[:3] * 0.5, None)),
    ("fcos_targets_batched mask", nasx.ops.fcos_targets_batched,
     (POINTS, STRIDES, RANGES, (B[:6] * 0.5).reshape(2, 3, 4), torch.tensor([[True, True, False], [True, False, False]]))),
    ("fcos_targets_batched counts", nasx.ops.fcos_targets_batched,
     (POINTS, STRIDES, RANGES, (B[:6] * 0.5).reshape(2, 3, 4), torch.tensor([2, 1]))),
    ("non_dominated_sort", nasx.ops.non_dominated_sort, (OBJ,)),
    ("crowding_distance", nasx.ops.crowding_distance, (OBJ, nasx.ops.non_dominated_sort(OBJ))),
    ("hypervolume", nasx.ops.hypervolume, (OBJ, torch.ones(3))),
    ("partial_order_prune", nasx.ops.partial_order_prune,
     (torch.randint(0, 4, (10, 3), generator=G), torch.rand(10, generator=G), torch.randint(0, 4, (6, 3), generator=G),
      torch.rand(6, generator=G), torch.rand(6, generator=G))),
]


def _equal(a, b):
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _equal(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.is_quantized:
            assert (a.q_scale(), a.q_zero_point()) == (b.q_scale(), b.q_zero_point())
            a, b = a.int_repr(), b.int_repr()
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    else:
        assert a == b


@pytest.fixture(scope="module")
def scripted():
    """Each public function scripted once."""
    return {name: torch.jit.script(getattr(nasx.ops, name)) for name in nasx.ops.__all__
            if callable(getattr(nasx.ops, name)) and not isinstance(getattr(nasx.ops, name), type)}


def test_every_public_op_function_is_covered(scripted):
    covered = {case[1].__name__ for case in CASES}
    assert covered == set(scripted), f"not scripted by a case: {set(scripted) - covered}"


@pytest.mark.parametrize("name,fn,args", CASES, ids=[c[0] for c in CASES])
def test_scripted_equals_eager(scripted, name, fn, args):
    _equal(scripted[fn.__name__](*args), fn(*args))


def test_roi_align_scripted_takes_an_int_or_a_pair(scripted):
    run = scripted["roi_align"]
    _equal(run(X, ROIS, 2), nasx.ops.roi_align(X, ROIS, (2, 2)))
    _equal(run(X, ROIS, (2, 3), 0.5), nasx.ops.roi_align(X, ROIS, [2, 3], 0.5))


def test_scripted_errors_keep_their_message(scripted):
    with pytest.raises(Exception, match=r"roi_align: expected boxes\[1\] of shape \[K_i, 4\]"):
        scripted["roi_align"](X, [_boxes(2), torch.zeros(3, 5)], 2)
    with pytest.raises(Exception, match="box_iou: expected fmt 'xyxy', 'xywh' or 'cxcywh', got 'xywhr'"):
        scripted["box_iou"](B, B, "xywhr")
    with pytest.raises(Exception, match=r"expected alpha in \[0, 1\] or -1"):
        scripted["sigmoid_focal_loss"](S, S, 2.0)


def test_deform_conv2d_module_scripts():
    torch.manual_seed(0)
    for modulated, groups in ((True, 1), (False, 4)):
        layer = nasx.ops.DeformConv2d(4, 8, 3, groups=groups, modulated=modulated)
        torch.nn.init.normal_(layer.offset_conv.weight, std=0.1)  # deform: not the regular grid
        _equal(torch.jit.script(layer)(DCN_IN), layer(DCN_IN))


def test_scripted_roi_align_has_a_gradient(scripted):
    x1, x2 = X.clone().requires_grad_(), X.clone().requires_grad_()
    g = torch.rand(3, 3, 2, 2, generator=torch.Generator().manual_seed(8))
    scripted["roi_align"](x1, ROIS, 2).backward(g)
    nasx.ops.roi_align(x2, ROIS, 2).backward(g)
    _equal(x1.grad, x2.grad)
