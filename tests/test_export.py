"""ONNX export: every detector kind nasx builds, exported and run by ONNX Runtime, gives PyTorch's
detections; nasx's ops become standard ONNX ops; what cannot be exported says why.

Tolerance: ONNX Runtime's detections equal PyTorch's one to one (same count, same labels), with
scores and box coordinates (relative to the coordinate, at least 1 px) within TOL = 1e-4, or
TOL_DEFORM = 1e-3 through deformable convolutions. Measured on these models: 3e-8 to 2e-5 without
deformable convs (NAS-EOD's the largest); 3e-5 through the searched NAS-FCOS decoder here, 2e-4 at
other sizes, 5e-4 through the published all-deformable decoder with large offsets (each DeformConv's
float32 bilinear sums, in another order, grow over a dozen layers and through exp() in the box
decoding). Detections of exactly equal score may be listed in either order, so they are paired by
a minimum-cost matching (detection_difference). The random models are spread where a random head
puts every score at one value (see tiny): rounding would otherwise decide between near-equal scores.
Time: about 85 s on a shared 2-core machine (each export is 5-20 s of CPU).
"""
import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from nasx.cli import main  # noqa: E402
from nasx.export import ExportError, OnnxDetector, export_onnx, register_export_graph  # noqa: E402
from nasx.export.graphs import EXPORT_GRAPHS  # noqa: E402
from nasx.export.priors import anchors, default_boxes, fcos_points  # noqa: E402
from nasx.export.runtime import detection_difference, ort_session  # noqa: E402
from nasx.export.translations import translation_table  # noqa: E402
from nasx.ops import batched_nms, deform_conv2d, nms, roi_align, soft_nms  # noqa: E402
from nasx.spaces.detectors import build_detector, build_from_spec  # noqa: E402
from nasx.spaces.nas_eod import NasEodSpace  # noqa: E402
from nasx.train import save_checkpoint  # noqa: E402

TOL, TOL_DEFORM = 1e-4, 1e-3
RESIDUAL = "basicblock_8_1-2-2-2"  # a block per stage: export time grows with the graph
# A NAS-FCOS decoder as the search writes them (the published one, all deformable, exports the same way
# and is checked by hand in the report; this smaller one keeps the test quick).
SEARCHED_DECODER = ("[[[2,1,skip,skip,sum],[3,0,skip,skip,sum],[3,3,deform3x3,skip,sum],[4,4,skip,skip,sum],"
                    "[2,2,skip,skip,sum],[5,5,sep3x3,skip,sum],[6,6,skip,skip,sum]],"
                    "[deform3x3,[1,1,skip,skip,sum],[4,4,sep3x3,skip,sum],[7,7,skip,skip,sum],"
                    "[10,10,skip,skip,sum],[13,13,skip,skip,sum]],0]")
# An adapted MobileNetV2-style trunk as the network-adaptation search derives them: mixed kernels, SE.
ADAPTED = "mb8_c8s1:k3e1-c16s2:k5e3-c16s2:k7e3se-c24s2:k3e6,k5e3-c32s2:k5e6_64"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny graphs: threads only add contention on a shared machine
    yield
    torch.set_num_threads(threads)


