"""Parameter remapping (FNA's depth, kernel and width rules) on MBConv networks and on the super network."""
import pytest
import torch

from nasx.models.backbones.remap import remap_backbone, remap_supernet, remap_tensor, seed_layer
from nasx.spaces.adaptation import AdaptationSpace
from nasx.spaces.mbconv import MBConvEncoding

SEED = "mb16_c8s1:k3e1-c16s2:k3e6x2-c24s2:k3e6x3-c32s2:k3e6-c40s1:k3e6x2-c48s2:k3e6x2-c64s1:k3e6_128"


def _trained_like(enc: str, seed: int = 0):
    """A network whose weights and BN statistics are all non-trivial, in eval mode."""
    torch.manual_seed(seed)
    net = MBConvEncoding.parse(enc).build(out_features=("c4", "c5"))
    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if t.dtype.is_floating_point:
                t.copy_(torch.rand_like(t) * 0.5 + 0.5 if "running_var" in name or name.endswith("weight") and t.dim() == 1
                        else torch.randn_like(t) * 0.2)
    return net.eval()


def _with_kernels(enc: str, k: int) -> str:
    return enc.replace("k3e6", f"k{k}e6")


@pytest.mark.parametrize("k", [5, 7])
def test_kernel_remap_keeps_the_function(k):
    seed = _trained_like(SEED)
    target = remap_backbone(seed, MBConvEncoding.parse(_with_kernels(SEED, k)).build(out_features=("c4", "c5"))).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = seed(x), target(x)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-5)
    dw = target.stages[1][0].block[1][0].weight          # (C, 1, k, k): 3x3 centre, zeros around
    r = (k - 3) // 2
    assert torch.equal(dw[:, :, r:r + 3, r:r + 3], seed.stages[1][0].block[1][0].weight)
    assert dw.abs().sum() == dw[:, :, r:r + 3, r:r + 3].abs().sum()


def test_remapped_seed_equals_seed():
    seed = _trained_like(SEED)
    again = remap_backbone(seed, MBConvEncoding.parse(SEED).build(out_features=("c4", "c5")))
    for (n, a), (_, b) in zip(seed.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n


def test_depth_copies_the_stages_last_layer():
    seed = _trained_like(SEED)
    deeper = SEED.replace("c16s2:k3e6x2", "c16s2:k3e6x4")
    target = remap_backbone(seed, MBConvEncoding.parse(deeper).build(out_features=("c4", "c5")))
    seed_stage, stage = seed.stages[1], target.stages[1]
    for j, block in enumerate(stage):
        src = seed_stage[min(j, 1)]
        for (n, a), (_, b) in zip(src.state_dict().items(), block.state_dict().items()):
            assert torch.equal(a, b), (j, n)
    assert [seed_layer(i, 2) for i in range(4)] == [0, 1, 1, 1]


def test_width_takes_the_first_channels_and_zero_pads():
    seed = _trained_like(SEED)
    narrow = remap_backbone(seed, MBConvEncoding.parse(SEED.replace("c16s2:k3e6x2", "c16s2:k3e3x2")).build())
    s, t = seed.stages[1][0].block, narrow.stages[1][0].block
    hidden = t[0][0].out_channels                          # 8 x 3 = 24 of the seed's 48
    assert hidden == 24 and s[0][0].out_channels == 48
    assert torch.equal(t[0][0].weight, s[0][0].weight[:hidden])          # expansion: first outputs
    assert torch.equal(t[0][1].running_mean, s[0][1].running_mean[:hidden])
    assert torch.equal(t[2][0].weight, s[2][0].weight[:, :hidden])       # projection: first inputs
    wide = torch.full((6, 4, 3, 3), 7.0)
    remap_tensor(torch.ones(4, 2, 3, 3), wide)
    assert wide[:4, :2].eq(1).all() and wide[4:].eq(0).all() and wide[:, 2:].eq(0).all()
    vec = torch.full((6,), 7.0)
    remap_tensor(torch.ones(4), vec)
    assert vec.tolist() == [1, 1, 1, 1, 7, 7]                            # beyond the seed: own init kept


def test_structure_mismatches_are_errors():
    seed = _trained_like(SEED)
    with pytest.raises(ValueError, match="stages"):
        remap_backbone(seed, MBConvEncoding.parse("mb16_c8s1:k3e1-c16s2:k3e6_128").build())
    e1 = SEED.replace("c16s2:k3e6x2", "c16s2:k3e1x2")
    with pytest.raises(ValueError, match="stage 2 layer 1.*expansion 1"):
        remap_backbone(seed, MBConvEncoding.parse(e1).build())
    with pytest.raises(ValueError, match="1-d"):
        remap_tensor(torch.ones(3), torch.ones(3, 3))


def test_super_network_on_the_seed_path_is_the_seed():
    """Every candidate remapped from the same seed layer: the path of the seed's own ops (skip for the
    layers the seed lacks) computes exactly the seed network."""
    space = AdaptationSpace(seed=SEED, layers=(4, 4, 2, 4, 4, 1))
    seed = _trained_like(SEED)
    supernet = remap_supernet(seed, space.build_supernet()).eval()
    choices = space.choices_of(SEED)
    supernet.set_path([ops.index(c) for ops, c in zip(supernet.op_names(), choices)])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = supernet(x)
        tap_block = seed.stages[5][0]
        tap = tap_block.block[0](seed.stages[4](seed.stages[3](seed.stages[2](seed.stages[1](seed.stages[0](
            seed.stem(x)))))))
        want = seed(x)
    torch.testing.assert_close(got["c5"], want["c5"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["c4"], tap, rtol=1e-5, atol=1e-5)
    # a k7_e3 candidate holds the centre and the first channels of the same seed layer
    layer = supernet.layers[0].ops["k7_e3"].block
    src = seed.stages[1][0].block
    assert torch.equal(layer[1][0].weight[:, :, 2:5, 2:5], src[1][0].weight[:layer[1][0].out_channels])
