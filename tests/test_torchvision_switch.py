"""nasx.torchvision_ops: torchvision's detection models run unchanged on nasx's kernels.

Tolerances, stated once: on CPU, with and without the switch, eval-mode detections have equal boxes and
labels and scores within 1e-6 relative (they come out identical: every routed op is bit-identical in the
forward pass); training losses agree within 1e-5 relative -- the sampling draws the same random numbers
and the matching is identical, so only the focal loss's rounding (RetinaNet, FCOS) can differ. On CUDA
(not run where no GPU is lent): equal labels, boxes within 1e-4 px, scores within 1e-5 relative, losses
within 1e-4 relative.
"""
import copy
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch

import nasx
import nasx.torchvision_ops as tvo

from boxgen import box_sets
from conftest import needs_cuda
from hypothesis import given
from hypothesis import strategies as st

tv = pytest.importorskip("torchvision")
import torchvision.models.detection as detection  # noqa: E402
import torchvision.models.detection._utils as det_utils  # noqa: E402
import torchvision.ops.boxes as tv_boxes  # noqa: E402

warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)

NUM_CLASSES = 4
SMALL = dict(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, min_size=160, max_size=200)
MODELS = {
    # Fewer proposals than the defaults keep the CPU time low; every code path still runs.
    "fasterrcnn_resnet50_fpn": lambda: detection.fasterrcnn_resnet50_fpn(
        **SMALL, rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=200, rpn_pre_nms_top_n_train=500,
        rpn_post_nms_top_n_train=300, box_batch_size_per_image=128),
    # Random heads start at the focal-loss prior (0.01): low score thresholds so that NMS has work.
    "retinanet_resnet50_fpn": lambda: detection.retinanet_resnet50_fpn(**SMALL, score_thresh=0.005),
    "fcos_resnet50_fpn": lambda: detection.fcos_resnet50_fpn(**SMALL, score_thresh=0.05),
    "ssdlite320_mobilenet_v3_large": lambda: detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES),
}
# The nasx ops each model must reach through the switch (in eval and training together).
EXPECTED_OPS = {
    "fasterrcnn_resnet50_fpn": {"batched_nms", "roi_align", "box_iou", "match_anchors"},
    "retinanet_resnet50_fpn": {"batched_nms", "box_iou", "match_anchors", "sigmoid_focal_loss"},
    "fcos_resnet50_fpn": {"batched_nms", "sigmoid_focal_loss"},
    "ssdlite320_mobilenet_v3_large": {"batched_nms", "box_iou", "match_anchors"},
}
COUNTED = ["nms", "batched_nms", "box_iou", "generalized_box_iou", "roi_align", "deform_conv2d", "sigmoid_focal_loss",
           "match_anchors"]


def _batch(device="cpu"):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 180, 200, generator=g), torch.rand(3, 160, 176, generator=g)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20, 90, 100], [50, 60, 150, 140], [100, 10, 190, 60]]), "labels": torch.tensor([1, 2, 3])},
        {"boxes": torch.tensor([[5.0, 5, 60, 70]]), "labels": torch.tensor([3])},
    ]
    return [i.to(device) for i in images], [{k: v.to(device) for k, v in t.items()} for t in targets]


@pytest.fixture
def op_calls(monkeypatch):
    """Counts the calls of nasx.ops functions (the switch looks them up when routing starts)."""
    calls = dict.fromkeys(COUNTED, 0)
    for name in COUNTED:
        fn = getattr(nasx.ops, name)

        def counted(*args, __fn=fn, __name=name, **kwargs):
            calls[__name] += 1
            return __fn(*args, **kwargs)

        monkeypatch.setattr(nasx.ops, name, counted)
    return calls


def _compare_detections(plain, routed, device):
    assert len(plain) == len(routed)
    for a, b in zip(plain, routed):
        assert len(a["boxes"]) > 0, "no detections: the comparison would be empty"
        assert torch.equal(a["labels"], b["labels"])
        if device == "cpu":
            assert torch.equal(a["boxes"], b["boxes"])
            torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-6, atol=1e-7)
        else:  # CUDA kernels may contract multiply-adds differently: features within a few ulp
            torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-5, atol=1e-6)


