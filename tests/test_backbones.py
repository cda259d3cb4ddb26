import pytest
import torch

from nasx.models.layers import WSConv2d, group_count
from nasx.models.necks import FPN
from nasx.spaces import MBConvEncoding, ResidualEncoding
from nasx.spaces.errors import EncodingError
from nasx.spaces.residual import NAMED, SM_NAS_BACKBONES


def n_params(m):
    return sum(p.numel() for p in m.parameters())


TORCHVISION_TRUNKS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d"]


@pytest.mark.parametrize("name", TORCHVISION_TRUNKS)
def test_named_encodings_build_torchvision_trunks(name):
    models = pytest.importorskip("torchvision.models")
    tv = getattr(models, name)()
    ours = ResidualEncoding.parse(NAMED[name]).build()
    assert n_params(ours) == n_params(tv) - n_params(tv.fc)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        feats = ours.eval()(x)
        t = tv.eval()
        y = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        for i, name_ in enumerate(["c2", "c3", "c4", "c5"]):
            y = getattr(t, f"layer{i + 1}")(y)
            assert feats[name_].shape == y.shape


def test_mobilenet_v2_is_torchvisions_trunk():
    models = pytest.importorskip("torchvision.models")
    tv = models.mobilenet_v2().features
    ours = MBConvEncoding.parse("mobilenet_v2").build()
    assert n_params(ours) == n_params(tv)
    x = torch.randn(1, 3, 64, 96)
    assert ours(x)["c5"].shape == tv(x).shape


# Each SM-NAS model once, the three norms spread over them (they are cheap to mix up, costly to run).
@pytest.mark.parametrize("key,norm", list(zip(SM_NAS_BACKBONES, ["bn", "gn", "gn_ws"] * 2)))
def test_sm_nas_models_run_forward_backward(key, norm):
    enc = ResidualEncoding.parse(SM_NAS_BACKBONES[key])
    assert str(enc) == SM_NAS_BACKBONES[key]
    model = enc.build(norm=norm, stem="sm_nas")
    feats = model(torch.randn(2, 3, 32, 32))
    assert [f.shape[-1] for f in feats.values()] == [8, 4, 2, 1]
    assert [f.shape[1] for f in feats.values()] == model.out_channels
    sum(f.mean() for f in feats.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_encoding_channels_follow_the_string():
    # E0: "1-21-21-12": the last stage keeps 256 then doubles at its second block.
    model = ResidualEncoding.parse("basicblock_64_1-21-21-12").build()
    assert model.out_channels == [64, 128, 256, 512]
    assert model.stages[3][0].out_channels == 256 and model.stages[3][1].out_channels == 512


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("basicblock_64", "expected <block>_<base>_<stage>"),
        ("resblock_64_11-21", "block 'resblock' is not one of"),
        ("basicblock_x4_11-21", "base channels 'x4' is not a positive integer"),
        ("basicblock_64_11--21", "stage 2 is empty"),
        ("basicblock_64_11-231", "stage 2 has '3' at position 2"),
        ("Xbottleneck_8_11", "Xbottleneck needs base >= 16"),
    ],
)
def test_invalid_residual_encodings(text, fragment):
    with pytest.raises(EncodingError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        ResidualEncoding.parse(text)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("mb32", "expected mb<stem>"),
        ("mb32_c16s3:k3e1", "stride 3; strides are 1 or 2"),
        ("mb32_c16s1:k4e1", "kernel 4 is not one of (3, 5, 7)"),
        ("mb32_c16s1:k3e2", "expansion 2 is not one of (1, 3, 6)"),
        ("mb32_c16s1:k3e6x0", "repeat must be >= 1"),
        ("mb32_c16s1:k3e6,,k3e6", "layer '' is not"),
        ("mb32_16s1:k3e6", "stage 1 '16s1:k3e6' is not"),
    ],
)
def test_invalid_mbconv_encodings(text, fragment):
    with pytest.raises(EncodingError) as info:
        MBConvEncoding.parse(text)
    assert fragment in str(info.value)


def test_mbconv_choices_round_trip_and_run():
    text = "mb16_c16s1:k3e1-c24s2:k5e6se,k7e3-c32s2:k3e6sex2_64"
    enc = MBConvEncoding.parse(text)
    assert str(enc) == text and MBConvEncoding.parse(str(enc)) == enc and enc.depth == 5
    model = enc.build(norm="gn_ws")
    out = model(torch.randn(2, 3, 32, 32))
    assert list(out) == ["c1", "c2", "c3"] and out["c3"].shape == (2, 64, 4, 4)
    assert any(isinstance(m, WSConv2d) for m in model.modules())


def test_weight_standardisation():
    conv = WSConv2d(4, 3, 3, bias=False)
    w = conv.weight.detach()
    x = torch.randn(1, 4, 5, 5)
    wn = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / torch.sqrt(w.var(dim=(1, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, wn, padding=0))


@pytest.mark.parametrize("channels,groups", [(256, 32), (24, 6), (16, 4), (3, 1), (144, 24)])
def test_group_count(channels, groups):
    assert group_count(channels) == groups


@pytest.mark.parametrize("extra_from", ["p5", "c5"])
def test_fpn_levels_and_shapes(extra_from):
    backbone = ResidualEncoding.parse("resnet18").build(out_features=("c3", "c4", "c5"))
    fpn = FPN(in_channels=dict(zip(backbone.out_features, backbone.out_channels)), out_channels=64,
              extra_from=extra_from)
    out = fpn(backbone(torch.randn(1, 3, 100, 130)))
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"]
    assert [o.shape[-2:] for o in out.values()] == [(13, 17), (7, 9), (4, 5), (2, 3), (1, 2)]
    with pytest.raises(ValueError, match="consecutive levels"):
        FPN(in_channels={"c3": 8, "c5": 8})
