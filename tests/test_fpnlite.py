"""FPNLite (TF's light FPN and NAS-EOD's concat + MBConv variant), the weight-shared separable head and
``build_fpnlite``: wiring against plainly written references, TF's parameter layout, training."""
import math

import pytest
import torch
import torch.nn.functional as F

from nasx.evaluate import count_params
from nasx.models.backbones.mbconv import InvertedResidual
from nasx.models.heads.separable_head import SeparableRetinaHead
from nasx.models.necks.fpnlite import FPNLite, TopDownMerge
from nasx.spaces.detectors import DETECTORS, FPNLITE_MOBILENET_V2, build_detector, fpnlite_anchors

torch.set_num_threads(1)

IN = {"c3": 8, "c4": 12, "c5": 20}


def _features(h=32, w=40, batch=2):
    g = torch.Generator().manual_seed(0)
    return {f"c{k}": torch.randn(batch, IN[f"c{k}"], -(-h // 2 ** k), -(-w // 2 ** k), generator=g)
            for k in (3, 4, 5)}


def _sep(seq, x):
    """separable_norm_act by hand: depthwise, pointwise, norm, ReLU6."""
    conv, norm = seq[0], seq[1]
    y = F.conv2d(x, conv.depthwise.weight, None, conv.depthwise.stride, conv.depthwise.padding, groups=x.shape[1])
    y = F.conv2d(y, conv.pointwise.weight, conv.pointwise.bias)
    return F.relu6(norm(y))


def _up(x, like):
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


@torch.no_grad()
def test_plain_fpnlite_is_tf_wiring():
    neck = FPNLite(in_channels=IN, out_channels=16, norm="gn").eval()
    feats = _features()
    out = neck(feats)
    lat = {p: neck.lateral[p](feats["c" + p[1:]]) for p in ("p3", "p4", "p5")}
    p5 = lat["p5"]                                              # projection only, no smoothing
    p4 = _sep(neck.merge["p4"].conv, lat["p4"] + _up(p5, lat["p4"]))
    p3 = _sep(neck.merge["p3"].conv, lat["p3"] + _up(p4, lat["p3"]))
    p6 = _sep(neck.extra[0], p5)
    p7 = _sep(neck.extra[1], p6)
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"]
    for name, ref in zip(out, (p3, p4, p5, p6, p7)):
        torch.testing.assert_close(out[name], ref)
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(4, 5), (2, 3), (1, 2), (1, 1), (1, 1)]
    assert neck.block is None and neck.mode == "sum" and neck.strides["p7"] == 128
    assert neck.lateral["p5"].bias is not None and neck.merge["p4"].conv[0].pointwise.bias is None


@torch.no_grad()
def test_nas_eod_neck_concats_then_runs_the_searched_blocks():
    blocks = [(5, 6, True), (3, 1, False), (3, 3, True)]           # top-down: P5, P4, P3
    neck = FPNLite(in_channels=IN, out_channels=16, norm="gn", blocks=blocks).eval()
    feats = _features(64, 64)
    out = neck(feats)
    lat = {p: neck.lateral[p](feats["c" + p[1:]]) for p in ("p3", "p4", "p5")}
    p5 = neck.block["p5"](lat["p5"])
    p4 = neck.block["p4"](_sep(neck.merge["p4"].conv, torch.cat([_up(p5, lat["p4"]), lat["p4"]], 1)))
    p3 = neck.block["p3"](_sep(neck.merge["p3"].conv, torch.cat([_up(p4, lat["p3"]), lat["p3"]], 1)))
    for name, ref in zip(("p3", "p4", "p5", "p6"), (p3, p4, p5, _sep(neck.extra[0], p5))):
        torch.testing.assert_close(out[name], ref)
    assert neck.mode == "concat" and neck.merge["p3"].conv[0].depthwise.in_channels == 32
    assert list(neck.block) == ["p5", "p4", "p3"]
    for p, (k, e, se) in zip(("p5", "p4", "p3"), blocks):
        b = neck.block[p]
        assert isinstance(b, InvertedResidual) and b.use_shortcut
        assert count_params(b) == count_params(InvertedResidual(in_channels=16, out_channels=16, kernel_size=k,
                                                                expansion=e, se=se, norm="gn"))


def test_fpnlite_errors_say_what_is_expected():
    with pytest.raises(ValueError, match=r"one \(kernel, expansion, se\) per input level, top-down \(p5, p4, p3\)"):
        FPNLite(in_channels=IN, out_channels=16, blocks=[(3, 6, False)])
    with pytest.raises(ValueError, match=r"consecutive levels like c3, c4, c5; got \['c3', 'c5'\]"):
        FPNLite(in_channels={"c3": 8, "c5": 8}, out_channels=16)
    with pytest.raises(ValueError, match=r"norm must be one of"):
        FPNLite(in_channels=IN, out_channels=16, norm="ln")
    with pytest.raises(ValueError, match=r"mode must be one of \('sum', 'concat'\)"):
        TopDownMerge(channels=8, mode="max")
    with pytest.raises(KeyError, match=r"missing \['c4'\]"):
        FPNLite(in_channels=IN, out_channels=16)({"c3": torch.zeros(1, 8, 4, 4), "c5": torch.zeros(1, 20, 1, 1)})


def test_separable_head_matches_tf_weight_shared_predictor_layout():
    c, a, k, levels, convs = 16, 6, 5, 5, 4
    head = SeparableRetinaHead(in_channels=c, num_anchors=a, num_classes=k, num_levels=levels, num_convs=convs,
                               norm="gn")
    # Tower convs shared (depthwise 3x3 + pointwise, no bias); 2C norm parameters per conv and level;
    # separable predictors with bias.
    tower = convs * (9 * c + c * c) + levels * convs * 2 * c
    predictors = (9 * c + c * a * k + a * k) + (9 * c + c * a * 4 + a * 4)
    assert count_params(head) == tower + predictors
    assert head.cls_logits.pointwise.bias[0].item() == pytest.approx(-math.log(99), abs=1e-4)
    separate = SeparableRetinaHead(in_channels=c, num_anchors=a, num_classes=k, num_levels=levels, share_tower=False)
    assert count_params(separate) == 2 * tower + predictors
    feats = [torch.randn(2, c, s, s) for s in (8, 4, 2, 1, 1)]
    logits, deltas = head(feats)
    assert [tuple(x.shape) for x in logits] == [(2, a * k, s, s) for s in (8, 4, 2, 1, 1)]
    assert [tuple(x.shape) for x in deltas] == [(2, a * 4, s, s) for s in (8, 4, 2, 1, 1)]
    # The same conv weights on every level, each level with its own norms.
    with torch.no_grad():
        head.tower.norms[1][0].weight.fill_(3.0)
        x = torch.randn(1, c, 4, 4)
        assert not torch.allclose(head.tower(x, 0), head.tower(x, 1))
    with pytest.raises(ValueError, match=r"expected 5 levels \(one norm set each\), got 4"):
        head(feats[:4])
    with pytest.raises(ValueError, match=r"num_convs must be >= 0"):
        SeparableRetinaHead(in_channels=c, num_anchors=a, num_classes=k, num_convs=-1)


def test_build_fpnlite_trains_and_detects():
    assert DETECTORS["fpnlite"] is not None
    assert FPNLITE_MOBILENET_V2.endswith("c320s1:k3e6_256")
    anchors = fpnlite_anchors()
    assert anchors.num_anchors == 6 and anchors.sizes == (32.0, 64.0, 128.0, 256.0, 512.0)
    torch.manual_seed(0)
    model = build_detector("fpnlite", backbone="mb8_c8s1:k3e1-c8s2:k3e6-c16s2:k5e3se-c24s2:k3e6-c32s2:k3e6_64",
                           num_classes=3, neck_width=16, neck_blocks=["k3e6", "k5e3se", (3, 1, False)], head_convs=2,
                           norm="gn_ws")
    assert [(b.block[-1][0].out_channels, b.use_shortcut) for b in model.neck.block.values()] == [(16, True)] * 3
    images = torch.randn(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.tensor([[10.0, 0.0, 50.0, 20.0]]), "labels": torch.tensor([0])}]
    losses = model.train()(images, None, targets)
    assert set(losses) == {"cls", "reg"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        dets = model.eval()(images)
    assert len(dets) == 2 and set(dets[0]) == {"boxes", "scores", "labels"}
    plain = build_detector("fpnlite", backbone="mb8_c8s1:k3e1-c8s2:k3e6-c16s2:k5e3se-c24s2:k3e6-c32s2:k3e6_64",
                           num_classes=3, neck_width=16)
    assert plain.neck.block is None and len(plain.head.tower.convs) == 4
    with pytest.raises(Exception, match=r"k<kernel>e<expansion>\[se\]"):
        build_detector("fpnlite", backbone="mobilenet_v2", num_classes=3, neck_blocks=["k3", "k3e6", "k3e6"])


def test_fpn_channels_is_the_neck_width_for_the_cli():
    backbone = "mb8_c8s1:k3e1-c8s2:k3e6-c16s2:k5e3se-c24s2:k3e6-c32s2:k3e6_64"
    assert build_detector("fpnlite", backbone=backbone, num_classes=3, fpn_channels=24).neck.out_channels == 24
    assert build_detector("fpnlite", backbone=backbone, num_classes=3).neck.out_channels == 128
    with pytest.raises(ValueError, match=r"fpn_channels \(24\) and neck_width \(16\) name the same width"):
        build_detector("fpnlite", backbone=backbone, num_classes=3, fpn_channels=24, neck_width=16)