def _run_model(name, device):
    torch.manual_seed(0)
    model = MODELS[name]().to(device)
    images, targets = _batch(device)
    model.eval()
    with torch.no_grad():
        plain = model(images)
        with tvo.use_nasx_ops():
            routed = model(images)
    _compare_detections(plain, routed, device)
    # Training: BatchNorm updates its statistics, so each run starts from its own copy.
    model.train()
    twin = copy.deepcopy(model)
    torch.manual_seed(1)
    plain_losses = model(images, targets)
    torch.manual_seed(1)
    with tvo.use_nasx_ops():
        routed_losses = twin(images, targets)
    assert plain_losses.keys() == routed_losses.keys()
    for key, value in plain_losses.items():
        rtol = 1e-5 if device == "cpu" else 1e-4
        torch.testing.assert_close(routed_losses[key], value, rtol=rtol, atol=1e-6, msg=lambda m: f"{key}: {m}")
    return plain_losses


@pytest.mark.parametrize("name", list(MODELS))
def test_detection_model_unchanged_on_nasx_ops(name, op_calls):
    _run_model(name, "cpu")
    reached = {op for op, n in op_calls.items() if n}
    assert EXPECTED_OPS[name] <= reached, f"{name} did not reach {EXPECTED_OPS[name] - reached} through the switch"


@needs_cuda
@pytest.mark.parametrize("name", list(MODELS))
def test_detection_model_unchanged_on_nasx_ops_cuda(name):
    _run_model(name, "cuda")


# -- the switch itself ---------------------------------------------------------------------------
def _snapshot():
    """Every attribute of every loaded torchvision module and of the classes the switch touches."""
    state = {}
    for module_name, module in list(sys.modules.items()):
        if module is not None and (module_name == "torchvision" or module_name.startswith("torchvision.")):
            state[module_name] = dict(vars(module))
    for cls in (det_utils.Matcher, det_utils.SSDMatcher, detection.rpn.RegionProposalNetwork, detection.roi_heads.RoIHeads):
        state[cls.__qualname__] = dict(vars(cls))
    return state


def _assert_same(before, after):
    assert before.keys() <= after.keys()
    for owner, attrs in before.items():
        changed = [k for k in attrs.keys() | after[owner].keys() if attrs.get(k, None) is not after[owner].get(k, None)]
        assert not changed, f"{owner}: {changed} not restored"


def test_routes_the_public_names_and_restores_them_even_on_exception():
    with tvo.use_nasx_ops():  # routing imports torchvision's detection modules: snapshot them all
        pass
    before = _snapshot()
    with pytest.raises(RuntimeError, match="boom"):
        with tvo.use_nasx_ops():
            assert tvo.is_enabled()
            assert tv.ops.nms is nasx.ops.nms and tv.ops.roi_align is nasx.ops.roi_align
            assert tv.ops.deform_conv2d is nasx.ops.deform_conv2d
            assert tv_boxes.batched_nms is tvo.routed_batched_nms and tv.ops.box_iou is tvo.routed_box_iou
            assert tv.ops.poolers.roi_align is nasx.ops.roi_align and detection.roi_heads.roi_align is nasx.ops.roi_align
            assert detection.retinanet.sigmoid_focal_loss is tvo.routed_sigmoid_focal_loss
            assert detection.fcos.sigmoid_focal_loss is tvo.routed_sigmoid_focal_loss
            assert det_utils.Matcher.__call__ is tvo.routed_matcher_call
            raise RuntimeError("boom")
    assert not tvo.is_enabled()
    _assert_same(before, _snapshot())


