"""Faster R-CNN and Cascade R-CNN: against torchvision's Faster R-CNN with the same weights, the
cascade's rules, training on tiny data, bad inputs, and SM-NAS's E0-E5 built by name."""
import json

import pytest
import torch
from torch import nn

from nasx.cli import main
from nasx.data import build_loader, synth_dataset
from runhelpers import tiny_synth
from nasx.data.transforms import detection_transforms
from nasx.evaluate import count_detector_macs, count_params, evaluate_detector
from nasx.models.detectors.roi_heads import RoIHeads, cascade_settings
from nasx.models.detectors.roi_pool import MultiLevelRoIAlign, assign_levels
from nasx.spaces.detectors import build_cascade_rcnn, build_faster_rcnn
from nasx.spaces.sm_nas_models import SM_NAS_MODELS, sm_nas_model_spec
from nasx.spaces.detectors import build_from_spec
from nasx.train import TrainConfig, train

torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tiny_synth(tmp_path_factory, train=4, val=4)


def _copy_torchvision_weights(tv: nn.Module, nx: nn.Module) -> None:
    """torchvision's and nasx's Faster R-CNN declare their parameters and buffers in the same order."""
    tv_sd = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    nx_keys = [k for k in nx.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(tv_sd) == len(nx_keys)
    state = {}
    for (tk, tvalue), nk in zip(tv_sd.items(), nx_keys):
        assert tvalue.shape == nx.state_dict()[nk].shape, (tk, nk)
        state[nk] = tvalue
    nx.load_state_dict(state, strict=False)


def test_faster_rcnn_equals_torchvision():
    """Same weights, same random images: the same FPN levels, RPN proposals and detections (CPU)."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn
    from torchvision.models.detection.image_list import ImageList

    torch.manual_seed(0)
    tv = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).eval()
    nx = build_faster_rcnn(backbone="resnet50", num_classes=90).eval()
    assert count_params(nx) == count_params(tv)
    _copy_torchvision_weights(tv, nx)
    images = torch.randn(2, 3, 256, 320)
    sizes = [(256, 320), (224, 288)]  # the second image is padded
    with torch.no_grad():
        tv_levels = tv.backbone(images)
        nx_levels = nx.levels(images)
        for a, b in zip(tv_levels.values(), nx_levels.values()):
            torch.testing.assert_close(b, a)
        tv_props, _ = tv.rpn(ImageList(images, sizes), tv_levels)
        nx_props, _ = nx.rpn(list(nx_levels.values()), sizes)
        tv_dets, _ = tv.roi_heads(tv_levels, tv_props, sizes)
        nx_dets = nx(images, sizes)
    for a, b in zip(tv_props, nx_props):
        assert a.shape[0] > 100
        torch.testing.assert_close(b, a)
    for a, b in zip(tv_dets, nx_dets):
        assert a["boxes"].shape[0] > 0
        torch.testing.assert_close(b["boxes"], a["boxes"])
        torch.testing.assert_close(b["scores"], a["scores"])
        torch.testing.assert_close(b["labels"], a["labels"] - 1)  # torchvision's 0 is the background
    # COCO's 80 classes: torchvision counts the background as a class.
    with torch.device("meta"):
        assert count_params(build_faster_rcnn(backbone="resnet50", num_classes=80)) == count_params(
            fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=81))


def test_level_assignment_and_pooling_match_torchvision():
    from torchvision.ops import MultiScaleRoIAlign

    g = torch.Generator().manual_seed(1)
    xy = torch.rand(300, 2, generator=g) * 200
    wh = torch.rand(300, 2, generator=g) ** 2 * 900 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    levels = [torch.randn(2, 8, 64 // s, 80 // s, generator=g) for s in (1, 2, 4, 8)]  # strides 4-32 of 256 x 320
    per_image = [boxes[:150], boxes[150:]]
    tv = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    expected = tv({str(i): x for i, x in enumerate(levels)}, per_image, [(256, 320)] * 2)
    got = MultiLevelRoIAlign(output_size=7, sampling_ratio=2)(levels, [4, 8, 16, 32], per_image)
    torch.testing.assert_close(got, expected)
    which = assign_levels(boxes, [2, 3, 4, 5])
    assert which.min() == 0 and which.max() == 3  # the clamp is reached on both sides
    with pytest.raises(ValueError, match="consecutive powers of two"):
        MultiLevelRoIAlign()(levels[:2], [4, 16], per_image)


class _Constant(nn.Module):
    """A stage whose logits and deltas are fixed: the cascade's score rule is then checkable by hand."""

    class_agnostic = True

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        r = x.shape[0]
        return self.logits.expand(r, -1) + self.w, torch.zeros(r, 4) + self.w


def test_cascade_score_is_the_mean_of_the_stages():
    stages = [_Constant([0.0, 2.0, 0.0]), _Constant([0.0, 0.0, 3.0]), _Constant([1.0, 1.0, 1.0])]
    heads = RoIHeads(box_pool=MultiLevelRoIAlign(output_size=2), box_heads=[nn.Flatten() for _ in stages],
                     box_predictors=stages, num_classes=2, score_thresh=0.0).eval()
    level = torch.randn(1, 4, 16, 16)
    proposals = [torch.tensor([[2.0, 2.0, 30.0, 30.0]])]
    dets = heads([level], [4], proposals, [(64, 64)])[0]
    expected = torch.stack([torch.softmax(s.logits, 0) for s in stages]).mean(0)[1:]
    order = dets["labels"].argsort()
    torch.testing.assert_close(dets["scores"][order], expected)
    torch.testing.assert_close(dets["boxes"], proposals[0].expand(2, 4))  # zero deltas keep the box


def test_cascade_settings_and_errors():
    assert [s.iou for s in cascade_settings(3)] == [0.5, 0.6, 0.7]
    assert [s.loss_weight for s in cascade_settings(3)] == [1.0, 0.5, 0.25]
    assert len(cascade_settings(2)) == 2 and len(cascade_settings(4)) == 4
    for n in (1, 5):
        with pytest.raises(ValueError, match="2 to 4 stages"):
            cascade_settings(n)
    with pytest.raises(ValueError, match="class-agnostic"):
        from nasx.models.heads.roi_box_head import BoxPredictor

        RoIHeads(box_pool=MultiLevelRoIAlign(), box_heads=[nn.Flatten()] * 2,
                 box_predictors=[BoxPredictor(in_channels=4, num_classes=2)] * 2, num_classes=2)
    with pytest.raises(ValueError, match="rpn must be one of"):
        build_faster_rcnn(backbone="resnet18", num_classes=2, rpn="rpn2")


def _tiny(kind, seed=0, **kwargs):
    torch.manual_seed(seed)
    build = build_cascade_rcnn if kind == "cascade" else build_faster_rcnn
    return build(backbone="basicblock_8_1-21-21-21", num_classes=4, fpn_channels=16, norm="gn", fc_channels=64,
                 batch_size_per_image=64, **kwargs)


@pytest.mark.parametrize("kind", ["faster", "cascade"])
def test_overfits_a_few_images(tiny_data, kind):
    """Loss falls and COCO AP50 on the training images rises."""
    model = _tiny(kind)
    ds = synth_dataset(tiny_data, "train", transforms=detection_transforms(False, 64))
    loader = build_loader(ds, 4, shuffle=False, seed=0)
    before = evaluate_detector(model, ds, loader)["AP50"]
    batch = next(iter(loader))
    model.train()
    torch.manual_seed(1)
    first = float(sum(model(batch.images, batch.image_sizes, batch.targets).values()).detach())
    train(model, loader, TrainConfig(epochs=150, lr=0.01, warmup_steps=10, grad_clip=10.0,
                                     checkpoint_every=10**6), progress=False)
    model.train()
    torch.manual_seed(1)
    losses = model(batch.images, batch.image_sizes, batch.targets)
    if kind == "cascade":
        assert {"roi_cls_1", "roi_reg_3", "rpn_cls", "rpn_reg"} <= set(losses)
    assert float(sum(losses.values()).detach()) < 0.5 * first
    after = evaluate_detector(model, ds, loader)["AP50"]
    assert after > before + 0.3, (before, after)


@pytest.mark.parametrize("kind,rpn", [("faster", "rpn"), ("cascade", "ga")])
def test_bad_training_inputs(kind, rpn):
    """Images without objects, degenerate boxes and a batch without any box train without error."""
    model = _tiny(kind, rpn=rpn).train()
    images = torch.randn(3, 3, 64, 64)
    targets = [
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[10.0, 10.0, 10.0, 30.0], [5.0, 5.0, 40.0, 50.0]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[20.0, 20.0, 20.0, 20.0]]), "labels": torch.tensor([3])},
    ]
    for batch in (targets, [targets[0], targets[0], targets[2]]):
        losses = model(images, None, batch)
        total = sum(losses.values())
        assert torch.isfinite(total)
        total.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ValueError, match="targets are required"):
        model(images)


