"""Pascal VOC reader on a small fixture written here: format, difficult flag, error paths."""
import numpy as np
import pytest
import torch
from PIL import Image

from nasx.data import VOC_CLASSES, AnnotationError, AnnotationWarning, VOCDetection

XML = """<annotation>
  <filename>{filename}</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>"""
OBJ = """<object><name>{name}</name><difficult>{difficult}</difficult>
  <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""


def _obj(name, x1, y1, x2, y2, difficult=0):
    return OBJ.format(name=name, x1=x1, y1=y1, x2=x2, y2=y2, difficult=difficult)


@pytest.fixture
def voc(tmp_path):
    """A VOC folder with two images; returns a writer for more XML files."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True)

    def add(vid, objects, w=50, h=40, filename=None, text=None):
        filename = filename or f"{vid}.jpg"
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(tmp_path / "JPEGImages" / filename)
        (tmp_path / "Annotations" / f"{vid}.xml").write_text(
            text if text is not None else XML.format(filename=filename, w=w, h=h, objects="".join(objects))
        )
        with open(tmp_path / "ImageSets/Main/train.txt", "a") as f:
            f.write(vid + "\n")

    add("000001", [_obj("dog", 1, 1, 10, 20), _obj("person", 5, 6, 30, 40, difficult=1)])
    add("000002", [_obj("car", 11, 12, 50, 13)], w=60, filename="second.jpg")
    return tmp_path, add


def test_sample_format_and_one_based_conversion(voc):
    root, _ = voc
    ds = VOCDetection(root, "train")
    assert len(ds) == 2 and ds.num_classes == 20 and ds.ids == ["000001", "000002"]
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 40, 50)
    assert target["boxes"].tolist() == [[0, 0, 10, 20]]  # xmin=1 is the first pixel: x1 = 0
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog")]
    assert target["difficult"].tolist() == [False]
    assert target["image_id"] == 0 and target["orig_size"] == (40, 50)
    image, target = ds[1]  # <filename> names the image
    assert image.shape == (3, 40, 60) and target["boxes"].tolist() == [[10, 11, 50, 13]]


def test_keep_difficult(voc):
    root, _ = voc
    t = VOCDetection(root, "train", keep_difficult=True).load_target(0)
    assert t["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert t["difficult"].tolist() == [False, True]
    assert t["boxes"].dtype == torch.float32


def test_custom_classes(voc):
    root, add = voc
    add("000003", [_obj("widget", 2, 2, 4, 4)])
    ds = VOCDetection(root, "train", class_names=["widget", "dog", "car", "person"])
    assert ds.load_target(2)["labels"].tolist() == [0] and ds.load_target(0)["labels"].tolist() == [1]


def test_malformed_xml_line_and_column(voc):
    root, add = voc
    add("000003", [], text="<annotation>\n  <size><width>5</width>\n</annotation>")
    with pytest.raises(AnnotationError, match=rf"{root}/Annotations/000003.xml: malformed XML at line 3, column 3"):
        VOCDetection(root, "train")


@pytest.mark.parametrize("objects,size,fragment", [
    ([_obj("dog", 1, 1, 5, 5).replace("<name>dog</name>", "")], None, "object 0: missing <name>"),
    ([_obj("dog", 1, 1, 5, 5).replace("<ymax>5</ymax>", "")], None, "object 0 ('dog') <bndbox>: missing <ymax>"),
    ([_obj("dog", 1, 1, 5, 5).replace("<xmin>1</xmin>", "<xmin>one</xmin>")], None,
     "object 0 ('dog') <bndbox>: expected a number in <xmin>, got 'one'"),
    ([_obj("cat", 1, 1, 5, 5), _obj("dragon", 1, 1, 5, 5)], None,
     "object 1 ('dragon'): unknown class 'dragon'; known classes: aeroplane, bicycle"),
    ([], "nosize", "missing <size>"),
])
def test_bad_field_names_file_and_object(voc, objects, size, fragment):
    root, add = voc
    text = None
    if size == "nosize":
        text = "<annotation><filename>000003.jpg</filename></annotation>"
    add("000003", objects, text=text)
    with pytest.raises(AnnotationError) as info:
        VOCDetection(root, "train")
    assert str(info.value).startswith(f"{root}/Annotations/000003.xml: {fragment}")


def test_missing_files(voc):
    root, add = voc
    with pytest.raises(FileNotFoundError, match=f"VOC split file {root}/ImageSets/Main/val.txt does not exist"):
        VOCDetection(root, "val")
    with open(root / "ImageSets/Main/train.txt", "a") as f:
        f.write("000009\n")
    with pytest.raises(FileNotFoundError, match=f"VOC annotation file {root}/Annotations/000009.xml does not exist"):
        VOCDetection(root, "train")


def test_missing_and_broken_images(voc):
    root, _ = voc
    ds = VOCDetection(root, "train")
    (root / "JPEGImages" / "second.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=rf"000002.xml: image file {root}/JPEGImages/second.jpg does not exist"):
        ds[1]
    (root / "JPEGImages" / "000001.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(OSError, match=r"000001.xml: cannot decode image file .*000001.jpg"):
        ds[0]


def test_bad_boxes_warn_with_xml_file(voc):
    root, add = voc
    add("000003", [_obj("dog", 40, 30, 70, 35), _obj("cat", 9, 9, 5, 20)])
    with pytest.warns(AnnotationWarning) as rec:
        ds = VOCDetection(root, "train")
    text = " | ".join(str(r.message) for r in rec)
    assert "000003.xml object 0 ('dog') [x1, y1, x2, y2] = [39, 29, 70, 35] in a 50x40 image" in text
    assert "000003.xml object 1 ('cat')" in text and "zero or negative size" in text
    assert ds.load_target(2)["boxes"].tolist() == [[39, 29, 50, 35]]
