"""SM-NAS search spaces: stage one (modules + input size, the one-/two-stage coupling) and stage two
(backbone string + FPN width, vega's mutations, the partial-order descriptor), built and trained tiny."""
import random

import numpy as np
import pytest
import torch

from nasx.evaluate import count_detector_macs
from nasx.spaces.errors import EncodingError
from nasx.spaces.residual import SM_NAS_BACKBONES, ResidualEncoding
from nasx.spaces.sm_nas import (BACKBONES, NECKS, RETINA_NECK, ModularSpace, StructuralSpace, scaled_backbone)
from nasx.spaces.sm_nas_models import sm_nas_model_spec

torch.set_num_threads(1)

# Tiny: backbone bases 4 (ResNeXt 16), FPN 16, RoI FCs 64, inputs 48-112 px.
STRUCT = StructuralSpace(width=1 / 16, input_scale=0.08, num_classes=3)
MODULAR = ModularSpace(width=1 / 8, num_classes=3, input_size=(64, 64))
TARGETS = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 44.0, 46.0]]), "labels": torch.tensor([0, 2])},
           {"boxes": torch.tensor([[0.0, 0.0, 12.0, 9.0]]), "labels": torch.tensor([1])}]


def _leq(a, b):
    return all(x <= y for x, y in zip(a, b))


def _train_and_eval(space, arch):
    torch.manual_seed(0)
    spec, (h, w) = space.spec(arch)
    model = space.build(arch).train()
    images = torch.randn(2, 3, h, w)
    losses = model(images, None, TARGETS)
    total = sum(losses.values())
    assert torch.isfinite(total), (space.encode(arch), losses)
    total.backward()
    assert any(p.grad is not None for p in model.backbone.parameters())
    with torch.no_grad():
        dets = model.eval()(images)
    assert len(dets) == 2 and set(dets[0]) == {"boxes", "scores", "labels"}
    return spec


# ---------------------------------------------------------------------------------- stage one
@pytest.mark.parametrize("seed", range(20))
def test_structural_samples_build_train_and_eval(seed):
    arch = STRUCT.sample(random.Random(seed))
    spec = _train_and_eval(STRUCT, arch)
    assert spec["detector"] == {"retinanet": "retinanet", "2fc": "faster_rcnn"}.get(arch["head"], "cascade_rcnn")
    assert spec["norm"] == "gn_ws" and spec["num_classes"] == 3


def test_structural_every_backbone_neck_and_head_builds():
    archs = [{"backbone": b, "neck": "P1-P5", "rpn": "rpn", "head": "2fc", "input": "512x512"} for b in BACKBONES]
    archs += [{"backbone": "resnet18", "neck": n, "rpn": "ga", "head": "cascade2", "input": "800x600"} for n in NECKS]
    archs += [{"backbone": "resnext50_32x4d", "neck": RETINA_NECK, "rpn": "none", "head": "retinanet",
               "input": "1333x800"}, {"backbone": "mobilenet_v2", "neck": "none", "rpn": "rpn", "head": "cascade4",
                                      "input": "1080x720"}]
    for arch in archs:
        _train_and_eval(STRUCT, arch)


def test_structural_spec_and_sizes():
    paper = StructuralSpace()
    spec, size = paper.spec("resnet50|P1-P5|rpn|cascade3|800x600")
    assert size == (600, 800)
    assert spec == {"detector": "cascade_rcnn", "backbone": "resnet50", "num_classes": 80, "norm": "gn_ws",
                    "fpn_channels": 256, "fpn_levels": (1, 5), "rpn": "rpn", "fc_channels": 1024, "cascade_stages": 3}
    spec, _ = paper.spec("resnet18|none|ga|2fc|512x512")
    assert spec["fpn_levels"] is None and "fpn_channels" not in spec and spec["rpn"] == "ga"
    small = StructuralSpace(width=0.25, input_scale=0.16)
    assert [small.input_size({"backbone": "resnet18", "neck": "P2-P5", "rpn": "rpn", "head": "2fc", "input": i})
            for i in ("512x512", "800x600", "1080x720", "1333x800")] == [(80, 80), (96, 128), (112, 176), (128, 208)]
    spec, _ = small.spec("resnet18|P2-P5|rpn|2fc|800x600")
    assert (spec["backbone"], spec["fpn_channels"], spec["fc_channels"]) == ("basicblock_16_11-21-21-21", 64, 256)