def test_no_fpn_is_single_level_on_c4():
    model = build_faster_rcnn(backbone="resnet18", num_classes=3, fpn_levels=None, fc_channels=32).eval()
    assert model.neck is None and model.rpn.anchor_generator.num_anchors == 15
    dets = model(torch.randn(1, 3, 96, 128))
    assert set(dets[0]) == {"boxes", "scores", "labels"}
    macs = count_detector_macs(model, (96, 128), num_rois=10).by_prefix()
    assert set(macs) == {"backbone", "rpn", "roi_heads"}


def test_cli_train_and_eval_two_stage(tiny_data, tmp_path, capsys):
    run = tmp_path / "cascade"
    args = ["train", "--data", str(tiny_data), "--detector", "cascade_rcnn", "--cascade-stages", "2", "--rpn", "ga",
            "--backbone", "basicblock_8_1-21-21-21", "--fpn-channels", "16", "--fc-channels", "32",
            "--rois-per-image", "32", "--size", "64", "--max-steps", "2", "--batch-size", "2", "--workers", "0",
            "--out", str(run)]
    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert main(["eval", "--data", str(tiny_data), "--checkpoint", str(run / "last.pt"), "--workers", "0",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == metrics
    assert main(["train", "--data", str(tiny_data), "--detector", "fcos", "--rpn", "ga", "--out", str(run)]) == 1
    assert "only for --detector faster_rcnn / cascade_rcnn" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_data), "--detector", "faster_rcnn", "--cascade-stages", "3",
                 "--out", str(run)]) == 1
    assert "only for --detector cascade_rcnn" in capsys.readouterr().err