def tiny(kind: str) -> tuple[nn.Module, tuple[int, int]]:
    """A small random detector of each kind and an input size it is exported at."""
    torch.manual_seed(0)
    two_stage = dict(backbone=RESIDUAL, num_classes=3, fpn_channels=16, fc_channels=32)
    if kind == "fcos":
        # GN in the head spreads a random model's scores; without it they all sit near the prior (0.07),
        # where 1e-7 of rounding reorders near-ties and a different 100th detection makes the cut.
        model, size = build_detector("fcos", backbone=RESIDUAL, num_classes=3, fpn_channels=16, head_convs=1), (64, 96)
    elif kind == "nas_fcos":  # a searched decoder with deformable convs in its FPN and (shared) head
        model, size = build_detector("nas_fcos", backbone=RESIDUAL, num_classes=3, fpn_channels=16,
                                     arch=SEARCHED_DECODER), (64, 64)
        for m in model.modules():  # offsets away from zero, so the deformable sampling matters
            if hasattr(m, "offset_conv"):
                nn.init.normal_(m.offset_conv.weight, std=0.5)
    elif kind == "nas_eod":  # a RetinaNet on a searched MBConv backbone and FPNLite neck, separable head
        space = NasEodSpace(width=0.25, input_size=(64, 96), neck_widths=(64,))
        spec, size = space.spec(space.sample(np.random.default_rng(0)))
        model = build_from_spec({**spec, "num_classes": 3, "head_convs": 1})
        for m in model.head.modules():  # a random head scores every anchor near its prior: spread them as training
            if isinstance(m, nn.Conv2d):  # would, or 1e-7 of rounding reorders near-ties at the 100th detection
                nn.init.normal_(m.weight, std=0.3)
    elif kind == "ssdlite_adapted":
        model, size = build_detector("ssdlite", backbone=ADAPTED, num_classes=3,
                                     extra_channels=(32, 32, 16, 16)), (96, 96)
    elif kind == "sm_nas_faster":  # SM-NAS E0's layout: SM-NAS stem, GN + WS, FPN on P2-P5, RPN, two-FC head
        model, size = build_detector("faster_rcnn", **{**two_stage, "norm": "gn_ws"}, stem="sm_nas",
                                     fpn_levels=(2, 5)), (64, 96)
    elif kind == "cascade_ga":  # SM-NAS E4's layout (a cascade on a guided-anchoring RPN), two stages here
        model, size = build_detector("cascade_rcnn", **two_stage, rpn="ga", cascade_stages=2), (64, 96)
        # GA-RPN starts with every cell's centre probability at its 0.01 filter threshold: spread the location
        # and objectness branches as training would, or 1e-7 of rounding decides which cells pass.
        for conv in (model.rpn.head.conv_loc, model.rpn.head.conv_cls):
            nn.init.normal_(conv.weight, std=1.0)
    else:
        raise ValueError(kind)
    return model.eval(), size


def images(size, batch=1, seed=1):
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def assert_same_detections(exported, model, x, tol=TOL):
    out = OnnxDetector(exported)(x)
    with torch.no_grad():
        ref = model(x)
    assert len(out) == len(ref) == x.shape[0]
    for o, r in zip(out, ref):
        assert r["boxes"].shape[0] > 0, "the comparison needs detections"
        assert detection_difference(o, r) <= tol, (o["boxes"].shape, r["boxes"].shape, detection_difference(o, r))


# -- translations and priors ---------------------------------------------------------------------
class _Ops(nn.Module):
    def forward(self, x, offset, weight, bias, mask, rois, boxes, scores, idxs):
        return (deform_conv2d(x, offset, weight, bias, 1, 1, 1, mask),
                deform_conv2d(x, offset[:, :18], weight[:, :2], None, 1, 1, 1),        # groups 2, no mask/bias
                roi_align(x, rois, 3, 0.5, 2, False), roi_align(x, rois, (2, 3), 0.5, -1, True),
                nms(boxes, scores, 0.5), batched_nms(boxes, scores, idxs, 0.4))


def test_nasx_ops_become_standard_onnx_ops():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 12
    boxes = torch.cat([xy, xy + torch.rand(60, 2, generator=g) * 8 + 0.5], 1)
    scores = torch.randint(0, 6, (60,), generator=g).float() / 5   # many exact ties: nasx's order must hold
    scores[3], scores[17] = float("nan"), float("-inf")            # NaN never kept; -inf kept, last
    args = (torch.randn(1, 4, 9, 9, generator=g), torch.randn(1, 36, 9, 9, generator=g) * 3,
            torch.randn(6, 4, 3, 3, generator=g), torch.randn(6, generator=g), torch.rand(1, 18, 9, 9, generator=g),
            torch.cat([torch.zeros(7, 1), boxes[:7]], 1), boxes, scores, torch.randint(-2, 3, (60,), generator=g))
    program = torch.onnx.export(_Ops().eval(), args, dynamo=True, verbose=False, optimize=False,
                                custom_translation_table=translation_table())
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    assert {"DeformConv", "RoiAlign", "NonMaxSuppression"} <= {n.op_type for n in proto.graph.node}
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)   # no custom domain left
    session = ort_session(proto)
    got = session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)})
    for ours, theirs in zip(got, _Ops()(*args)):
        if theirs.dtype == torch.int64:
            assert torch.equal(torch.from_numpy(ours), theirs)            # NMS order: by score, ties by index
        else:
            torch.testing.assert_close(torch.from_numpy(ours), theirs, atol=TOL, rtol=0)


