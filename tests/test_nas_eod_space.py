"""NAS-EOD's space: 61 labelled decisions, the MBConv-grammar text (round trip, errors), every option
built and trained tiny, the build spec, a PPO controller driving it, and the reward."""
import json
import random

import pytest
import torch

from nasx.evaluate import count_params
from nasx.evaluate.eod_reward import eod_reward, latency_term
from nasx.search.controller_strategy import ControllerStrategy
from nasx.spaces.detectors import build_from_spec
from nasx.spaces.errors import EncodingError
from nasx.spaces.mbconv import MBConvEncoding, MBLayer
from nasx.spaces.nas_eod import BACKBONE_LAYERS, EXPANSIONS, KERNELS, NECK_LEVELS, NasEodSpace, parse_layer

torch.set_num_threads(1)

FULL = NasEodSpace()
HALF = NasEodSpace(width=0.5, input_size=128)
# Tiny: backbone channels 8-80, head 320, neck 16 / 32, one tower conv, 64 px.
TINY = NasEodSpace(width=0.25, input_size=64, num_classes=3, head_convs=1)
OPTIONS = [MBLayer(k, e, se) for k in KERNELS for e in EXPANSIONS for se in (False, True)]
MBV2_LAYERS = ",".join(["k3e1"] + ["k3e6"] * 16)
MBV2 = "mb32_c16s1:k3e1-c24s2:k3e6x2-c32s2:k3e6x3-c64s2:k3e6x4-c96s1:k3e6x3-c160s2:k3e6x3-c320s1:k3e6_1280"
TARGETS = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 44.0, 46.0]]), "labels": torch.tensor([0, 2])},
           {"boxes": torch.tensor([[0.0, 0.0, 12.0, 9.0]]), "labels": torch.tensor([1])}]


def _uniform(space, layer: MBLayer, width_index: int = 0) -> dict:
    return space.from_indices([d.options.index({"kernel": layer.kernel, "expansion": layer.expansion, "se": layer.se,
                                                "width": d.options[width_index]}[d.kind]) for d in space.decisions()])


def test_decisions_are_per_layer_kernel_expansion_se_then_the_neck():
    ds = FULL.decisions()
    assert len(ds) == 3 * BACKBONE_LAYERS + 1 + 3 * len(NECK_LEVELS) == 61
    assert [d.label for d in ds[:3]] == ["backbone0.k", "backbone0.e", "backbone0.se"]
    assert ds[3 * BACKBONE_LAYERS].label == "neck.width" and ds[3 * BACKBONE_LAYERS].options == (64, 128)
    assert [d.label for d in ds[-3:]] == ["neck.p3.k", "neck.p3.e", "neck.p3.se"]
    assert FULL.decision_sizes == FULL.valid_counts == [len(d.options) for d in ds]
    assert {d.options for d in ds if d.kind == "kernel"} == {(3, 5)}
    assert {d.options for d in ds if d.kind == "expansion"} == {(1, 3, 6)}
    assert HALF.neck_widths == (32, 64) and NasEodSpace(neck_widths=(64,)).valid_counts[3 * BACKBONE_LAYERS] == 1


@pytest.mark.parametrize("space", [FULL, HALF, TINY], ids=["full", "half", "tiny"])
def test_text_round_trips_exactly(space):
    rng = random.Random(0)
    for _ in range(40):
        arch = space.sample(rng)
        text = space.encode(arch)
        assert space.decode(text) == arch
        assert space.encode(space.decode(text)) == text
        assert space.from_indices(space.to_indices(arch)) == arch
        backbone, neck = text.split("|")
        assert str(MBConvEncoding.parse(backbone)) == backbone == str(space.backbone_encoding(arch))
        assert neck.startswith(f"fpnlite@{arch['neck.width']}:")


def test_text_of_mobilenet_v2_layers():
    text = f"{MBV2}|fpnlite@64:k3e6,k5e3se,k3e1"
    arch = FULL.decode(text)
    assert FULL.encode(arch) == text
    assert [str(v) for v in FULL.backbone_layers(arch)] == MBV2_LAYERS.split(",")
    assert FULL.neck_layers(arch) == [MBLayer(3, 6), MBLayer(5, 3, True), MBLayer(3, 1)]
    assert arch["neck.p4.se"] is True and arch["neck.width"] == 64
    # Names of the MBConv grammar, x<n> runs and spaces are read; the canonical text is written.
    assert FULL.canonical(" mobilenet_v2 | fpnlite@64:k3e6,k5e3se,k3e1 ") == text
    assert FULL.canonical(f"{MBV2}|fpnlite@128:k5e6sex3") == f"{MBV2}|fpnlite@128:k5e6se,k5e6se,k5e6se"


