"""COCO-format detection datasets (any ``instances_*.json``), read through pycocotools.

Sample format, shared by every nasx dataset::

    image:  uint8 Tensor[3, H, W], RGB
    target: {"boxes":     float32 Tensor[K, 4], (x1, y1, x2, y2) in pixels,
             "labels":    int64 Tensor[K], contiguous 0..C-1,
             "image_id":  int, the file's image id,
             "orig_size": (H, W) of the image as stored}

Labels are the categories sorted by id, so ``label_to_category_id`` /
``category_id_to_label`` translate between a model's classes and the file's ids (needed to
write detections back for COCOeval, see :meth:`CocoDetection.to_coco_results`).
"""
from __future__ import annotations

import contextlib
import io
import json
from numbers import Real
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor

from nasx.data.annotation_checks import AnnotationError, BoxReport, boxes_array, read_image

__all__ = ["CocoDetection", "load_coco_json"]


def _fail(path: Path, where: str, what: str):
    raise AnnotationError(f"{path}: {where}: {what}")


def _require(path: Path, entry: dict, keys: tuple, where: str) -> None:
    if not isinstance(entry, dict):
        _fail(path, where, f"expected an object, got {type(entry).__name__}")
    for k in keys:
        if k not in entry:
            _fail(path, where, f"missing key '{k}'")


