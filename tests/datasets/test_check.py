"""``revet data check``: every problem listed with file and item; summary figures; CLI exit codes."""
import argparse
import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from detector.datasets.check import check_dataset, check_vector
from detector.datasets.data_cli import add_data_commands

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def geotiff(path, w=100, h=80, count=3, dtype="uint8", gsd=0.5):
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=dtype,
                       crs="EPSG:32637", transform=Affine(gsd, 0, 500000, 0, -gsd, 4000000)) as d:
        d.write(np.ones((count, h, w), dtype))
    return path


def run_cli(*argv):
    p = argparse.ArgumentParser(prog="revet")
    add_data_commands(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(list(argv))
    return a.func(a)


def coco(tmp_path, **over):
    geotiff(tmp_path / "a.tif")
    geotiff(tmp_path / "b.tif", count=4, dtype="uint16", gsd=2.0)
    d = {"images": [{"id": 1, "file_name": "a.tif", "width": 100, "height": 80},
                    {"id": 2, "file_name": "b.tif", "width": 100, "height": 80},
                    {"id": 3, "file_name": "c.tif", "width": 100, "height": 80}],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                         {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 8, 4]}],
         "categories": [{"id": 1, "name": "bunker"}, {"id": 2, "name": "shelter"}]}
    d.update(over)
    p = tmp_path / "d.json"
    p.write_text(json.dumps(d))
    return p


def test_summary_of_a_clean_dataset(tmp_path):
    del_missing = coco(tmp_path)
    data = json.loads(del_missing.read_text())
    data["images"] = data["images"][:2]
    del_missing.write_text(json.dumps(data))
    r = check_dataset(del_missing)
    assert r.ok and r.format == "coco" and r.problems == []
    assert (r.images, r.boxes, r.empty_images) == (2, 2, 0)
    assert r.per_class == {"bunker": 1, "shelter": 1}
    assert r.rasters == {"3 x uint8": 1, "4 x uint16": 1}
    assert r.box_size_px == {"0-8": 1, "8-16": 0, "16-32": 1, "32-64": 0, "64-128": 0,
                             "128-256": 0, "256-512": 0, ">=512": 0}
    # 20 px at 0.5 m = 10 m; sqrt(8*4)=5.66 px at 2 m = 11.3 m
    assert r.box_size_m["10-20"] == 2 and r.gsd == {"min": 0.5, "max": 2.0}
    assert run_cli("data", "check", str(del_missing)) == 0


def test_every_problem_is_listed_with_file_and_item(tmp_path):
    p = coco(tmp_path, annotations=[
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [90, 70, 20, 20]},   # outside
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 3]},       # zero size
        {"id": 3, "image_id": 2, "category_id": 9, "bbox": [1, 1, 2, 2]},       # unknown class
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [1, 1, 2, 2]},       # duplicate id
    ])
    r = check_dataset(p)
    text = [str(x) for x in r.errors]
    assert not r.ok and len(r.errors) == 5, text
    expect = ["annotations[0] (id 1): box outside the image", "annotations[1] (id 2): box has non-positive size",
              "annotations[2] (id 3): unknown class", "annotations[3] (id 3): duplicate annotation id 3",
              "c.tif: missing image"]
    for e in expect:
        assert any(e in t for t in text), (e, text)
    assert all(str(p) in t for t in text)
    assert run_cli("data", "check", str(p)) == 1


def test_coco_check_reads_as_training_does(tmp_path):
    """One COCO reader (detector.labels.coco): check lists classes in category-id order, as
    training reads them, and reports what training would refuse (duplicate category ids)."""
    p = coco(tmp_path, categories=[{"id": 2, "name": "shelter"}, {"id": 1, "name": "bunker"},
                                   {"id": 2, "name": "revetment"}])
    r = check_dataset(p)
    assert r.classes == ["bunker", "shelter"]
    assert any("categories[2]: duplicate category id 2" in str(x) for x in r.errors), r.problems


def test_yolo_check_collects_all_lines(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    geotiff(tmp_path / "images" / "x.tif")
    (tmp_path / "images" / "y.tif").write_bytes(b"garbage")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.txt").write_text("0 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1\n0 1.5 0.5 0.1 0.1\n")
    (tmp_path / "d.yaml").write_text("names: [a]\ntrain: images\n")
    r = check_dataset(tmp_path / "d.yaml")
    text = [str(x) for x in r.errors]
    assert len(text) == 4, text
    assert any("x.txt: line 2: unknown class 5" in t for t in text)
    assert any("x.txt: line 3: expected 5 numbers" in t for t in text)
    assert any("x.txt: line 4: coordinates must be normalized" in t for t in text)
    assert any("y.tif" in t and "not a readable raster" in t for t in text)
    assert r.boxes == 1 and r.images == 1
    assert run_cli("data", "check", str(tmp_path / "d.yaml"), "--json") == 1
    assert json.loads(capsys.readouterr().out)["errors"] == 4


def test_voc_check(tmp_path):
    geotiff(tmp_path / "p.tif", w=50, h=40)
    (tmp_path / "p.xml").write_text(
        "<annotation><filename>p.tif</filename><size><width>60</width><height>40</height></size>"
        "<object><name>a</name><bndbox><xmin>55</xmin><ymin>1</ymin><xmax>60</xmax><ymax>5</ymax></bndbox></object>"
        "<object><name>a</name><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>9</xmax><ymax>5</ymax></bndbox></object>"
        "</annotation>")
    (tmp_path / "q.xml").write_text("<annotation><filename>q.tif</filename>")
    r = check_dataset(tmp_path)
    text = [str(x) for x in r.errors]
    assert any("q.xml: malformed XML" in t for t in text)
    assert any("labels give size 60x40 but the image is 50x40" in t for t in text)
    assert any("p.tif box 0: box outside the image" in t for t in text), text


def test_vector_check_reports_crs_that_does_not_overlap(tmp_path):
    geotiff(tmp_path / "r.tif")
    far = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": 7, "properties": {"class": "bunker"},
         "geometry": {"type": "Polygon", "coordinates": [[[10, 50], [10.001, 50], [10.001, 50.001], [10, 50]]]}},
        {"type": "Feature", "id": 8, "properties": {"kind": "bunker"},
         "geometry": {"type": "Polygon", "coordinates": [[[10, 50], [10.001, 50], [10.001, 50.001], [10, 50]]]}}]}
    (tmp_path / "l.geojson").write_text(json.dumps(far))
    r = check_vector(tmp_path / "r.tif", tmp_path / "l.geojson")
    text = [str(x) for x in r.errors]
    assert any("label CRS does not overlap the raster" in t and "r.tif" in t for t in text), text
    assert any("feature 8: has no 'class' attribute" in t for t in text), text
    assert run_cli("data", "check", str(tmp_path / "r.tif"), "--labels", str(tmp_path / "l.geojson")) == 1
