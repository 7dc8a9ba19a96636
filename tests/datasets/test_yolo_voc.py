"""YOLO and Pascal VOC readers/writers, format detection and the COCO -> YOLO -> VOC -> COCO trip."""

import numpy as np
import pytest
import rasterio
import yaml

from detector.labels.coco import read_coco, write_coco
from detector.datasets.convert import convert, detect_format
from detector.labels import ImageRecord, LabelSet
from detector.datasets.voc import read_voc, write_voc
from detector.datasets.yolo import label_path, read_yolo, write_yolo

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def write_image(path, width, height, count=3, dtype="uint8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                       dtype=dtype) as dst:
        dst.write(np.zeros((count, height, width), dtype))
    return path


def make_coco(tmp_path, n=4, seed=0):
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        w, h = int(rng.integers(60, 200)), int(rng.integers(60, 200))
        p = write_image(tmp_path / "src" / ("a" if i % 2 else "b") / f"im{i}.tif", w, h)
        k = 0 if i == n - 1 else int(rng.integers(1, 6))  # the last image is empty
        xy = rng.uniform(0, [w - 20, h - 20], (k, 2))
        wh = rng.uniform(2, 20, (k, 2))
        images.append(ImageRecord(p, w, h, np.concatenate([xy, xy + wh], 1), rng.integers(0, 3, k),
                                  image_id=i + 1))
    ls = LabelSet(["bunker", "revetment", "shelter"], images)
    return write_coco(ls, tmp_path / "src" / "coco.json")


def boxes_by_name(ls):
    return {rec.path.name: (rec.boxes, [ls.classes[i] for i in rec.labels]) for rec in ls.images}


def test_coco_yolo_voc_coco_roundtrip_within_one_pixel(tmp_path):
    """COCO -> YOLO -> VOC -> COCO keeps every box within 1 pixel."""
    src = make_coco(tmp_path)
    s1 = convert(src, "yolo", tmp_path / "yolo")
    assert detect_format(s1["out"]) == "yolo"
    s2 = convert(s1["out"], "voc", tmp_path / "voc")
    assert detect_format(s2["out"]) == "voc"
    s3 = convert(s2["out"], "coco", tmp_path / "coco")
    a, b = read_coco(src), read_coco(s3["out"], check_files=True)
    assert b.classes == a.classes
    ra, rb = boxes_by_name(a), boxes_by_name(b)
    assert sorted(ra) == sorted(rb)
    total = 0
    for name, (boxes, names) in ra.items():
        got, got_names = rb[name]
        assert got_names == names, name
        assert len(got) == len(boxes)
        if len(boxes):
            assert np.abs(got - boxes).max() <= 1.0, (name, got, boxes)
            total += len(boxes)
    assert total >= 5
    assert s1["objects"] == s3["objects"]


def test_yolo_files_follow_ultralytics_layout(tmp_path):
    src = make_coco(tmp_path, n=2)
    yml = write_yolo(read_coco(src), tmp_path / "y")
    data = yaml.safe_load(yml.read_text())
    assert data["names"] == {0: "bunker", 1: "revetment", 2: "shelter"} and data["nc"] == 3
    imgs = sorted((tmp_path / "y" / "images" / "train").rglob("*.tif"))
    assert len(imgs) == 2
    lines = label_path(imgs[-1]).read_text().split("\n")
    cls, *vals = lines[0].split()
    assert cls in "012" and len(vals) == 4 and all(0 <= float(v) <= 1 for v in vals)


def test_yolo_names_list_txt_split_and_segments(tmp_path):
    img = write_image(tmp_path / "images" / "x.tif", 200, 100)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.3 0.1 0.3 0.5\n")
    (tmp_path / "list.txt").write_text("images/x.tif\n")
    (tmp_path / "d.yaml").write_text("names: [a, b]\nval: list.txt\n")
    ls = read_yolo(tmp_path / "d.yaml")
    assert ls.classes == ["a", "b"] and ls.images[0].path == img
    np.testing.assert_allclose(ls.images[0].boxes, [[80, 30, 120, 70], [20, 10, 60, 50]], atol=1e-4)
    assert ls.images[0].labels.tolist() == [1, 0]


def test_voc_devkit_convention(tmp_path):
    write_image(tmp_path / "JPEGImages" / "p.tif", 50, 40)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "p.xml").write_text(
        "<annotation><filename>p.tif</filename><size><width>50</width><height>40</height></size>"
        "<object><name>shelter</name><bndbox><xmin>11</xmin><ymin>1</ymin><xmax>20</xmax>"
        "<ymax>40</ymax></bndbox></object></annotation>")
    ls = read_voc(tmp_path)
    assert ls.classes == ["shelter"]
    assert ls.images[0].path == tmp_path / "JPEGImages" / "p.tif"
    np.testing.assert_allclose(ls.images[0].boxes, [[10, 0, 20, 40]])  # pixel edges
    out = write_voc(ls, tmp_path / "again")
    again = read_voc(out)
    np.testing.assert_allclose(again.images[0].boxes, ls.images[0].boxes)
    assert again.images[0].path.resolve() == ls.images[0].path.resolve()


def test_voc_classes_txt_fixes_order(tmp_path):
    write_image(tmp_path / "q.tif", 30, 30)
    (tmp_path / "classes.txt").write_text("zeta\nalpha\n")
    (tmp_path / "q.xml").write_text(
        "<annotation><filename>q.tif</filename><object><name>alpha</name><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    ls = read_voc(tmp_path)
    assert ls.classes == ["zeta", "alpha"] and ls.images[0].labels.tolist() == [1]
    assert (ls.images[0].width, ls.images[0].height) == (30, 30)  # read from the image


def test_detect_format_rejects_unknown(tmp_path):
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(ValueError, match="cannot tell the dataset format") as e:
        detect_format(tmp_path / "x.csv")
    assert "x.csv" in str(e.value)
    with pytest.raises(ValueError, match="unknown output format 'csv'"):
        convert(make_coco(tmp_path, n=1), "csv", tmp_path / "o")