def load_coco_json(path) -> dict:
    """Read and check a COCO instances file; errors name the file and the entry.

    Checks: valid JSON (line and column of a syntax error), the top-level ``images`` and
    ``categories`` lists (``annotations`` may be absent, as in image-info files), the keys
    each entry needs, unique ids, and that every annotation's image and category exist and
    its ``bbox`` is four numbers.

    Raises:
        FileNotFoundError, AnnotationError (a ValueError).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file {path} does not exist") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        _fail(path, "top level", f"expected a JSON object, got {type(data).__name__}")
    for key in ("images", "categories"):
        if key not in data:
            _fail(path, "top level", f"missing key '{key}'")
    data.setdefault("annotations", [])
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            _fail(path, key, f"expected a list, got {type(data[key]).__name__}")

    image_ids, category_ids, ann_ids = set(), set(), set()
    for i, img in enumerate(data["images"]):
        where = f"images[{i}]" + (f" (id {img['id']})" if isinstance(img, dict) and "id" in img else "")
        _require(path, img, ("id", "file_name", "width", "height"), where)
        if img["id"] in image_ids:
            _fail(path, where, f"duplicate image id {img['id']}")
        if not all(isinstance(img[k], Real) and img[k] > 0 for k in ("width", "height")):
            _fail(path, where, f"expected positive width and height, got {img['width']!r} x {img['height']!r}")
        image_ids.add(img["id"])
    for i, cat in enumerate(data["categories"]):
        where = f"categories[{i}]" + (f" (id {cat['id']})" if isinstance(cat, dict) and "id" in cat else "")
        _require(path, cat, ("id", "name"), where)
        if cat["id"] in category_ids:
            _fail(path, where, f"duplicate category id {cat['id']}")
        category_ids.add(cat["id"])
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        _require(path, ann, ("id", "image_id", "category_id", "bbox"), where)
        if ann["id"] in ann_ids:
            _fail(path, where, f"duplicate annotation id {ann['id']}")
        ann_ids.add(ann["id"])
        if ann["image_id"] not in image_ids:
            _fail(path, where, f"image_id {ann['image_id']!r} is not in 'images'")
        if ann["category_id"] not in category_ids:
            _fail(path, where, f"category_id {ann['category_id']!r} is not in 'categories'")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, Real) for v in bbox)):
            _fail(path, where, f"expected bbox [x, y, width, height] of four numbers, got {bbox!r}")
    return data


class CocoDetection(torch.utils.data.Dataset):
    """Detection samples from a COCO instances file and its image folder.

    Boxes outside their image are clipped, boxes without area are dropped, each with one
    :class:`~nasx.data.annotation_checks.AnnotationWarning` naming the annotation ids.
    Missing or undecodable images raise when the sample is read, naming path and image id.

    Args:
        image_dir: folder the ``file_name`` entries are relative to.
        ann_file: the instances JSON.
        transforms: optional ``f(image, target) -> (image, target)`` (see ``nasx.data.transforms``).
        include_crowd: keep ``iscrowd`` annotations as ordinary boxes (default: ignore them,
            as COCOeval does for matching).
        skip_empty: leave out images without any (kept) box.

    Attributes:
        coco: the ``pycocotools.coco.COCO`` index of the file, unchanged (ground truth for COCOeval).
        class_names (list[str]): name of each label.
        label_to_category_id (list[int]), category_id_to_label (dict[int, int]).
        image_ids (list[int]): image id of each sample, in file order.
    """

    def __init__(
        self,
        image_dir,
        ann_file,
        *,
        transforms: Optional[Callable] = None,
        include_crowd: bool = False,
        skip_empty: bool = False,
    ):
        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        self.transforms = transforms
        data = load_coco_json(self.ann_file)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
            self.coco.createIndex()

        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.class_names = [c["name"] for c in cats]
        self.label_to_category_id = [c["id"] for c in cats]
        self.category_id_to_label = {cid: i for i, cid in enumerate(self.label_to_category_id)}

        report = BoxReport(str(self.ann_file))
        per_image = {img["id"]: ([], []) for img in data["images"]}
        images = {img["id"]: img for img in data["images"]}
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0) and not include_crowd:
                continue
            img = images[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            entry = f"annotation {ann['id']} (image {img['id']} '{img['file_name']}')"
            box = report.check((x, y, x + w, y + h), img["width"], img["height"], entry)
            if box is not None:
                per_image[img["id"]][0].append(box)
                per_image[img["id"]][1].append(self.category_id_to_label[ann["category_id"]])
        report.warn()

        self._records = []  # (image id, file name, height, width, boxes[K, 4], labels[K])
        for img in data["images"]:
            boxes, labels = per_image[img["id"]]
            if skip_empty and not boxes:
                continue
            self._records.append(
                (img["id"], img["file_name"], int(img["height"]), int(img["width"]),
                 boxes_array(boxes), np.asarray(labels, np.int64))
            )
        self.image_ids = [r[0] for r in self._records]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self._records)

    def load_target(self, index: int) -> dict:
        """The target of sample ``index`` without decoding its image."""
        image_id, _, h, w, boxes, labels = self._records[index]
        return {
            "boxes": torch.from_numpy(boxes.copy()),
            "labels": torch.from_numpy(labels.copy()),
            "image_id": image_id,
            "orig_size": (h, w),
        }

    def __getitem__(self, index: int):
        image_id, file_name, h, w, _, _ = self._records[index]
        entry = f"{self.ann_file.name}: image id {image_id}"
        image = read_image(self.image_dir / file_name, entry)
        if tuple(image.shape[1:]) != (h, w):
            raise AnnotationError(
                f"{entry}: image file {self.image_dir / file_name} is {image.shape[2]}x{image.shape[1]} "
                f"(width x height) but the annotation file says {w}x{h}"
            )
        target = self.load_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def to_coco_results(self, image_id: int, boxes: Tensor, scores: Tensor, labels: Tensor) -> list[dict]:
        """Detections of one image as COCO result entries (for ``coco.loadRes`` / COCOeval).

        Args:
            image_id (int): the file's image id (``target["image_id"]``).
            boxes (Tensor[N, 4]): (x1, y1, x2, y2) in pixels of the image as stored.
            scores (Tensor[N]), labels (Tensor[N] int64, 0..C-1).

        Returns:
            list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
        """
        b = boxes.detach().to("cpu", torch.float64).reshape(-1, 4)
        xywh = torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1).tolist()
        labels = labels.tolist()
        bad = [l for l in labels if not 0 <= int(l) < len(self.label_to_category_id)]
        if bad:
            raise ValueError(f"to_coco_results: label {int(bad[0])} is outside the {len(self.label_to_category_id)} "
                             f"classes of {self.ann_file} (labels 0..{len(self.label_to_category_id) - 1}); "
                             "was the model built for another dataset?")
        cat = [self.label_to_category_id[int(l)] for l in labels]
        return [
            {"image_id": int(image_id), "category_id": c, "bbox": bb, "score": float(s)}
            for bb, c, s in zip(xywh, cat, scores.detach().cpu().tolist())
        ]
