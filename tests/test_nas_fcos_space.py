"""NAS-FCOS search space: ops, encoding (text, dict, choices), the built decoder through FCOS."""
import json
import random

import pytest
import torch
import torch.nn.functional as F

from conftest import needs_cuda
from nasx.models.detectors import FCOS
from nasx.models.layers import OPS, Aggregation, build_op
from nasx.models.necks import SearchedFPN
from nasx.spaces.errors import EncodingError
from nasx.spaces.nas_fcos import (BASELINE, NAS_FCOS_PUBLISHED, Block, NasFcosArch, NasFcosSpace, fpn_pool_size,
                                  head_pool_size)

torch.set_num_threads(1)

IN_CHANNELS = {"c3": 16, "c4": 24, "c5": 32}
SPACE = NasFcosSpace(channels=16)
SAMPLED = [SPACE.arch(SPACE.sample(random.Random(seed))) for seed in range(30)]
ARCHS = [NasFcosArch.parse(BASELINE), NasFcosArch.parse(NAS_FCOS_PUBLISHED), *SAMPLED]
IDS = ["baseline", "published", *[f"sample{i}" for i in range(len(SAMPLED))]]


def fake_features(batch=2, size=64, generator=None):
    return {f"c{k}": torch.randn(batch, IN_CHANNELS[f"c{k}"], size >> k, size >> k, generator=generator)
            for k in (3, 4, 5)}


def fake_targets():
    return [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 62.0]]), "labels": torch.tensor([0, 2])},
            {"boxes": torch.tensor([[0.0, 0.0, 12.0, 9.0]]), "labels": torch.tensor([1])}]


# ------------------------------------------------------------------------------------ ops
@pytest.mark.parametrize("name", OPS)
def test_ops_keep_shape_and_width(name):
    op = build_op(name, 16, "gn")
    x = torch.randn(2, 16, 9, 7)
    y = op(x)
    assert y.shape == x.shape
    if name == "skip":
        assert y is x
    else:
        assert (y >= 0).all()                   # conv -> norm -> ReLU
        y.sum().backward()
        assert all(p.grad is not None for p in op.parameters())


def test_unknown_op_names_the_choices():
    with pytest.raises(ValueError, match="unknown NAS-FCOS op 'conv7x7'.*sep3x3"):
        build_op("conv7x7", 16)


def test_deform3x3_starts_as_a_plain_conv_and_learns_offsets():
    op = build_op("deform3x3", 8, "gn")
    x = torch.randn(2, 8, 6, 5)
    conv = op.conv
    # zero offsets, mask sigmoid(0) = 0.5: a regular 3x3 conv with half the weight
    expected = F.relu(op.norm(F.conv2d(x, conv.weight * 0.5, padding=1)))
    torch.testing.assert_close(op(x), expected, rtol=1e-5, atol=1e-5)
    op(x).pow(2).sum().backward()
    assert conv.offset_conv.weight.grad.abs().sum() > 0
    # once the offsets move, the op is no longer that conv
    with torch.no_grad():
        conv.offset_conv.bias.fill_(0.7)
    assert not torch.allclose(op(x), expected, atol=1e-3)


@pytest.mark.parametrize("kind", ["sum", "concat"])
@pytest.mark.parametrize("larger_first", [True, False])
def test_aggregation_upsamples_the_smaller_input(kind, larger_first):
    agg = Aggregation(kind=kind, channels=8, norm="gn")
    big, small = torch.randn(2, 8, 8, 6), torch.randn(2, 8, 4, 3)
    a, b = (big, small) if larger_first else (small, big)
    out = agg(a, b)
    assert out.shape == (2, 8, 8, 6)
    up = F.interpolate(small, size=(8, 6), mode="bilinear", align_corners=False)
    if kind == "sum":
        torch.testing.assert_close(out, big + up)
    else:
        pair = torch.cat([big, up] if larger_first else [up, big], dim=1)
        torch.testing.assert_close(out, F.relu(agg.norm(agg.reduce(pair))))


def test_unknown_aggregation():
    with pytest.raises(ValueError, match="aggregation 'max'.*'sum', 'concat'"):
        Aggregation(kind="max", channels=8)


