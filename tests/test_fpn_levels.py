"""FPN level ranges (SM-NAS's P1-P6) and max-pool extra levels."""
from collections import OrderedDict

import pytest
import torch

from nasx.evaluate import count_params
from nasx.models.necks.fpn import FPN, build_sm_nas_fpn, sm_nas_fpn_levels
from nasx.spaces import ResidualEncoding

# SM-NAS names the backbone's stages P1-P4 (nasx c2-c5) and pools P5, P6 from P4.
LEVELS = [
    ((2, 5), ["c3", "c4", "c5"], 1),          # E0, E1
    ((1, 5), ["c2", "c3", "c4", "c5"], 1),    # E2-E5: the standard mmdet FPN
    ((1, 4), ["c2", "c3", "c4", "c5"], 0),
    ((3, 6), ["c4", "c5"], 2),
    ((1, 3), ["c2", "c3", "c4"], 0),
    ((2, 6), ["c3", "c4", "c5"], 2),
]
CHANNELS = {"c2": 8, "c3": 16, "c4": 24, "c5": 32}


@pytest.mark.parametrize("levels,inputs,extra", LEVELS)
def test_sm_nas_levels_names_strides_shapes(levels, inputs, extra):
    assert sm_nas_fpn_levels(*levels) == (inputs, extra)
    start, end = levels
    fpn = build_sm_nas_fpn(CHANNELS, start, end, out_channels=12)
    outs = [f"p{k + 1}" for k in range(start, end + 1)]  # SM-NAS P_j is nasx p<j+1>
    assert fpn.in_names == inputs and fpn.out_names == outs
    assert fpn.strides == {n: 2 ** int(n[1:]) for n in outs}
    h, w = 100, 130
    feats = {n: torch.randn(2, c, -(-h // 2 ** int(n[1:])), -(-w // 2 ** int(n[1:]))) for n, c in CHANNELS.items()}
    out = fpn(feats)
    assert list(out) == outs
    for name, y in out.items():
        s = fpn.strides[name]
        assert y.shape == (2, 12, -(-h // s), -(-w // s)), name


def test_sm_nas_fpn_on_a_real_backbone():
    fpn_names, _ = sm_nas_fpn_levels(1, 5)
    backbone = ResidualEncoding.parse("basicblock_16_1-21-21-12").build(stem="sm_nas", out_features=tuple(fpn_names))
    fpn = build_sm_nas_fpn(backbone.channels, 1, 5, out_channels=16)
    out = fpn(backbone(torch.randn(1, 3, 64, 96)))
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {
        "p2": (16, 24), "p3": (8, 12), "p4": (4, 6), "p5": (2, 3), "p6": (1, 2)}
    # pooled levels cost nothing: lateral 1x1 + output 3x3 per input level, all with bias
    expected = sum(c * 16 + 16 + 16 * 16 * 9 + 16 for c in backbone.out_channels)
    assert count_params(fpn) == expected


@pytest.mark.parametrize("in_names", [["c3", "c4", "c5"], ["c2", "c3", "c4", "c5"], ["c2", "c3", "c4"]])
def test_pool_mode_equals_torchvision_last_level_max_pool(in_names):
    ops = pytest.importorskip("torchvision.ops")
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    in_channels = {n: CHANNELS[n] for n in in_names}
    ours = FPN(in_channels=in_channels, out_channels=16, extra_levels=1, extra_mode="pool")
    tv = ops.FeaturePyramidNetwork(list(in_channels.values()), 16, extra_blocks=LastLevelMaxPool())
    assert count_params(ours) == count_params(tv)
    with torch.no_grad():
        for i in range(len(in_names)):
            pairs = [(ours.lateral[i], tv.inner_blocks[i][0]), (ours.output[i], tv.layer_blocks[i][0])]
            for ours_conv, tv_conv in pairs:
                tv_conv.weight.normal_()
                tv_conv.bias.normal_()
                ours_conv.weight.copy_(tv_conv.weight)
                ours_conv.bias.copy_(tv_conv.bias)
        # odd sizes, so the nearest up-sampling and the stride-2 sub-sampling both see ceil()s
        feats = OrderedDict((n, torch.randn(2, c, 75 // 2 ** int(n[1:]) + 1, 101 // 2 ** int(n[1:]) + 1))
                            for n, c in in_channels.items())
        got = ours(feats)
        want = tv(feats)
    assert list(want) == in_names + ["pool"]
    assert len(got) == len(want)
    for (name, g), w in zip(got.items(), want.values()):
        torch.testing.assert_close(g, w, msg=name)


def test_pool_mode_stacks_levels_from_the_previous_output():
    fpn = FPN(in_channels={"c3": 8, "c4": 8}, out_channels=8, extra_levels=3, extra_mode="pool")
    assert len(fpn.extra) == 0 and fpn.out_names == ["p3", "p4", "p5", "p6", "p7"]
    out = fpn({"c3": torch.randn(1, 8, 40, 40), "c4": torch.randn(1, 8, 20, 20)})
    assert [tuple(o.shape[-2:]) for o in out.values()] == [(40, 40), (20, 20), (10, 10), (5, 5), (3, 3)]
    torch.testing.assert_close(out["p5"], out["p4"][..., ::2, ::2])
    torch.testing.assert_close(out["p7"], out["p6"][..., ::2, ::2])


def test_conv_mode_unchanged():
    # Same module names as before "pool" existed, so checkpoints load; a conv per extra level.
    fpn = FPN(in_channels={"c3": 8, "c4": 16, "c5": 32}, out_channels=8)
    assert fpn.extra_mode == "conv" and fpn.out_names == ["p3", "p4", "p5", "p6", "p7"]
    assert sorted(k for k in fpn.state_dict() if k.startswith("extra")) == [
        "extra.0.bias", "extra.0.weight", "extra.1.bias", "extra.1.weight"]
    c5 = FPN(in_channels={"c3": 8, "c4": 16, "c5": 32}, out_channels=8, extra_from="c5")
    assert c5.extra[0].in_channels == 32 and fpn.extra[0].in_channels == 8


@pytest.mark.parametrize("alias,canonical", [("last_output", "p5"), ("last_input", "c5")])
def test_extra_from_aliases_on_an_fpn_ending_at_c4(alias, canonical):
    in_channels = {"c2": 8, "c3": 16, "c4": 24}
    torch.manual_seed(0)
    a = FPN(in_channels=in_channels, out_channels=8, extra_levels=2, extra_from=alias)
    b = FPN(in_channels=in_channels, out_channels=8, extra_levels=2, extra_from=canonical)
    b.load_state_dict(a.state_dict())
    assert a.extra[0].in_channels == (24 if canonical == "c5" else 8)  # "c5" means the last input, here c4
    feats = {"c2": torch.randn(1, 8, 32, 32), "c3": torch.randn(1, 16, 16, 16), "c4": torch.randn(1, 24, 8, 8)}
    out_a, out_b = a(feats), b(feats)
    assert list(out_a) == ["p2", "p3", "p4", "p5", "p6"] and out_a["p6"].shape[-2:] == (2, 2)
    for k in out_a:
        torch.testing.assert_close(out_a[k], out_b[k])


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        (dict(extra_mode="avg"), "extra_mode must be one of ('conv', 'pool'), got 'avg'"),
        (dict(extra_mode="pool", extra_from="c5"), "so extra_from must be 'p5' or 'last_output'; got 'c5'"),
        (dict(extra_mode="pool", extra_from="last_input"), "got 'last_input'"),
        (dict(extra_from="p6"), "extra_from must be 'p5' / 'last_output'"),
        (dict(extra_levels=-1), "extra_levels must be an integer >= 0, got -1"),
    ],
)
def test_fpn_errors(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        FPN(in_channels={"c3": 8, "c4": 8}, **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("start,end", [(0, 4), (4, 5), (4, 6), (2, 2), (3, 2), (1, 7), (2.0, 5)])
def test_sm_nas_level_range_errors(start, end):
    with pytest.raises(ValueError) as info:
        sm_nas_fpn_levels(start, end)
    msg = str(info.value)
    assert f"FPN(P{start}-P{end})" in msg and "1 <= start <= 3 and start < end <= 6" in msg


def test_build_sm_nas_fpn_names_missing_backbone_levels():
    with pytest.raises(ValueError) as info:
        build_sm_nas_fpn({"c3": 8, "c4": 8, "c5": 8}, 1, 5)
    assert "reads backbone features ['c2', 'c3', 'c4', 'c5']" in str(info.value) and "missing ['c2']" in str(info.value)
