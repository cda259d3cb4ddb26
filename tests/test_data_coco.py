"""COCO reader: sample format, label mapping, a pycocotools round trip, and every error path."""
import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.cocoeval import COCOeval

from nasx.data import AnnotationError, AnnotationWarning, CocoDetection, UnreadableImageError, synth_dataset
from nasx.data.synth import write_synth_dataset


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synth_dataset(out, train=4, val=16, seed=11, workers=0)
    return out


def _image(path, w=40, h=30):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _base():
    return {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 20, "file_name": "b.png", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 10, 5], "iscrowd": 0, "area": 50},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [20, 10, 5.5, 4], "iscrowd": 0, "area": 22},
            {"id": 3, "image_id": 20, "category_id": 11, "bbox": [0, 0, 40, 30], "iscrowd": 1, "area": 1200},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 11, "name": "crowd"}],
    }


@pytest.fixture
def small(tmp_path):
    """Write a hand-made COCO file; returns a function (data=None) -> ann_file path."""
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")

    def write(data=None, text=None):
        path = tmp_path / "instances.json"
        path.write_text(text if text is not None else json.dumps(data or _base()))
        return path

    return write


def test_sample_format_and_label_mapping(small, tmp_path):
    ds = CocoDetection(tmp_path, small())
    assert ds.class_names == ["cat", "dog", "crowd"]
    assert ds.label_to_category_id == [3, 7, 11] and ds.category_id_to_label == {3: 0, 7: 1, 11: 2}
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert torch.equal(target["boxes"], torch.tensor([[1.0, 2, 11, 7], [20, 10, 25.5, 14]]))
    assert target["labels"].tolist() == [1, 0]
    assert target["image_id"] == 10 and target["orig_size"] == (30, 40)
    assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(np.array(Image.open(tmp_path / "a.png"))))


def test_crowd_ignored_by_default(small, tmp_path):
    path = small()
    assert len(CocoDetection(tmp_path, path)[1][1]["boxes"]) == 0
    t = CocoDetection(tmp_path, path, include_crowd=True)[1][1]
    assert t["labels"].tolist() == [2] and t["boxes"].tolist() == [[0, 0, 40, 30]]
    assert CocoDetection(tmp_path, path, skip_empty=True).image_ids == [10]


def test_transforms_are_applied(small, tmp_path):
    ds = CocoDetection(tmp_path, small(), transforms=lambda im, t: (im[:, :10], dict(t, seen=True)))
    image, target = ds[0]
    assert image.shape == (3, 10, 40) and target["seen"]


def test_round_trip_through_cocoeval_gives_ap_one(synth_dir):
    """Ground truth read by the loader and written back as detections scores AP = 1.0:
    boxes, ids and the label <-> category mapping survive the round trip."""
    ds = synth_dataset(synth_dir, "val")
    results = []
    for i in range(len(ds)):
        t = ds.load_target(i)
        results += ds.to_coco_results(t["image_id"], t["boxes"], torch.ones(len(t["labels"])), t["labels"])
    assert len(results) == len(ds.coco.getAnnIds())
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(ds.coco, ds.coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0) and ev.stats[1] == pytest.approx(1.0)
    # a shifted set of detections must not score 1: the check can fail
    for r in results:
        r["bbox"][0] += r["bbox"][2] * 0.6
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(ds.coco, ds.coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] < 0.2


def test_synth_sample_matches_file(synth_dir):
    ds = synth_dataset(synth_dir, "train")
    image, target = ds[2]
    assert image.shape == (3, 128, 128) and target["image_id"] == 3
    anns = ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=3))
    assert target["boxes"].tolist() == [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                         a["bbox"][1] + a["bbox"][3]] for a in anns]


# ----------------------------------------------------------------------------- error paths


def _mutate(fn):
    data = copy.deepcopy(_base())
    fn(data)
    return data


BAD_FILES = [
    (lambda d: d.pop("images"), "top level: missing key 'images'"),
    (lambda d: d.pop("categories"), "top level: missing key 'categories'"),
    (lambda d: d.update(annotations={}), "annotations: expected a list, got dict"),
    (lambda d: d["images"][1].pop("file_name"), "images[1] (id 20): missing key 'file_name'"),
    (lambda d: d["images"][0].update(width=0), "images[0] (id 10): expected positive width and height, got 0 x 30"),
    (lambda d: d["images"][1].update(id=10), "images[1] (id 10): duplicate image id 10"),
    (lambda d: d["annotations"][1].pop("bbox"), "annotations[1] (id 2): missing key 'bbox'"),
    (lambda d: d["annotations"][2].pop("id"), "annotations[2]: missing key 'id'"),
    (lambda d: d["annotations"][0].update(image_id=99), "annotations[0] (id 1): image_id 99 is not in 'images'"),
    (lambda d: d["annotations"][0].update(category_id=5), "annotations[0] (id 1): category_id 5 is not in 'categories'"),
    (lambda d: d["annotations"][1].update(bbox=[1, 2, 3]), "annotations[1] (id 2): expected bbox [x, y, width, height] of four numbers, got [1, 2, 3]"),
    (lambda d: d["annotations"][1].update(bbox=[1, 2, "3", 4]), "of four numbers, got [1, 2, '3', 4]"),
    (lambda d: d["annotations"][1].update(id=1), "annotations[1] (id 1): duplicate annotation id 1"),
    (lambda d: d["categories"][0].pop("name"), "categories[0] (id 3): missing key 'name'"),
    (lambda d: d["annotations"].append(5), "annotations[3]: expected an object, got int"),
]