# ------------------------------------------------------------------------------------ encoding
@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_round_trips(arch):
    text = arch.to_string()
    assert NasFcosArch.parse(text) == arch
    assert NasFcosArch.parse(text.replace(",", " , ").replace("[", "[ ")) == arch
    assert NasFcosArch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    choices = SPACE.to_indices(arch)
    assert len(choices) == len(SPACE.decisions()) == 62
    assert SPACE.arch(SPACE.from_indices(choices)) == arch
    assert all(0 <= c < v for c, v in zip(choices, SPACE.valid_counts))
    mapping = SPACE.decode(text)                                   # the Space interface: {label: choice}
    assert SPACE.encode(mapping) == SPACE.encode(arch) == text and mapping["share_from"] == arch.share_from


def test_named_architectures():
    assert NasFcosArch.parse("baseline") == NasFcosArch.parse(BASELINE)
    pub = NasFcosArch.parse("nas_fcos")
    assert pub.to_string() == NAS_FCOS_PUBLISHED
    assert all(b.agg == "concat" and b.op1 == "deform3x3" for b in pub.fpn)   # Fig. 4: deform + concat
    assert pub.fpn[3] == Block(0, 2, "deform3x3", "skip", "concat") and pub.share_from == 0


def test_blocks_given_as_tuples_are_normalised():
    arch = NasFcosArch.parse(BASELINE)
    again = NasFcosArch(fpn=[tuple(b) for b in arch.fpn], head_op="sep3x3", head=[list(b) for b in arch.head],
                        share_from=0)
    assert again == arch and hash(again) == hash(arch) and isinstance(again.fpn[0], Block)