def test_channels_in_the_text_are_the_built_ones():
    arch = HALF.sample(1)
    text = HALF.encode(arch)
    assert text.startswith("mb16_c8s1:") and text.split("|")[0].endswith("_640")
    assert f"|fpnlite@{arch['neck.width']}:" in text and arch["neck.width"] in (32, 64)
    with pytest.raises(EncodingError, match=r"stem 32, .*this space \(width 0.5, head 1280\) builds stem 16"):
        HALF.decode(f"{MBV2}|fpnlite@32:k3e6,k3e6,k3e6")


@pytest.mark.parametrize("text,match", [
    (42, r"expected text like"),
    (MBV2, r"is not '<MBConv backbone>\|fpnlite@<width>"),
    (f"{MBV2}|fpnlite@64:k3e6,k3e6,k3e6|x", r"is not '<MBConv backbone>\|fpnlite@<width>"),
    ("mb32_c16s1:k3e1-c24s2:k9e6_1280|fpnlite@64:k3e6,k3e6,k3e6", r"backbone: .*kernel 9 is not one of"),
    ("mb32_c16s1:k3e1|fpnlite@64:k3e6,k3e6,k3e6", r"has stem 32, stages c16s1x1, head None"),
    (MBV2.replace("c96s1:k3e6x3", "c96s1:k3e6x2") + "|fpnlite@64:k3e6,k3e6,k3e6", r"c96s1x2.* builds .*c96s1x3"),
    (MBV2.replace("_1280", "_256") + "|fpnlite@64:k3e6,k3e6,k3e6", r"head 256.*builds.*head 1280"),
    (MBV2.replace("c64s2:k3e6x4", "c64s2:k3e6x3,k7e6") + "|fpnlite@64:k3e6,k3e6,k3e6",
     r"backbone layer 9 is k7e6; NAS-EOD's kernels are \(3, 5\)"),
    (f"{MBV2}|fpn@64:k3e6,k3e6,k3e6", r"the neck 'fpn@64:k3e6,k3e6,k3e6' is not 'fpnlite@<width>"),
    (f"{MBV2}|fpnlite@64:k3e6,k3e6", r"one block per level p5, p4, p3 \(top-down\); got 2"),
    (f"{MBV2}|fpnlite@64:k3e6,k3e6,k3x6", r"neck .*k<kernel>e<expansion>\[se\].*got 'k3x6'"),
    (f"{MBV2}|fpnlite@64:k3e6,k3e2,k3e6", r"neck block p4 is k3e2; .*expansions \(1, 3, 6\)"),
    (f"{MBV2}|fpnlite@96:k3e6,k3e6,k3e6", r"neck.width is 96; expected one of \(64, 128\)"),
])
def test_malformed_text_says_what_is_wrong(text, match):
    with pytest.raises(EncodingError, match=match):
        FULL.decode(text)


def test_bad_mappings_and_settings_are_refused():
    arch = FULL.sample(0)
    with pytest.raises(EncodingError, match=r"backbone3.k is 7; expected one of \(3, 5\)"):
        FULL.encode({**arch, "backbone3.k": 7})
    with pytest.raises(EncodingError, match=r"missing labels \['neck.width'\]"):
        FULL.encode({k: v for k, v in arch.items() if k != "neck.width"})
    with pytest.raises(EncodingError, match=r"expected 61 choices, got 3"):
        FULL.from_indices([0, 0, 0])
    for kwargs, match in [({"width": 0}, "width must be a positive"), ({"input_size": 16}, "input_size must be"),
                          ({"neck_widths": ()}, "neck_widths must be"), ({"head_channels": 0}, "head_channels"),
                          ({"num_classes": 0}, "num_classes >= 1")]:
        with pytest.raises(ValueError, match=match):
            NasEodSpace(**kwargs)
    with pytest.raises(EncodingError, match=r"k<kernel>e<expansion>\[se\].*got 'k3'"):
        parse_layer("k3")
    assert parse_layer("k5e3se") == MBLayer(5, 3, True)


def _train_and_eval(space, arch):
    torch.manual_seed(0)
    spec, (h, w) = space.spec(arch)
    model = build_from_spec(spec).train()
    images = torch.randn(2, 3, h, w)
    losses = model(images, None, TARGETS)
    total = sum(losses.values())
    assert torch.isfinite(total), (space.encode(arch), losses)
    total.backward()
    for part in (model.backbone, model.neck.block, model.head):
        assert all(p.grad is not None for p in part.parameters()), space.encode(arch)
    with torch.no_grad():
        dets = model.eval()(images)
    assert len(dets) == 2 and set(dets[0]) == {"boxes", "scores", "labels"}
    return model