@pytest.mark.parametrize("mutate,fragment", BAD_FILES)
def test_malformed_entry_named(small, tmp_path, mutate, fragment):
    path = small(_mutate(mutate))
    with pytest.raises(AnnotationError) as info:
        CocoDetection(tmp_path, path)
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)


def test_malformed_json_gives_line_and_column(small, tmp_path):
    path = small(text='{\n  "images": [\n    {"id": 1,, "file_name": "a.png"}\n  ]\n}')
    with pytest.raises(AnnotationError, match=rf"{path}: malformed JSON at line 3, column 14: Expecting property name"):
        CocoDetection(tmp_path, path)
    path = small(text="[1, 2]")
    with pytest.raises(AnnotationError, match="top level: expected a JSON object, got list"):
        CocoDetection(tmp_path, path)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"COCO annotation file {tmp_path}/nope.json does not exist"):
        CocoDetection(tmp_path, tmp_path / "nope.json")


def test_missing_image_names_path_and_id(small, tmp_path):
    ds = CocoDetection(tmp_path, small())
    (tmp_path / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=rf"instances.json: image id 20: image file {tmp_path}/b.png does not exist"):
        ds[1]


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_undecodable_image_names_path_and_id(small, tmp_path, content):
    if content == "truncated":
        Image.fromarray(np.full((30, 40, 3), 100, np.uint8)).save(tmp_path / "b.jpg")
        content = (tmp_path / "b.jpg").read_bytes()[:200]
    (tmp_path / "b.png").write_bytes(content)
    ds = CocoDetection(tmp_path, small())
    with pytest.raises(UnreadableImageError, match=rf"image id 20: cannot decode image file {tmp_path}/b.png"):
        ds[1]


def test_image_size_disagreeing_with_file(small, tmp_path):
    _image(tmp_path / "b.png", w=41)
    with pytest.raises(AnnotationError, match=r"image id 20: image file .*b.png is 41x30 \(width x height\) but the annotation file says 40x30"):
        CocoDetection(tmp_path, small())[1]


def test_box_outside_image_is_clipped_with_warning(small, tmp_path):
    data = _base()
    data["annotations"][0]["bbox"] = [-5, 20, 10, 15]  # x from -5, y to 35 > 30
    with pytest.warns(AnnotationWarning) as rec:
        ds = CocoDetection(tmp_path, small(data))
    msg = str(rec[0].message)
    assert "instances.json: 1 box(es) extend outside their image and were clipped to it" in msg
    assert "annotation 1 (image 10 'a.png') [x1, y1, x2, y2] = [-5, 20, 5, 35] in a 40x30 image" in msg
    assert ds.load_target(0)["boxes"][0].tolist() == [0, 20, 5, 30]


@pytest.mark.parametrize("bbox,why", [
    ([3, 4, 0, 5], "zero or negative size"),
    ([3, 4, -2, 5], "zero or negative size"),
    ([50, 4, 5, 5], "outside its 40x30 image"),
    ([3, float("nan"), 5, 5], "not finite"),
])
def test_box_without_area_is_dropped_with_warning(small, tmp_path, bbox, why):
    data = _base()
    data["annotations"][1]["bbox"] = bbox
    with pytest.warns(AnnotationWarning, match=r"1 box\(es\) have no area inside their image and were dropped") as rec:
        ds = CocoDetection(tmp_path, small(data))
    assert "annotation 2 (image 10 'a.png')" in str(rec[0].message) and why in str(rec[0].message)
    assert ds.load_target(0)["labels"].tolist() == [1]


def test_many_bad_boxes_one_short_warning(small, tmp_path):
    data = _base()
    data["annotations"] = [
        {"id": 100 + i, "image_id": 10, "category_id": 3, "bbox": [i, 0, 0, 3]} for i in range(40)
    ]
    with pytest.warns(AnnotationWarning) as rec:
        CocoDetection(tmp_path, small(data))
    assert len(rec) == 1 and "40 box(es)" in str(rec[0].message) and "(35 more)" in str(rec[0].message)
