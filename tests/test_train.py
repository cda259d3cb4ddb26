"""Training loop, checkpoints/resume, metrics and the train/eval commands, on tiny data."""
import json

import pytest
import torch

from nasx.cli import main
from nasx.commands.train import build_from_meta
from nasx.data import build_loader, synth_dataset
from runhelpers import tiny_synth
from nasx.data.transforms import detection_transforms
from nasx.evaluate import coco_map, evaluate_detector, predict, voc_ap50
from nasx.models.detectors import FCOS_SIZE_RANGES
from nasx.spaces.detectors import build_detector
from nasx.train import CheckpointError, TrainConfig, load_checkpoint, param_groups, train, warmup_cosine


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tiny_synth(tmp_path_factory, train=4, val=4)


def _model(seed=0):
    torch.manual_seed(seed)
    return build_detector("fcos", backbone="basicblock_8_1-21-21-21", num_classes=4, fpn_channels=16, norm="gn",
                          head_convs=1)


def _loader(root, split, train_mode, batch=4):
    ds = synth_dataset(root, split, transforms=detection_transforms(train_mode, 64, jitter=(1.0,)))
    return ds, build_loader(ds, batch, shuffle=train_mode, seed=0)


def test_schedule_and_param_groups():
    assert warmup_cosine(0, 100, 10, 0.001) == pytest.approx(0.001)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    decay, no_decay = param_groups(_model(), 1e-4)
    assert all(p.dim() == 4 for p in decay["params"])
    assert all(p.dim() <= 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0


def test_overfits_a_few_images(tiny_data):
    """Loss falls and mAP on the training images rises: the loop, losses and inference agree."""
    model = _model()
    ds, loader = _loader(tiny_data, "train", False)
    before = evaluate_detector(model, ds, loader)["AP50"]
    config = TrainConfig(epochs=150, lr=0.01, warmup_steps=10, grad_clip=10.0, checkpoint_every=10**6)
    result = train(model, loader, config, progress=False)
    assert result["steps"] == 150
    model.train()
    batch = next(iter(loader))
    losses = model(batch.images, batch.image_sizes, batch.targets)
    first = _model()(batch.images, batch.image_sizes, batch.targets)
    assert sum(losses.values()) < 0.5 * sum(first.values())
    after = evaluate_detector(model, ds, loader)["AP50"]
    assert after > before + 0.2, (before, after)


def test_resume_continues_exactly(tiny_data, tmp_path):
    """Killed after a checkpoint and started again, a run ends with the same weights."""
    _, loader = _loader(tiny_data, "train", True, batch=2)
    config = TrainConfig(epochs=3, lr=0.01, warmup_steps=2, checkpoint_every=3)
    straight = _model()
    train(straight, loader, config, progress=False)

    run = tmp_path / "run"
    interrupted = _model()

    class Stop(Exception):
        pass

    def stop_at(step):
        if step == 3:
            raise Stop
    with pytest.raises(Stop):
        train(interrupted, loader, config, out_dir=run, progress=False, on_checkpoint=stop_at)
    assert load_checkpoint(run / "last.pt")["step"] == 3
    resumed = _model(seed=123)  # different init: everything must come from the checkpoint
    result = train(resumed, loader, config, out_dir=run, progress=False)
    assert result["steps"] == 6
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_bad_checkpoint_is_named(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="last.pt cannot be read"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_metrics_on_ground_truth(tiny_data):
    """GT boxes as detections score AP 1 in COCOeval and VOC AP50; an empty result scores 0."""
    ds, loader = _loader(tiny_data, "val", False)
    preds, targets, results = [], [], []
    for i in range(len(ds)):
        t = ds.load_target(i)
        det = {"boxes": t["boxes"], "scores": torch.linspace(1, 0.5, len(t["labels"])), "labels": t["labels"]}
        preds.append(det)
        targets.append(t)
        results += ds.to_coco_results(t["image_id"], det["boxes"], det["scores"], det["labels"])
    assert coco_map(ds.coco, results)["AP"] == pytest.approx(1.0)
    assert voc_ap50(preds, targets, ds.num_classes)["mAP50"] == pytest.approx(1.0)
    assert coco_map(ds.coco, [])["AP"] == 0.0
    shifted = [{**p, "boxes": p["boxes"] + 1000} for p in preds]
    assert voc_ap50(shifted, targets, ds.num_classes)["mAP50"] == 0.0
    # predict() maps boxes back to the stored image size.
    out = predict(_model(), loader)
    assert len(out) == len(ds) and all(o["boxes"].shape[1] == 4 for o in out)


def test_cli_train_then_eval(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_data), "--backbone", "basicblock_8_1-21-21-21", "--fpn-channels", "16",
            "--size", "64", "--max-steps", "2", "--batch-size", "2", "--workers", "0", "--out", str(run)]
    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert main(["eval", "--data", str(tiny_data), "--checkpoint", str(run / "last.pt"), "--workers", "0",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == metrics
    # FCOS keeps its stride-tied size ranges at any image size; checkpoints written before that
    # (meta "range_scale") still rebuild the model they trained.
    meta = load_checkpoint(run / "last.pt")["meta"]
    assert "range_scale" not in meta["build"] and build_from_meta(meta).size_ranges == FCOS_SIZE_RANGES
    old = {"build": {**meta["build"], "range_scale": 0.25}}
    assert build_from_meta(old).size_ranges == tuple((lo / 4, hi / 4) for lo, hi in FCOS_SIZE_RANGES)


def test_cli_errors(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 1
    assert "missing annotations/instances_train.json" in capsys.readouterr().err
    (tmp_path / "x.pt").write_text("garbage")
    assert main(["eval", "--data", str(tmp_path), "--checkpoint", str(tmp_path / "x.pt")]) == 1
    assert "cannot be read" in capsys.readouterr().err


def test_predictions_for_another_class_count_are_named(tiny_data):
    ds = synth_dataset(tiny_data, "val")
    with pytest.raises(ValueError, match="label 6 is outside the 4 classes"):
        ds.to_coco_results(1, torch.tensor([[0.0, 0, 5, 5]]), torch.tensor([0.9]), torch.tensor([6]))
