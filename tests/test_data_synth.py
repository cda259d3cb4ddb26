"""The embedded synthetic dataset: determinism, statistics, the occlusion rule, safe writing."""
import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from nasx.data import synth
from nasx.data.synth import CLASSES, DECOYS, SHAPE_CLASSES, SHAPE_DECOYS, SynthConfig, categories, write_synth_dataset

N_TRAIN, N_VAL = 40, 6


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synth_dataset(out, train=N_TRAIN, val=N_VAL, seed=3, workers=0)
    return out


@pytest.fixture(scope="module")
def train_json(dataset_dir):
    return json.loads((dataset_dir / "annotations" / "instances_train.json").read_text())


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_pycocotools_reads_it(dataset_dir):
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        assert len(list((dataset_dir / split).glob("*.jpg"))) == n
        coco = COCO(str(dataset_dir / "annotations" / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == n
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
    assert not list((dataset_dir / "annotations").glob("*.tmp"))


def test_same_seed_same_bytes_for_any_worker_count(dataset_dir, tmp_path):
    write_synth_dataset(tmp_path / "again", train=N_TRAIN, val=N_VAL, seed=3, workers=2)
    assert _files(tmp_path / "again") == _files(dataset_dir)


def test_other_seed_other_data(train_json, tmp_path):
    write_synth_dataset(tmp_path, train=8, val=0, seed=4, workers=0)
    other = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    assert other["annotations"] != [a for a in train_json["annotations"] if a["image_id"] <= 8]
    assert other["info"]["seed"] == 4 and train_json["info"]["seed"] == 3


def test_shape_classes_and_decoys():
    assert SynthConfig().classes == "shapes"
    assert [c["name"] for c in categories()] == ["disc", "square", "triangle", "cross"]
    assert not set(SHAPE_DECOYS) & set(SHAPE_CLASSES)
    # a ring is a disc with a hole, a star a cross-like outline: decoys that need the silhouette
    u, v = np.meshgrid(np.linspace(-1.2, 1.2, 97), np.linspace(-1.2, 1.2, 97))
    ring, disc, star = (synth._shape_mask(k, u, v) for k in ("ring", "disc", "star"))
    assert ring.sum() < disc.sum() and not ring[48, 48] and disc[48, 48]
    assert star[48, 48] and 0.2 < star.sum() / disc.sum() < 0.8


def test_shape_pattern_dataset(tmp_path):
    write_synth_dataset(tmp_path, train=12, val=0, seed=2, workers=0, config=SynthConfig(classes="shape_pattern"))
    data = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in data["categories"]] == [c[0] for c in CLASSES]
    assert {a["category_id"] for a in data["annotations"]} <= set(range(1, len(CLASSES) + 1))


def test_classes_need_shape_and_pattern():
    shapes = {s for _, s, _ in CLASSES}
    patterns = {p for _, _, p in CLASSES}
    # neither the shape nor the pattern alone names the class
    assert all(sum(c[1] == s for c in CLASSES) >= 2 for s in shapes)
    assert all(sum(c[2] == p for c in CLASSES) >= 2 for p in patterns)
    # every other combination is drawn, unannotated, as a decoy
    assert not {(c[1], c[2]) for c in CLASSES} & set(DECOYS)
    assert len({(c[1], c[2]) for c in CLASSES}) + len([d for d in DECOYS if d[1] != "solid"]) == len(shapes) * len(patterns)
    assert [c["id"] for c in categories(SynthConfig(classes="shape_pattern"))] == list(range(1, len(CLASSES) + 1))


def test_statistics(train_json):
    s = SynthConfig().size
    anns = train_json["annotations"]
    sides = np.array([max(a["bbox"][2], a["bbox"][3]) for a in anns], float)
    # from a few percent to about half the image side: at least two octaves, several pyramid levels
    assert sides.min() <= 0.15 * s and sides.max() >= 0.4 * s
    octaves = np.floor(np.log2(sides / sides.min()))
    assert len(set(octaves.tolist())) >= 2
    counts = np.bincount([a["image_id"] for a in anns], minlength=N_TRAIN + 1)[1:]
    assert len(set(counts.tolist())) >= 4  # object counts vary
    assert {a["category_id"] for a in anns} == set(range(1, len(SHAPE_CLASSES) + 1))
    for img in train_json["images"]:
        assert (img["width"], img["height"]) == (s, s)


def test_annotations_describe_visible_pixels(train_json):
    """bbox and area are those of the RLE mask of the visible pixels; visible masks of one
    image never overlap; the occlusion rule keeps at least min_visible of every object."""
    cfg = SynthConfig()
    by_image = {}
    for a in train_json["annotations"]:
        m = mask_utils.decode(a["segmentation"]).astype(bool)
        ys, xs = np.nonzero(m)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert a["area"] == m.sum() and a["iscrowd"] == 0
        assert cfg.min_visible <= a["visible"] <= 1
        by_image.setdefault(a["image_id"], []).append(m)
    for masks in by_image.values():
        assert np.stack(masks).sum(0).max() <= 1
    visible = np.array([a["visible"] for a in train_json["annotations"]])
    assert (visible < 0.95).mean() > 0.05  # occlusion and truncation do happen


@pytest.mark.parametrize("min_visible", [0.3, 0.9])
def test_occlusion_threshold_is_a_knob(min_visible):
    cfg = SynthConfig(min_visible=min_visible, max_objects=10)
    shares = []
    for i in range(12):
        _, objects = synth.render_image(cfg, np.random.default_rng(i))
        shares += [v for _, _, v in objects]
    assert min(shares) >= min_visible - 1e-9


def test_images_are_not_trivial(dataset_dir):
    from PIL import Image

    img = np.asarray(Image.open(dataset_dir / "train" / "000001.jpg")).astype(float)
    assert img.shape == (128, 128, 3)
    assert img.std() > 10  # textured, not flat
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 1000


def test_refuses_non_empty_directory_and_force_replaces(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=f"{tmp_path} is not empty"):
        write_synth_dataset(tmp_path, train=2, val=1, workers=0)
    write_synth_dataset(tmp_path, train=3, val=1, workers=0, force=True)
    write_synth_dataset(tmp_path, train=2, val=1, workers=0, force=True)
    assert len(list((tmp_path / "train").iterdir())) == 2  # the old images are gone
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_interrupted_run_leaves_no_annotation_file(tmp_path, monkeypatch):
    real = synth._make_one

    def failing(job):
        if job[3] == 5:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(synth, "_make_one", failing)
    with pytest.raises(KeyboardInterrupt):
        write_synth_dataset(tmp_path, train=10, val=2, workers=0)
    assert list((tmp_path / "annotations").iterdir()) == []


def test_bad_config_named():
    with pytest.raises(ValueError, match="expected 0 < min_scale <= max_scale <= 1, got 0.5 and 0.2"):
        SynthConfig(min_scale=0.5, max_scale=0.2)
    with pytest.raises(ValueError, match='expected classes "shapes" or "shape_pattern", got "animals"'):
        SynthConfig(classes="animals")
    with pytest.raises(ValueError, match='expected image_format "jpg" or "png", got "gif"'):
        SynthConfig(image_format="gif")
    with pytest.raises(ValueError, match="expected non-negative image counts"):
        write_synth_dataset("/nonexistent-nasx", train=-1)


def test_png_and_other_size(tmp_path):
    write_synth_dataset(tmp_path, train=3, val=0, workers=0, config=SynthConfig(size=64, image_format="png"))
    data = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    assert [i["file_name"] for i in data["images"]] == ["000001.png", "000002.png", "000003.png"]
    assert all(i["width"] == 64 for i in data["images"])
    assert all(a["bbox"][0] + a["bbox"][2] <= 64 for a in data["annotations"])
    assert math.isclose(data["info"]["config"]["size"], 64)