@pytest.mark.parametrize("option", OPTIONS, ids=str)
def test_every_option_builds_trains_and_evaluates(option):
    # Every layer of backbone and neck in this option: the 12 cover every choice at every position.
    width_index = OPTIONS.index(option) % 2
    arch = _uniform(TINY, option, width_index)
    model = _train_and_eval(TINY, arch)
    blocks = [b for s in model.backbone.stages for b in s] + list(model.neck.block.values())
    for b in blocks:
        dw = b.block[0 if option.expansion == 1 else 1][0]
        assert dw.kernel_size == (option.kernel,) * 2 and dw.groups == dw.in_channels
        assert any(type(m).__name__ == "SqueezeExcite" for m in b.modules()) == option.se
    assert all(b.use_shortcut for b in model.neck.block.values())
    assert model.neck.out_channels == TINY.neck_widths[width_index]


def test_sampled_architectures_build_and_train():
    rng = random.Random(3)
    for _ in range(3):
        _train_and_eval(TINY, TINY.sample(rng))


def test_spec_is_json_and_rebuilds_the_space_build():
    arch = TINY.sample(5)
    spec, size = TINY.spec(arch)
    assert json.loads(json.dumps(spec)) == spec and size == (64, 64)
    assert spec["detector"] == "fpnlite" and spec["neck_blocks"] == [str(v) for v in TINY.neck_layers(arch)]
    assert spec["backbone"] == TINY.encode(arch).split("|")[0] and spec["neck_width"] == arch["neck.width"]
    assert TINY.spec(TINY.encode(arch)) == (spec, size)
    assert count_params(build_from_spec(spec)) == count_params(TINY.build(arch))
    base, _ = TINY.baseline_spec()
    assert base["neck_blocks"] is None and base["neck_width"] == TINY.neck_widths[0]
    assert base["backbone"] == str(MBConvEncoding.parse(MBV2).scaled(0.25))
    assert build_from_spec(base).neck.mode == "sum"
    with pytest.raises(ValueError, match=r"neck_width 48 is not one of \(16, 32\)"):
        TINY.baseline_spec(48)


def test_mutate_changes_one_decision_and_descriptor_orders_sizes():
    rng = random.Random(1)
    arch = FULL.sample(rng)
    for _ in range(20):
        new = FULL.mutate(arch, rng)
        assert sum(new[k] != arch[k] for k in arch) == 1
        arch = new
    small, big = _uniform(FULL, MBLayer(3, 1)), _uniform(FULL, MBLayer(5, 6, True), 1)
    d_small, d_big, d_arch = (FULL.descriptor(a) for a in (small, big, arch))
    assert all(a <= b for a, b in zip(d_small, d_arch)) and all(a <= b for a, b in zip(d_arch, d_big))
    assert len(d_arch) == len(FULL)


def test_ppo_controller_drives_the_space():
    strategy = ControllerStrategy(TINY, seed=0)
    archs = strategy.ask(4)
    texts = [TINY.encode(a) for a in archs]
    assert [TINY.decode(t) for t in texts] == archs
    stats = strategy.tell([{"status": "ok", "reward": -1.0 - i / 10} for i in range(3)] + [{"status": "failed"}])
    assert stats["failed"] == 1 and len(strategy.ask(2)) == 2


def test_eod_reward_against_hand_computed_values():
    # hinge: 25 ms over a 20 ms target costs beta * 0.25; under the target nothing.
    assert eod_reward(0.8, 0.3, 25.0, target_ms=20.0) == pytest.approx(-(0.8 + 0.3 + 0.25))
    assert eod_reward(0.8, 0.3, 15.0, target_ms=20.0) == pytest.approx(-1.1)
    assert eod_reward(0.8, 0.3, 25.0, target_ms=20.0, lambda_c=2.0, lambda_r=0.5, beta=4.0) == \
        pytest.approx(-(1.6 + 0.15 + 1.0))
    # linear: beta * lat / T, below the target too.
    assert eod_reward(0.8, 0.3, 15.0, target_ms=20.0, form="linear", beta=2.0) == pytest.approx(-(1.1 + 1.5))
    assert latency_term(40.0, target_ms=20.0) == 1.0 and latency_term(10.0, target_ms=20.0, form="linear") == 0.5
    for kwargs, match in [({"target_ms": 0.0}, "target_ms must be > 0"), ({"target_ms": 20.0, "form": "log"},
                                                                           "form must be one of"),
                          ({"target_ms": 20.0, "beta": -1.0}, "beta must be a finite number >= 0")]:
        with pytest.raises(ValueError, match=match):
            eod_reward(0.8, 0.3, 25.0, **kwargs)
    with pytest.raises(ValueError, match="cls_loss must be a finite number, got nan"):
        eod_reward(float("nan"), 0.3, 25.0, target_ms=20.0)