# Whole-detector parameters of the released models (vega's model zoo; E0, E2, E3 exact) and Table 2's
# backbone GMACs at each model's input.
RELEASED = {"sm-nas-e0": (16.23, 7.2), "sm-nas-e1": (37.83, 28.3), "sm-nas-e2": (33.02, 23.8),
            "sm-nas-e3": (52.05, 59.2), "sm-nas-e4": (92.0, 73.5), "sm-nas-e5": (90.47, 162.45)}


@pytest.mark.parametrize("name", sorted(SM_NAS_MODELS))
def test_sm_nas_models(name):
    spec, size = sm_nas_model_spec(name)
    with torch.device("meta"):
        model = build_from_spec(spec)
    params, gmacs = RELEASED[name]
    got = count_params(model) / 1e6
    if name in ("sm-nas-e0", "sm-nas-e2", "sm-nas-e3"):
        assert abs(got - params) <= 0.01, got
    else:
        assert abs(got - params) / params <= 0.05, got
    backbone = count_detector_macs(model, size).by_prefix()["backbone"] / 1e9
    assert abs(backbone - gmacs) / gmacs <= 0.03, backbone


def test_info_model(capsys):
    assert main(["info", "--model", "sm-nas-e0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input"] == [512, 512] and report["macs_at_rois"] == 1000
    assert abs(report["params"] / 1e6 - 16.23) <= 0.01
    assert abs(report["parts"]["backbone"]["macs"] / 1e9 - 7.2) / 7.2 <= 0.03
    assert report["parts"]["backbone"]["params"] == pytest.approx(7.64e6, rel=1e-3)
    assert main(["info", "--model", "sm-nas-e0", "--backbone", "resnet50"]) == 1
    assert "fixes the architecture" in capsys.readouterr().err
    assert main(["info", "--detector", "cascade_rcnn", "--backbone", "resnet18", "--cascade-stages", "4",
                 "--input", "128x128", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["parts"]) == {"backbone", "neck", "rpn", "roi_heads"}