def test_scaled_backbones():
    assert scaled_backbone("resnet50", 1) == "resnet50"
    assert scaled_backbone("resnet18", 0.25) == "basicblock_16_11-21-21-21"
    assert scaled_backbone("resnext101_32x4d", 0.25).startswith("Xbottleneck_16_")
    assert scaled_backbone("resnext50_32x4d", 1 / 16).startswith("Xbottleneck_16_")   # 32 groups need base >= 16
    assert scaled_backbone("mobilenet_v2", 0.25) == ("mb8_c8s1:k3e1-c8s2:k3e6x2-c8s2:k3e6x3-c16s2:k3e6x4-"
                                                     "c24s1:k3e6x3-c40s2:k3e6x3-c80s1:k3e6_320")


def test_structural_coupling_under_sample_and_mutate():
    rng = random.Random(0)
    archs = [STRUCT.sample(rng) for _ in range(300)] + [STRUCT.sample(np.random.default_rng(1)) for _ in range(5)]
    one = [a for a in archs if a["rpn"] == "none"]
    assert 60 < len(one) < 140                                   # a third one-stage
    for a in archs:
        assert (a["rpn"] == "none") == (a["head"] == "retinanet")
        assert a["rpn"] != "none" or a["neck"] == RETINA_NECK
    switched = {True: 0, False: 0}
    for a in archs:
        for _ in range(5):
            b = STRUCT.mutate(a, rng)
            STRUCT.check(b)
            changed = {k for k in a if a[k] != b[k]}
            assert changed
            if (a["rpn"] == "none") != (b["rpn"] == "none"):   # repaired: only the coupled modules move
                switched[b["rpn"] == "none"] += 1
                assert changed <= {"rpn", "head", "neck"}
            else:
                assert len(changed) == 1, (a, b)
            a = b
    assert switched[True] > 0 and switched[False] > 0


def test_structural_round_trip_and_errors():
    for seed in range(100):
        a = STRUCT.sample(seed)
        text = STRUCT.encode(a)
        assert STRUCT.decode(text) == a and STRUCT.encode(STRUCT.decode(text)) == text
        assert STRUCT.from_indices(STRUCT.to_indices(a)) == a
    assert STRUCT.canonical(" resnet50 | P1-P5|rpn|2fc|800x600") == "resnet50|P1-P5|rpn|2fc|800x600"
    bad = {"resnet50|P1-P5|rpn|2fc": "4 '|'-separated fields",
           "resnet52|P1-P5|rpn|2fc|800x600": "backbone is 'resnet52'",
           "resnet50|P1-P3|rpn|2fc|800x600": "neck is 'P1-P3'",
           "resnet50|P1-P5|rpn|2fc|800x601": "input is '800x601'",
           "resnet50|P1-P5|none|2fc|800x600": "head is 'retinanet' exactly when rpn is 'none'",
           "resnet50|P1-P5|rpn|retinanet|800x600": "head is 'retinanet' exactly when rpn is 'none'",
           "resnet50|P1-P5|none|retinanet|800x600": "neck is 'P2-P6'.*got 'P1-P5'"}
    for text, message in bad.items():
        with pytest.raises(EncodingError, match=message):
            STRUCT.decode(text)
    with pytest.raises(ValueError, match="rpn 'none' needs head 'retinanet'"):
        StructuralSpace(heads=("2fc", "cascade3"))
    without_ga = StructuralSpace(rpns=("none", "rpn"))
    assert all(without_ga.mutate(without_ga.sample(s), s)["rpn"] != "ga" for s in range(50))


# ---------------------------------------------------------------------------------- stage two
@pytest.mark.parametrize("seed", range(20))
def test_modular_samples_build_train_and_eval(seed):
    arch = MODULAR.sample(random.Random(seed))
    spec = _train_and_eval(MODULAR, arch)
    assert spec["stem"] == "sm_nas" and spec["fpn_channels"] == arch["fpn"] and spec["backbone"] == arch["backbone"]


def test_modular_space_holds_the_published_backbones():
    for name, text in SM_NAS_BACKBONES.items():
        enc = ResidualEncoding.parse(text)
        space = ModularSpace(block=enc.block)
        assert space.encode({"backbone": text, "fpn": 128}) == f"{text}|fpn128", name
    assert ModularSpace(block="Xbottleneck", width=0.25).bases == (16, 18)
    assert ModularSpace(width=0.25).bases == (12, 14, 16, 18) and ModularSpace(width=0.25).fpn_widths == (32, 64, 128)


def test_modular_round_trip_samples_and_mutations():
    rng = random.Random(1)
    for _ in range(200):
        a = MODULAR.sample(rng)
        text = MODULAR.encode(a)
        assert MODULAR.decode(text) == a and MODULAR.encode(MODULAR.decode(text)) == text
        enc = ResidualEncoding.parse(a["backbone"])
        assert len(enc.stages) == 4 and "".join(enc.stages).count("2") == 3 and 5 <= enc.depth <= 35
        b = MODULAR.mutate(a, rng)
        assert MODULAR.check(b) == b and b != a
    small = ModularSpace(min_blocks=6, max_blocks=8, bases=(16,), fpn_widths=(32,))
    a = small.sample(0)
    for seed in range(200):
        a = small.mutate(a, seed)
        assert 6 <= ResidualEncoding.parse(a["backbone"]).depth <= 8
    assert MODULAR.check(MODULAR.mutate(MODULAR.sample(np.random.default_rng(0)), np.random.default_rng(1)))