def test_priors_equal_the_generators_at_any_size():
    fcos, _ = tiny("fcos")
    retina = build_detector("retinanet", backbone=RESIDUAL, num_classes=3, fpn_channels=16)
    ssd, _ = tiny("ssdlite_adapted")
    for h, w in [(37, 50), (8, 3), (1, 1)]:
        sizes = [(-(-h // 2 ** k), -(-w // 2 ** k)) for k in range(5)]
        for ours, theirs in zip(anchors(retina.anchor_generator, sizes, "cpu"), retina.anchor_generator(sizes)):
            assert torch.equal(ours, theirs)
        points, _, _ = fcos.locations(sizes, "cpu")
        assert torch.equal(torch.cat(fcos_points(sizes, fcos.strides, "cpu")), points)
        ssd_sizes = [(-(-h // 2 ** k), -(-w // 2 ** k)) for k in range(6)]
        for ours, theirs in zip(default_boxes(ssd.box_generator, ssd_sizes, (h * 16, w * 16), "cpu"),
                                ssd.box_generator(ssd_sizes, (h * 16, w * 16))):
            assert torch.equal(ours, theirs)


# -- every detector kind -------------------------------------------------------------------------
# RetinaNet itself is exported in the CLI test.
KINDS = ["fcos", "nas_fcos", "nas_eod", "ssdlite_adapted", "sm_nas_faster", "cascade_ga"]
# Exported with a symbolic batch, height and width: checked at other sizes and batches too
# (50 x 70: no stride divides it).
DYNAMIC = {"fcos": [(2, 96, 128), (1, 50, 70)], "sm_nas_faster": [(1, 96, 128), (3, 80, 64)]}
BATCH = {"nas_eod": 2, "cascade_ga": 2}  # a static batch of two


@pytest.mark.parametrize("kind", KINDS)
def test_detector_exports_with_postprocessing_and_matches_pytorch(kind):
    model, size = tiny(kind)
    batch = BATCH.get(kind, 1)
    # optimize=False saves export time; the optimizer (on by default) runs in the CLI test.
    exported = export_onnx(model, image_size=size, batch=batch, dynamic=kind in DYNAMIC,
                           optimize=False)  # onnx.checker (full check) ran inside
    assert exported.output_names == ["boxes", "scores", "labels", "batch_index"] and exported.opset == 20
    ops = {n.op_type for n in exported.proto.graph.node}
    assert "NonMaxSuppression" in ops
    assert ("RoiAlign" in ops) == (kind in ("sm_nas_faster", "cascade_ga"))
    assert ("DeformConv" in ops) == (kind in ("nas_fcos", "cascade_ga"))
    assert not model.training
    dims = [d.dim_value for d in exported.proto.graph.input[0].type.tensor_type.shape.dim]
    if kind in DYNAMIC:
        assert exported.dynamic == {0: "batch", 2: "height", 3: "width"} and dims == [0, 3, 0, 0]  # 0: symbolic
        names = [d.dim_param for d in exported.proto.graph.input[0].type.tensor_type.shape.dim]
        assert names == ["batch", "", "height", "width"]
    else:
        assert exported.dynamic == {} and dims == [batch, 3, *size]
    tol = TOL_DEFORM if "DeformConv" in ops else TOL
    for i, (b, h, w) in enumerate([(batch, *size), *DYNAMIC.get(kind, [])]):
        assert_same_detections(exported, model, images((h, w), b, seed=i), tol)


def test_raw_head_outputs():
    model, size = tiny("fcos")
    exported = export_onnx(model, image_size=size, batch=3, postprocess=False, optimize=False)
    assert exported.output_names[:2] == ["cls_logits_0", "cls_logits_1"] and len(exported.output_names) == 15
    assert "NonMaxSuppression" not in {n.op_type for n in exported.proto.graph.node}
    x = images(size, batch=3)
    out = OnnxDetector(exported)(x)
    with torch.no_grad():
        logits, box_reg, ctr = model.head(list(model.neck(model.backbone(x)).values()))
    for name, theirs in zip(exported.output_names, [*logits, *box_reg, *ctr]):
        torch.testing.assert_close(out[name], theirs, atol=TOL, rtol=0)


def test_two_stage_raw_is_the_dense_part():
    model, size = tiny("sm_nas_faster")
    exported = export_onnx(model.train(), image_size=size, postprocess=False, optimize=False)
    assert model.training  # exported in eval mode, handed back in its own
    model.eval()
    assert exported.output_names == ([f"rpn_objectness_p{k}" for k in (3, 4, 5, 6)] +
                                     [f"rpn_deltas_p{k}" for k in (3, 4, 5, 6)] +
                                     [f"features_p{k}" for k in (3, 4, 5)])
    x = images(size)
    out = OnnxDetector(exported)(x)
    with torch.no_grad():
        levels = model.levels(x)
        objectness, deltas = model.rpn.head(list(levels.values()))
    torch.testing.assert_close(out["rpn_deltas_p4"], deltas[1], atol=TOL, rtol=0)
    torch.testing.assert_close(out["features_p5"], levels["p5"], atol=TOL, rtol=0)


# -- any other detector: the generic path, and what cannot be exported ------------------------------
class _ToyNeck(nn.Module):
    def forward(self, x):
        return {"p3": x}


class _ToyHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 5, 1)

    def forward(self, levels):
        return [self.conv(x) for x in levels]


class _Toy(nn.Module):
    """A detector nasx has no graph for: one box per stride-4 cell, NMS (or Soft-NMS), eval-mode dicts."""

    def __init__(self, suppress="nms", branch=False):
        super().__init__()
        self.backbone, self.neck, self.head = nn.Conv2d(3, 8, 3, stride=4, padding=1), _ToyNeck(), _ToyHead()
        self.suppress, self.branch = suppress, branch

    def forward(self, images):
        out = self.head(list(self.neck(torch.relu(self.backbone(images))).values()))[0]   # (B, 5, h, w)
        cell = torch.arange(out.shape[2] * out.shape[3])
        centre = torch.stack([cell % out.shape[3], cell // out.shape[3]], 1) * 4.0 + 2   # (h * w, 2)
        results = []
        for o in out:
            o = o.flatten(1).t()                                                            # (h * w, 5)
            boxes = torch.cat([centre - o[:, 1:3].exp() * 4, centre + o[:, 3:5].exp() * 4], 1)
            scores = o[:, 0].sigmoid()
            if self.suppress == "soft":
                keep, scores = soft_nms(boxes, scores)
            else:
                keep = nms(boxes, scores, 0.3)
                if self.branch and keep.numel() > 5:  # a decision on the count: no graph can hold it
                    keep = keep[:5]
                scores = scores[keep]
            results.append({"boxes": boxes[keep], "scores": scores, "labels": torch.zeros_like(keep)})
        return results


def test_other_detectors_export_through_their_own_forward():
    model = _Toy().eval()
    exported = export_onnx(model, image_size=(32, 32), optimize=False)
    assert_same_detections(exported, model, images((32, 32)))
    raw = export_onnx(model, image_size=(32, 32), postprocess=False, optimize=False)
    assert raw.output_names == ["output_0"]
    assert not {"NonMaxSuppression", "Sigmoid"} & {n.op_type for n in raw.proto.graph.node}


class _ForwardOnly(nn.Module):
    postprocess, output_names = True, None

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images)[0]["scores"]


def test_registered_graphs_apply_to_subclasses():
    class MyToy(_Toy):
        pass

    calls = []
    register_export_graph(_Toy, lambda model, post: calls.append(post) or _ForwardOnly(model))
    try:
        exported = export_onnx(MyToy().eval(), image_size=(32, 32), optimize=False)
    finally:
        del EXPORT_GRAPHS[_Toy]
    assert calls == [True] and exported.output_names == ["output_0"]
    with pytest.raises(TypeError, match="expected a class and a callable"):
        register_export_graph("FCOS", _ForwardOnly)


def test_what_cannot_be_exported_says_why():
    with pytest.raises(ExportError, match=r"soft_nms, which has no ONNX translation: Soft-NMS"):
        export_onnx(_Toy("soft").eval(), image_size=(32, 32), optimize=False)
    with pytest.raises(ExportError, match="branches on a value known only at run time.*postprocess=False"):
        export_onnx(_Toy(branch=True).eval(), image_size=(32, 32), optimize=False)
    nas_fcos, size = tiny("nas_fcos")
    with pytest.raises(ExportError, match="DeformConv exists from opset 19"):
        export_onnx(nas_fcos, image_size=size, opset=18)
    with pytest.raises(ExportError, match=r"opset 17: expected 18\.\.23"):
        export_onnx(nas_fcos, image_size=size, opset=17)
    with torch.device("meta"):
        meta = build_detector("fcos", backbone=RESIDUAL, num_classes=3, fpn_channels=16)
    with pytest.raises(ExportError, match="meta device"):
        export_onnx(meta, image_size=size)
    with pytest.raises(ExportError, match="without post-processing.*backbone, neck and head"):
        export_onnx(nn.Sequential(nn.Conv2d(3, 3, 1)), image_size=size, postprocess=False)
    with pytest.raises(ValueError, match="image_size as \\(height, width\\)"):
        export_onnx(nas_fcos, image_size=64)


# -- the command ---------------------------------------------------------------------------------
def _checkpoint(tmp_path, model, spec, **meta):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": model.state_dict(), "meta": {"build": spec, **meta}}, path)
    return path


def test_cli_exports_a_checkpoint_and_verifies_it(tmp_path, capsys):
    # RetinaNet with a GN head; a random head scores ~0.01, so a low threshold keeps detections to compare.
    spec = {"detector": "retinanet", "backbone": RESIDUAL, "num_classes": 3, "fpn_channels": 16, "head_norm": "gn",
            "head_convs": 1, "score_thresh": 0.005}
    torch.manual_seed(0)
    model = build_from_spec(spec)
    ckpt = _checkpoint(tmp_path, model, spec, input_size=[64, 96], class_names=["a", "b", "c"])
    out = tmp_path / "retinanet.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "retinanet -> " in text and "input images [1, 3, 64, 96]" in text
    assert "boxes, scores, labels, batch_index" in text and "100/100 detections" in text
    worst = float(text.split("largest difference ")[1].split()[0])
    assert worst <= TOL
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["build"]) == spec and json.loads(props["class_names"]) == ["a", "b", "c"]


def test_cli_errors(tmp_path, capsys, monkeypatch):
    spec = {"detector": "fcos", "backbone": RESIDUAL, "num_classes": 3, "fpn_channels": 16}
    ckpt = _checkpoint(tmp_path, build_from_spec(spec), spec)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.onnx")]) == 1
    assert "records no input size; give --input HxW" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx")]) == 1
    assert "does not exist" in capsys.readouterr().err
    wrong = _checkpoint(tmp_path, build_from_spec({**spec, "fpn_channels": 8}), spec, input_size=[64, 64])
    assert main(["export", "--checkpoint", str(wrong), "--out", str(tmp_path / "m.onnx")]) == 1
    assert "its weights do not fit the detector its meta['build'] describes (Error(s) in loading" in \
        capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--input", "64"]) == 1
    assert "need onnxscript, which is not installed: pip install nasx[export]" in capsys.readouterr().err
