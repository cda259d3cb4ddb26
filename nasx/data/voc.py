"""Pascal VOC detection datasets: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``.

Samples have the format of :mod:`nasx.data.coco` plus ``target["difficult"]`` (bool
Tensor[K]). VOC stores 1-based, inclusive pixel indices; they become continuous pixel
edges: ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (so a one-pixel box has width 1).
``image_id`` is the sample's position in the split file (VOC ids are strings; ``ids`` keeps them).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from nasx.data.annotation_checks import AnnotationError, BoxReport, boxes_array, read_image

__all__ = ["VOCDetection", "VOC_CLASSES", "parse_voc_xml"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def _text(path: Path, node, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise AnnotationError(f"{path}: {where}: missing <{tag}>")
    return child.text.strip()


def _number(path: Path, node, tag: str, where: str) -> float:
    text = _text(path, node, tag, where)
    try:
        return float(text)
    except ValueError:
        raise AnnotationError(f"{path}: {where}: expected a number in <{tag}>, got '{text}'") from None


def parse_voc_xml(path, class_names: Sequence[str]) -> dict:
    """Parse one VOC annotation file.

    Returns:
        {"filename": str, "width": int, "height": int, "objects": list of
        {"name", "label", "box": [x1, y1, x2, y2] (pixel edges), "difficult": bool, "index"}}.

    Raises:
        FileNotFoundError; AnnotationError for malformed XML (with line and column), a
        missing field, or a class name not in ``class_names`` (the message names the object).
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise FileNotFoundError(f"VOC annotation file {path} does not exist") from None
    except ET.ParseError as e:
        line, col = e.position
        raise AnnotationError(f"{path}: malformed XML at line {line}, column {col + 1}: {e}") from None
    size = root.find("size")
    if size is None:
        raise AnnotationError(f"{path}: missing <size>")
    width, height = _number(path, size, "width", "<size>"), _number(path, size, "height", "<size>")
    if width <= 0 or height <= 0:
        raise AnnotationError(f"{path}: <size>: expected positive width and height, got {width:g} x {height:g}")
    index = {name: i for i, name in enumerate(class_names)}
    objects = []
    for k, obj in enumerate(root.findall("object")):
        where = f"object {k}"
        name = _text(path, obj, "name", where)
        where = f"object {k} ('{name}')"
        if name not in index:
            raise AnnotationError(f"{path}: {where}: unknown class '{name}'; known classes: {', '.join(class_names)}")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise AnnotationError(f"{path}: {where}: missing <bndbox>")
        xmin, ymin, xmax, ymax = (_number(path, bnd, t, f"{where} <bndbox>") for t in ("xmin", "ymin", "xmax", "ymax"))
        difficult = obj.find("difficult")
        objects.append({
            "name": name,
            "label": index[name],
            "box": [xmin - 1, ymin - 1, xmax, ymax],
            "difficult": difficult is not None and (difficult.text or "0").strip() not in ("0", ""),
            "index": k,
        })
    filename = root.findtext("filename")
    return {
        "filename": filename.strip() if filename and filename.strip() else None,
        "width": int(width),
        "height": int(height),
        "objects": objects,
    }


class VOCDetection(torch.utils.data.Dataset):
    """Detection samples from a Pascal VOC folder (``VOCdevkit/VOC2007`` or alike).

    All XML files of the split are parsed when the dataset is built, so malformed files and
    unknown classes fail early; boxes outside the image are clipped and empty ones dropped,
    with one :class:`~nasx.data.annotation_checks.AnnotationWarning` naming the XML files.

    Args:
        root: the folder holding ``Annotations``, ``JPEGImages`` and ``ImageSets``.
        split: name of the list in ``ImageSets/Main`` ("train", "val", "trainval", "test").
        class_names: the classes, in label order (default: the 20 VOC classes).
        keep_difficult: keep objects marked difficult (flagged in ``target["difficult"]``);
            by default they are left out.
        transforms: optional ``f(image, target) -> (image, target)``.
    """

    def __init__(
        self,
        root,
        split: str = "trainval",
        *,
        class_names: Sequence[str] = VOC_CLASSES,
        keep_difficult: bool = False,
        transforms: Optional[Callable] = None,
    ):
        self.root, self.split = Path(root), split
        self.class_names = list(class_names)
        self.transforms = transforms
        split_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
        try:
            lines = split_file.read_text().splitlines()
        except FileNotFoundError:
            raise FileNotFoundError(f"VOC split file {split_file} does not exist") from None
        self.ids = [line.split()[0] for line in lines if line.strip()]

        report = BoxReport(str(self.root / "Annotations"))
        self._records = []  # (xml path, image path, height, width, boxes[K, 4], labels[K], difficult[K])
        for vid in self.ids:
            xml = self.root / "Annotations" / f"{vid}.xml"
            ann = parse_voc_xml(xml, self.class_names)
            boxes, labels, difficult = [], [], []
            for obj in ann["objects"]:
                if obj["difficult"] and not keep_difficult:
                    continue
                entry = f"{xml.name} object {obj['index']} ('{obj['name']}')"
                box = report.check(obj["box"], ann["width"], ann["height"], entry)
                if box is not None:
                    boxes.append(box)
                    labels.append(obj["label"])
                    difficult.append(obj["difficult"])
            image = self.root / "JPEGImages" / (ann["filename"] or f"{vid}.jpg")
            self._records.append((xml, image, ann["height"], ann["width"], boxes_array(boxes),
                                  np.asarray(labels, np.int64), np.asarray(difficult, bool)))
        report.warn()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self._records)

    def load_target(self, index: int) -> dict:
        """The target of sample ``index`` without decoding its image."""
        _, _, h, w, boxes, labels, difficult = self._records[index]
        return {
            "boxes": torch.from_numpy(boxes.copy()),
            "labels": torch.from_numpy(labels.copy()),
            "difficult": torch.from_numpy(difficult.copy()),
            "image_id": index,
            "orig_size": (h, w),
        }

    def __getitem__(self, index: int):
        xml, path, h, w = self._records[index][:4]
        image = read_image(path, f"{xml}")
        if tuple(image.shape[1:]) != (h, w):
            raise AnnotationError(
                f"{xml}: image file {path} is {image.shape[2]}x{image.shape[1]} (width x height) "
                f"but <size> says {w}x{h}"
            )
        target = self.load_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