def test_importing_the_switch_does_not_import_torchvision():
    code = "import sys, nasx, nasx.torchvision_ops; assert 'torchvision' not in sys.modules, 'torchvision imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_nested_blocks_and_the_global_switch():
    before = _snapshot()
    with tvo.use_nasx_ops():
        with tvo.use_nasx_ops():
            assert tvo.is_enabled()
        assert tvo.is_enabled()  # the outer block is still open
        tvo.enable()
    assert tvo.is_enabled()  # enable() outlives the block
    with tvo.use_nasx_ops():
        tvo.disable()
        assert tvo.is_enabled()  # the open block keeps routing until it exits
    assert not tvo.is_enabled()
    tvo.enable()
    tvo.enable()
    tvo.disable()  # not counted: one disable() ends it
    assert not tvo.is_enabled()
    _assert_same(before, _snapshot())


def test_a_model_built_while_routed_is_the_same_as_one_built_outside():
    with tvo.use_nasx_ops():
        torch.manual_seed(0)
        inside = MODELS["fasterrcnn_resnet50_fpn"]()
        assert inside.rpn.box_similarity is tvo.routed_box_iou  # read through the switch
    assert inside.rpn.__dict__["box_similarity"] is tv_boxes.box_iou
    assert inside.rpn.box_similarity is tv_boxes.box_iou and inside.roi_heads.box_similarity is tv_boxes.box_iou


def test_models_built_before_the_switch_match_through_nasx(op_calls):
    """rpn.box_similarity is bound at construction: the switch still routes it (and the Matcher after it)."""
    torch.manual_seed(0)
    model = MODELS["fasterrcnn_resnet50_fpn"]()
    anchors = torch.tensor([[0.0, 0, 50, 50], [10, 10, 60, 60], [100, 100, 150, 150]])
    gt = torch.tensor([[0.0, 0, 50, 52], [90, 95, 140, 150]])
    expected, _ = model.rpn.assign_targets_to_anchors([anchors], [{"boxes": gt}])
    with tvo.use_nasx_ops():
        labels, _ = model.rpn.assign_targets_to_anchors([anchors], [{"boxes": gt}])
    assert op_calls["match_anchors"] == 1 and op_calls["box_iou"] == 1
    assert torch.equal(labels[0], expected[0]) and expected[0].tolist() == [1.0, -1.0, 1.0]


@st.composite
def matching_cases(draw):
    anchors, _ = draw(box_sets(min_n=1, max_n=120))
    gt, _ = draw(box_sets(min_n=1, max_n=12))
    if draw(st.booleans()):  # GTs equal to anchors: IoU ties at 1 and at every other level
        gt = torch.cat([gt, anchors[: draw(st.integers(1, 4))]])
    high = draw(st.sampled_from([0.3, 0.5, 0.7]))
    low = draw(st.sampled_from([t for t in (0.0, 0.3, 0.4, 0.5) if t <= high]))
    return anchors, gt, high, low, draw(st.booleans())


@given(case=matching_cases())
def test_matcher_through_nasx_equals_torchvision(case):
    anchors, gt, high, low, allow_low = case
    for matcher in (det_utils.Matcher(high, low, allow_low), det_utils.SSDMatcher(high)):
        expected = matcher(tv_boxes.box_iou(gt, anchors))
        calls = []
        with tvo.use_nasx_ops():
            original = nasx.ops.match_anchors
            nasx.ops.match_anchors = lambda *a, **k: calls.append(1) or original(*a, **k)
            try:
                got = matcher(tv_boxes.box_iou(gt, anchors))
            finally:
                nasx.ops.match_anchors = original
        assert calls, "the matrix came from the routed box_iou: nasx's match_anchors should have matched it"
        assert torch.equal(got, expected)


