"""SM-NAS Table 2's backbones E0-E5: parameters and MACs against the paper.

Counted on the meta device (shapes only), so the 1333 x 800 ResNeXt costs nothing.
"""
import pytest
import torch

from nasx.evaluate import count_macs, count_params
from nasx.spaces.residual import NAMED, SM_NAS_BACKBONES, ResidualEncoding

# Table 2: input (H, W), backbone FLOPs (= multiply-adds) in G, the ratio in parentheses, and the
# stage-one base network the ratio is taken against (inferred: the paper does not name it).
TABLE2 = {
    "E0": ((512, 512), 7.2, 0.75, "resnet18"),
    "E1": ((600, 800), 28.3, 0.79, "resnet34"),
    "E2": ((600, 800), 23.8, 0.67, "resnet34"),
    "E3": ((600, 800), 59.2, 0.78, "resnet101"),
    "E4": ((600, 800), 73.5, 0.96, "resnext101_32x4d"),
    "E5": ((800, 1333), 162.45, 0.94, "resnext101_32x4d"),
}
# Backbone-only parameters with the SM-NAS stem (round2-spec §1.5, computed; no published figure).
PARAMS = {"E0": 7.64e6, "E1": 20.07e6, "E2": 9.48e6, "E3": 28.17e6, "E4": 40.98e6, "E5": 40.98e6}


def _cost(encoding: str, stem: str, hw: tuple[int, int]) -> tuple[int, int]:
    with torch.device("meta"):
        model = ResidualEncoding.parse(encoding).build(stem=stem)
    return count_params(model), count_macs(model, torch.empty(1, 3, *hw, device="meta")).total


@pytest.mark.parametrize("key", list(TABLE2))
def test_backbone_macs_params_and_ratio_match_table2(key):
    hw, gmacs, ratio, base = TABLE2[key]
    params, macs = _cost(SM_NAS_BACKBONES[key], "sm_nas", hw)
    assert abs(macs / (gmacs * 1e9) - 1) < 0.03, macs
    assert abs(params - PARAMS[key]) < 0.005e6, params
    # The base networks are the stage-one ImageNet ResNets, with their 7x7 stem and max-pool.
    _, base_macs = _cost(NAMED[base], "resnet", hw)
    assert abs(macs / base_macs - ratio) <= 0.03, macs / base_macs


def test_sm_nas_stem_is_half_width_then_base():
    # 3x3/2 3 -> base/2, 3x3/2 base/2 -> base, as the released models (vega's ResNetVariantDet).
    stem = ResidualEncoding.parse(SM_NAS_BACKBONES["E2"]).build(stem="sm_nas").stem
    convs = [m for m in stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 28, (3, 3), (2, 2)), (28, 56, (3, 3), (2, 2))]
    assert count_params(stem) == 3 * 28 * 9 + 2 * 28 + 28 * 56 * 9 + 2 * 56


def test_resnext101_32x4d_is_torchvisions_resnet_class_at_32x4d():
    # torchvision ships ResNeXt-101 only as 32x8d and 64x4d; its ResNet class builds 32x4d.
    resnet = pytest.importorskip("torchvision.models.resnet")
    tv = resnet.ResNet(resnet.Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=4)
    ours = ResidualEncoding.parse("resnext101_32x4d").build()
    assert count_params(ours) == count_params(tv) - count_params(tv.fc)
    assert count_params(ours) + 2048 * 1000 + 1000 == 44_177_704  # the usual "44.18M" (timm, mmcls)
    assert [b.conv2.groups for b in ours.stages[2]] == [32] * 23
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        feats = ours.eval()(x)
        for i, name in enumerate(["c2", "c3", "c4", "c5"]):
            y = getattr(tv.eval(), f"layer{i + 1}")(y)
            assert feats[name].shape == y.shape