def test_modular_descriptor_orders_like_macs():
    space = ModularSpace()
    rng = random.Random(0)

    def macs(arch):
        with torch.device("meta"):
            model = space.build(arch)
        return count_detector_macs(model, (256, 320), num_rois=32).total

    # Strictly finer than (blocks, doublings) per stage: '12' and '21' are ordered, not tied.
    a, b = ({"backbone": f"basicblock_56_{s}-21-11-211", "fpn": 128} for s in ("12", "21"))
    assert _leq(space.descriptor(a), space.descriptor(b)) and space.descriptor(a) != space.descriptor(b)
    assert macs(a) < macs(b)
    pairs = 0
    while pairs < 12:
        a = space.sample(rng)
        b = space.mutate(a, rng)
        da, db = space.descriptor(a), space.descriptor(b)
        if da != db and (_leq(da, db) or _leq(db, da)):
            small, big = (a, b) if _leq(da, db) else (b, a)
            assert macs(small) <= macs(big), (space.encode(small), space.encode(big))
            pairs += 1
    assert space.descriptor(space.encode(a)) == space.descriptor(a)


def test_modular_from_a_stage_one_pick():
    spec, size = STRUCT.spec("resnext50_32x4d|P1-P5|rpn|cascade2|800x600")
    space = ModularSpace(base_spec=spec, width=1 / 16, input_size=size)
    assert space.block == "Xbottleneck" and space.bases == (16,) and space.num_classes == 3
    arch = space.sample(0)
    built, got = space.spec(arch)
    assert got == size and built["cascade_stages"] == 2 and built["fc_channels"] == spec["fc_channels"]
    _train_and_eval(space, arch)
    no_fpn = ModularSpace(base_spec=STRUCT.spec("resnet18|none|rpn|2fc|512x512")[0], width=1 / 16)
    arch = no_fpn.sample(0)
    assert arch["fpn"] is None and "|" not in no_fpn.encode(arch) and "fpn_channels" not in no_fpn.spec(arch)[0]
    _train_and_eval(no_fpn, no_fpn.mutate(arch, 0))
    retina = ModularSpace(base_spec=STRUCT.spec(f"resnet18|{RETINA_NECK}|none|retinanet|512x512")[0], width=1 / 16)
    assert "stem" not in retina.spec(retina.sample(0))[0]
    e2, _ = sm_nas_model_spec("E2", num_classes=3)
    assert ModularSpace(base_spec=e2).spec(SM_NAS_BACKBONES["E2"] + "|fpn128")[0]["detector"] == "cascade_rcnn"
    with pytest.raises(ValueError, match="not residual.*pass block="):
        ModularSpace(base_spec=STRUCT.spec("mobilenet_v2|P1-P5|rpn|2fc|512x512")[0])


def test_modular_errors():
    bad = {"basicblock_56_12-11111-211-1112|fpn100": r"fpn is 100; expected one of \(128, 256, 512\)",
           "basicblock_56_12-11111-211-1112|256": "is not '<backbone>|fpn<width>'",
           "basicblock_56_12-11111-211-1112|fpn256|x": "is not '<backbone>|fpn<width>'",
           "basicblock_56_12-11111-2112-1112|fpn256": "4 doublings",
           "basicblock_56_12-11111-2111112|fpn256": "3 stages, expected 4",
           "basicblock_50_12-11111-211-1112|fpn256": r"base 50, expected one of \(48, 56, 64, 72\)",
           "bottleneck_56_12-11111-211-1112|fpn256": "block 'bottleneck', expected 'basicblock'",
           "basicblock_56_2-2-2-1|fpn256": "4 blocks, expected 5 to 35",
           "basicblock_56_12--211-1112|fpn256": "stage 2 is empty",
           "basicblock_56_13-11111-211-1112|fpn256": "stage 1 has '3'"}
    space = ModularSpace()
    for text, message in bad.items():
        with pytest.raises(EncodingError, match=message):
            space.decode(text)
    with pytest.raises(EncodingError, match="'backbone': str, 'fpn': int"):
        space.check({"backbone": SM_NAS_BACKBONES["E2"]})
    with pytest.raises(NotImplementedError, match="no fixed decision list"):
        space.to_indices(space.sample(0))
    with pytest.raises(ValueError, match="bases must be integers >= 16"):
        ModularSpace(block="Xbottleneck", bases=(8, 16))