def test_matcher_falls_back_to_torchvision_for_other_matrices(op_calls):
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [5, 5, 15, 15]])
    gt = torch.tensor([[0.0, 0, 10, 10], [5, 5, 16, 16]])
    matcher = det_utils.Matcher(0.7, 0.3, allow_low_quality_matches=True)
    with tvo.use_nasx_ops():
        iou = tv_boxes.box_iou(gt, anchors)
        modified = iou.clone()
        iou.mul_(0.5)  # modified in place after box_iou: the recorded boxes no longer describe it
        assert torch.equal(matcher(iou), matcher.__class__.__dict__["__call__"](matcher, iou))
        assert op_calls["match_anchors"] == 0
        expected = det_utils.Matcher(0.7, 0.3, True)
        assert torch.equal(matcher(modified), tvo._tv["Matcher.__call__"](expected, modified))
        assert op_calls["match_anchors"] == 0
        with pytest.raises(ValueError, match="No ground-truth boxes available"):  # torchvision's error
            matcher(tv_boxes.box_iou(gt[:0], anchors))


def test_matcher_record_is_per_thread():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20]])
    gt = torch.tensor([[0.0, 0, 10, 10]])
    with tvo.use_nasx_ops():
        iou = tv_boxes.box_iou(gt, anchors)
        seen = []
        worker = threading.Thread(target=lambda: seen.append(tvo._last_iou.boxes_of(iou)))
        worker.start()
        worker.join()
        assert seen == [None] and tvo._last_iou.boxes_of(iou) is not None


def test_inputs_nasx_does_not_take_go_to_torchvision():
    boxes = torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 5]])
    with tvo.use_nasx_ops():
        # integer boxes and rotated formats
        torch.testing.assert_close(tv.ops.box_iou(boxes.long(), boxes.long()), tvo._tv["box_iou"](boxes.long(), boxes.long()))
        rotated = torch.tensor([[2.0, 2, 4, 4, 0], [3, 3, 4, 4, 30]])
        torch.testing.assert_close(tv.ops.box_iou(rotated, rotated, fmt="cxcywhr"), tvo._tv["box_iou"](rotated, rotated, "cxcywhr"))
        # a gradient through the IoU (nasx's box ops have none)
        b = boxes.clone().requires_grad_()
        tv.ops.generalized_box_iou(b, boxes).sum().backward()
        assert b.grad is not None and b.grad.abs().sum() > 0
        # float category indices; a negative focal exponent
        keep = tv.ops.batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0.0, 1.0]), 0.5)
        assert keep.tolist() == [0, 1]
        x, t = torch.randn(6), torch.rand(6)
        torch.testing.assert_close(tv.ops.sigmoid_focal_loss(x, t, gamma=-0.5), tvo._tv["sigmoid_focal_loss"](x, t, gamma=-0.5))


class _TinyDetectorTail(torch.nn.Module):
    """What a scripted torchvision detector does with the routed ops: IoU + Matcher, RoIAlign, NMS."""

    def __init__(self):
        super().__init__()
        self.matcher = det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)
        self.pool = tv.ops.MultiScaleRoIAlign(["0", "1"], 2, 2)

    def forward(self, features: dict[str, torch.Tensor], gt: torch.Tensor, anchors: torch.Tensor, scores: torch.Tensor):
        matched = self.matcher(tv_boxes.box_iou(gt, anchors))
        pooled = self.pool(features, [anchors], [(64, 64)])
        keep = tv_boxes.batched_nms(anchors, scores, torch.zeros_like(matched), 0.5)
        return matched, pooled, keep


def test_scripting_while_routed_compiles_nasx_ops():
    g = torch.Generator().manual_seed(0)
    features = {"0": torch.rand(1, 3, 16, 16, generator=g), "1": torch.rand(1, 3, 8, 8, generator=g)}
    anchors = torch.cat([torch.rand(30, 2, generator=g) * 40, torch.rand(30, 2, generator=g) * 20 + 41], 1)
    gt, scores = anchors[:3] + 1, torch.rand(30, generator=g)
    module = _TinyDetectorTail()
    expected = module(features, gt, anchors, scores)
    with tvo.use_nasx_ops():
        scripted = torch.jit.script(_TinyDetectorTail())
    graph = str(scripted.forward.graph) + str(scripted.pool.forward.graph)
    got = scripted(features, gt, anchors, scores)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    assert "nasx::" in str(scripted.inlined_graph), "the scripted module should call nasx's kernels"
    assert graph  # compiled