BAD = [
    ("", "empty"),
    ("[[", "expected a value.*end of the text"),
    (BASELINE + "]", "expected the end of the text, got ']'"),
    (BASELINE.replace("[2,1,skip", "[2;1,skip"), "unexpected ';' at position"),
    ("[[],[sep3x3],0]", "FPN: expected 7 blocks, got 0"),
    (BASELINE.replace("[4,4,sep3x3,skip,sum],[2,2", "[7,4,sep3x3,skip,sum],[2,2"),
     "FPN block 4: id1=7 but the pool has only 6 entries"),
    (BASELINE.replace("[3,3,sep3x3,skip,sum]", "[3,-1,sep3x3,skip,sum]"), "FPN block 3: id2=-1"),
    (BASELINE.replace("[13,13,sep3x3", "[13,14,sep3x3"), "head block 5: id2=14 but the pool has only 14 entries"),
    (BASELINE.replace("[2,1,skip,skip,sum]", "[2,1,skip,conv3x3,sum]"), "FPN block 1: op2 'conv3x3' is not an op"),
    (BASELINE.replace("[2,1,skip,skip,sum]", "[2,1,skip,skip,max]"), "FPN block 1: agg 'max' is not an aggregation"),
    (BASELINE.replace("[2,1,skip,skip,sum]", "[2,1,skip,skip]"), r"FPN block 1: expected \[id1, id2, op1, op2, agg\]"),
    (BASELINE.replace("[2,1,skip", "[a,1,skip"), "FPN block 1: id1 must be an integer pool id, got 'a'"),
    (BASELINE.replace("[sep3x3,[1,1", "[dilated,[1,1"), "head: the first op 'dilated' is not an op"),
    (BASELINE.replace("[sep3x3,[1,1", "[[1,1"), r"head: expected \[first_op, block x 5\]"),
    (BASELINE[:-2] + "7]", "share_from must be an integer in 0..6"),
    (BASELINE[:-3] + "]", "got 2 items at the top level"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_invalid_text_is_explained(text, message):
    with pytest.raises(EncodingError, match=message):
        NasFcosArch.parse(text)


def test_invalid_dict_and_choices_are_explained():
    d = NasFcosArch.parse(BASELINE).to_dict()
    with pytest.raises(EncodingError, match=r"missing \['share_from'\]"):
        NasFcosArch.from_dict({k: v for k, v in d.items() if k != "share_from"})
    with pytest.raises(EncodingError, match="head: expected 5 blocks, got 4"):
        NasFcosArch.from_dict({**d, "head": d["head"][:4]})
    with pytest.raises(EncodingError, match="expected 62 choices, got 3"):
        SPACE.from_indices([0, 0, 0])
    choices = SPACE.to_indices(NasFcosArch.parse(BASELINE))
    choices[0] = 3                                                 # fpn1.id1: the pool has c3, c4, c5 only
    with pytest.raises(EncodingError, match=r"choice 0 \(fpn1.id1\) is 3, expected 0..2"):
        SPACE.from_indices(choices)
    mapping = SPACE.decode(BASELINE)
    with pytest.raises(EncodingError, match=r"fpn1.op1 is 'conv7x7'; expected one of"):
        SPACE.encode({**mapping, "fpn1.op1": "conv7x7"})
    with pytest.raises(EncodingError, match=r"missing labels \['share_from'\]"):
        SPACE.encode({k: v for k, v in mapping.items() if k != "share_from"})
    with pytest.raises(EncodingError, match="got int"):
        NasFcosArch.parse(5)


# ------------------------------------------------------------------------------------ space
def test_decision_sequence_is_static_and_pool_aware():
    ds = SPACE.decisions()
    assert [d.name for d in ds[:6]] == ["fpn1.id1", "fpn1.id2", "fpn1.op1", "fpn1.op2", "fpn1.agg", "fpn2.id1"]
    assert ds[35].name == "head0.op" and ds[-1].name == "share_from" and ds[-1].valid == 7
    fpn_ids = [d.valid for d in ds[:35] if d.kind == "id"]
    head_ids = [d.valid for d in ds[36:-1] if d.kind == "id"]
    assert fpn_ids == [fpn_pool_size(t) for t in range(1, 8) for _ in "12"] == [3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]
    assert head_ids == [head_pool_size(t) for t in range(1, 6) for _ in "12"] == [2, 2, 5, 5, 8, 8, 11, 11, 14, 14]
    assert {d.choices for d in ds if d.kind == "id" and d.name.startswith("fpn")} == {9}
    assert {d.choices for d in ds if d.kind == "id" and d.name.startswith("head")} == {14}
    assert all(SPACE.valid_choices(i) == d.valid for i, d in enumerate(ds))


def test_sampling_is_seeded_and_covers_the_valid_choices():
    assert SPACE.sample(random.Random(3)) == SPACE.sample(random.Random(3))
    np = pytest.importorskip("numpy")
    assert isinstance(SPACE.arch(SPACE.sample(np.random.default_rng(0))), NasFcosArch)
    seen = [set() for _ in SPACE.decisions()]
    rng = random.Random(0)
    for _ in range(300):
        for s, c in zip(seen, SPACE.to_indices(SPACE.sample(rng))):
            s.add(c)
    assert [len(s) for s in seen] == SPACE.valid_counts


def test_mutate_changes_exactly_one_decision():
    rng = random.Random(1)
    for arch in ARCHS[:10]:
        child = SPACE.mutate(arch, rng)
        diff = [a != b for a, b in zip(SPACE.to_indices(arch), SPACE.to_indices(child))]
        assert sum(diff) == 1


# ------------------------------------------------------------------------------------ modules
def test_fpn_outputs_dangling_and_sizes():
    pub = NasFcosArch.parse(NAS_FCOS_PUBLISHED)
    neck, _ = SPACE.build(pub, in_channels=IN_CHANNELS, num_classes=3)
    assert neck.outputs == (9, 8, 7)               # P3, P4, P5 = last, second-to-last, third-to-last block
    assert neck.dangling == (5,)                   # block 3 is read by no later block
    base, _ = SPACE.build(BASELINE, in_channels=IN_CHANNELS, num_classes=3)
    assert base.dangling == ()
    out = neck(fake_features(size=96))
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"]
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(12, 12), (6, 6), (3, 3), (2, 2), (1, 1)]
    assert all(v.shape[:2] == (2, 16) for v in out.values())


def test_dangling_block_is_added_to_every_output():
    arch = NasFcosArch.parse(BASELINE)
    fpn = list(arch.fpn)
    fpn[2] = Block(0, 0, "skip", "skip", "sum")      # block 3 (id 5): 2 * c3, now read by nobody ...
    fpn[5] = Block(3, 3, "sep3x3", "skip", "sum")    # ... since block 6 reads id 3 instead of 5
    neck = SearchedFPN(in_channels=IN_CHANNELS, channels=16, blocks=fpn)
    assert neck.dangling == (5,)
    feats = fake_features()
    out = neck(feats)
    neck.dangling = ()
    plain = neck(feats)
    c3 = neck.adapt["c3"](feats["c3"])
    for name, size in (("p3", 8), ("p4", 4), ("p5", 2)):
        delta = out[name] - plain[name]
        # added at the block's resolution, then resized with it to the level's size
        assert delta.shape[-1] == size and delta.abs().sum() > 0
    torch.testing.assert_close(out["p3"] - plain["p3"], 2 * c3, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("share_from", [0, 3, 6])
def test_head_weight_sharing(share_from):
    arch = NasFcosArch.parse(NAS_FCOS_PUBLISHED)
    arch = NasFcosArch(fpn=arch.fpn, head_op=arch.head_op, head=arch.head, share_from=share_from)
    _, head = SPACE.build(arch, in_channels=IN_CHANNELS, num_classes=3)
    for tower in (head.cls_tower, head.reg_tower):
        assert [len(p) for p in tower.private] == [share_from] * 5
        assert len(tower.shared) == 6 - share_from
    assert head.cls_tower.shared is not head.reg_tower.shared
    n_shared = sum(p.numel() for p in head.cls_tower.shared.parameters())
    n_private = sum(p.numel() for p in head.cls_tower.private.parameters())
    _, full = SPACE.build(NasFcosArch(fpn=arch.fpn, head_op=arch.head_op, head=arch.head, share_from=0),
                          in_channels=IN_CHANNELS, num_classes=3)
    n_all = sum(p.numel() for p in full.cls_tower.parameters())
    # private stages are five copies of the shared ones
    shared_part = sum(p.numel() for p in full.cls_tower.shared[share_from:].parameters())
    assert n_shared == shared_part and n_private == 5 * (n_all - shared_part)


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_builds_and_trains_through_fcos(arch):
    torch.manual_seed(0)
    neck, head = SPACE.build(arch, in_channels=IN_CHANNELS, num_classes=3)
    model = FCOS(backbone=torch.nn.Identity(), neck=neck, head=head, num_classes=3).train()
    feats = fake_features(generator=torch.Generator().manual_seed(1))
    losses = model.forward_features(feats, (64, 64), [(64, 64), (64, 60)], fake_targets())
    assert set(losses) == {"cls", "reg", "ctr"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    if arch in ARCHS[:2]:                   # inference too (the named ones suffice: same code path)
        model.eval()
        dets = model.forward_features(feats, (64, 64), [(64, 64), (64, 60)])
        assert len(dets) == 2 and all(d["boxes"].shape[1] == 4 for d in dets)


def test_build_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"missing \['c5'\]"):
        SPACE.build(BASELINE, in_channels={"c3": 8, "c4": 8}, num_classes=3)
    with pytest.raises(ValueError, match="norm must be one of"):
        SPACE.build(BASELINE, in_channels=IN_CHANNELS, num_classes=3, norm="ln")
    with pytest.raises(TypeError, match="expected a NasFcosArch"):
        SPACE.build(42, in_channels=IN_CHANNELS, num_classes=3)


@pytest.mark.parametrize("norm", ["bn", "gn_ws"])
def test_other_norms_build_and_run(norm):
    neck, head = SPACE.build(NAS_FCOS_PUBLISHED, in_channels=IN_CHANNELS, num_classes=3, norm=norm)
    cls, box, ctr = head(list(neck(fake_features()).values()))
    assert [c.shape[1] for c in cls] == [3] * 5 and all((b >= 0).all() for b in box)


@needs_cuda
def test_published_decoder_matches_on_cuda():
    torch.manual_seed(0)
    neck, head = SPACE.build(NAS_FCOS_PUBLISHED, in_channels=IN_CHANNELS, num_classes=3)
    feats = fake_features()
    cpu = head(list(neck(feats).values()))
    neck, head = neck.cuda(), head.cuda()
    gpu = head(list(neck({k: v.cuda() for k, v in feats.items()}).values()))
    for a, b in zip(cpu, gpu):
        for x, y in zip(a, b):
            torch.testing.assert_close(y.cpu(), x, rtol=1e-4, atol=1e-4)
    sum(t.sum() for part in gpu for t in part).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
