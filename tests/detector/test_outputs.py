"""Writers: GeoPackage keeps the scene CRS, GeoJSON is lon/lat, CSV and COCO results parse."""
import csv
import json
import struct

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from detector.outputs import (CSV_COLUMNS, atomic_write, GPKG_LAYER, format_for_path, parse_formats, provenance,
                              read_scene_metadata, scene_model, scene_provenance, write_coco_results, write_csv, write_detections, write_geojson,
                              write_gpkg)
from detector.runner import Detections

CLASSES = ("bunker", "revetment", "shelter")
UTM33 = CRS.from_epsg(32633)
T1 = Affine(0.5, 0.0, 620000.0, 0.0, -0.5, 4250000.0)


def dets(crs=UTM33, transform=T1, path="a.tif", n=3, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 900, (n, 2))
    wh = rng.uniform(10, 80, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    return Detections(boxes, rng.uniform(0.3, 1, n).astype(np.float32), (np.arange(n) % 3).astype(np.int64),
                      CLASSES, path=path, crs=crs, transform=transform, width=1024, height=1024)


def parse_polygon_wkb(b: bytes) -> np.ndarray:
    order = "<" if b[0] == 1 else ">"
    gtype, nrings = struct.unpack(order + "II", b[1:9])
    assert gtype in (3, 0x80000003 & 0xFFFFFFFF) and nrings == 1, (gtype, nrings)
    (npts,) = struct.unpack(order + "I", b[9:13])
    return np.array(struct.unpack(order + "d" * 2 * npts, b[13:13 + 16 * npts])).reshape(npts, 2)


def mapped_corners(box, transform) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([apply(transform, *c) for c in [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]])


def apply(t, x, y):
    """Pixel (x, y) -> map, the affine written out."""
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def test_gpkg_keeps_scene_crs_and_pixel_boxes(tmp_path):
    import pyogrio.raw

    d = dets(n=5)
    path = write_gpkg([d], tmp_path / "d.gpkg")
    meta, _, geoms, fields = pyogrio.raw.read(path, layer=GPKG_LAYER)
    assert CRS.from_user_input(meta["crs"]) == UTM33
    assert meta["geometry_type"] == "Polygon"
    names = list(meta["fields"])
    assert names == ["id", "class", "score", "threshold", "source", "x1", "y1", "x2", "y2"]
    col = dict(zip(names, fields))
    assert len(geoms) == 5
    for k in range(5):
        np.testing.assert_allclose(parse_polygon_wkb(geoms[k]), mapped_corners(d.boxes[k], T1), atol=1e-6)
        np.testing.assert_allclose([col[c][k] for c in ("x1", "y1", "x2", "y2")], d.boxes[k], atol=1e-4)
        assert col["class"][k] == CLASSES[d.labels[k]]
        assert col["score"][k] == pytest.approx(float(d.scores[k]), abs=1e-6)
        assert col["source"][k] == "a.tif"
    # map coordinates are metres of UTM, not lon/lat
    assert parse_polygon_wkb(geoms[0])[:, 0].min() > 600000


def test_gpkg_reprojects_later_scenes_into_first_crs(tmp_path):
    import pyogrio.raw

    a = dets(n=2)
    # the same ground area given in UTM 34N: its boxes must land back in 33N coordinates
    x34, y34 = warp_transform(UTM33, CRS.from_epsg(32634), [T1.c], [T1.f])
    t34 = Affine(0.5, 0.0, x34[0], 0.0, -0.5, y34[0])
    b = dets(crs=CRS.from_epsg(32634), transform=t34, path="b.tif", n=2, seed=1)
    path = write_gpkg([a, b], tmp_path / "two.gpkg")
    meta, _, geoms, _ = pyogrio.raw.read(path)
    assert CRS.from_user_input(meta["crs"]) == UTM33 and len(geoms) == 4
    ring = parse_polygon_wkb(geoms[2])
    exp = np.stack(warp_transform(CRS.from_epsg(32634), UTM33, *mapped_corners(b.boxes[0], t34).T.tolist()), 1)
    np.testing.assert_allclose(ring, exp, atol=1e-6)


def test_gpkg_empty_and_without_crs(tmp_path):
    import pyogrio.raw

    empty = dets(n=0)
    meta, _, geoms, _ = pyogrio.raw.read(write_gpkg([empty], tmp_path / "e.gpkg"))
    assert len(geoms) == 0 and CRS.from_user_input(meta["crs"]) == UTM33
    plain = dets(crs=None, transform=None, n=2)
    meta, _, geoms, _ = pyogrio.raw.read(write_gpkg([plain], tmp_path / "p.gpkg"))
    assert meta["crs"] is None
    np.testing.assert_allclose(parse_polygon_wkb(geoms[1])[0], plain.boxes[1, :2], atol=1e-4)


def test_geojson_is_lon_lat(tmp_path):
    d = dets(n=4)
    fc = json.loads(write_geojson([d], tmp_path / "d.geojson").read_text())
    assert "crs_note" not in fc and len(fc["features"]) == 4
    for k, f in enumerate(fc["features"]):
        ring = np.array(f["geometry"]["coordinates"][0])
        lon, lat = warp_transform(UTM33, "EPSG:4326", *mapped_corners(d.boxes[k], T1).T.tolist())
        np.testing.assert_allclose(ring, np.stack([lon, lat], 1)[::-1], atol=1e-8)
        area2 = np.sum(ring[:-1, 0] * ring[1:, 1] - ring[1:, 0] * ring[:-1, 1])
        assert area2 > 0  # RFC 7946: exterior ring counterclockwise
        # UTM 33N (central meridian 15 E), 120 km east of it, 4250 km north: about 16.4 E, 38.4 N
        assert 16 < ring[:, 0].min() < 17 and 38 < ring[:, 1].min() < 39
        assert f["properties"]["class"] == CLASSES[d.labels[k]]


def test_csv_rows_parse(tmp_path):
    a, b = dets(n=3), dets(n=2, path="b.tif", seed=2)
    path = write_csv([a, b], tmp_path / "d.csv", image_ids=[17, 42])
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == CSV_COLUMNS and len(rows) == 5
    assert [r["image_id"] for r in rows] == ["17"] * 3 + ["42"] * 2
    assert [r["source"] for r in rows] == ["a.tif"] * 3 + ["b.tif"] * 2
    for r, box, lab in zip(rows[:3], a.boxes, a.labels):
        np.testing.assert_allclose([float(r[c]) for c in ("x1", "y1", "x2", "y2")], box, atol=0.01)
        assert r["class"] == CLASSES[lab] and r["crs"] == "EPSG:32633"
        c = mapped_corners(box, T1)
        np.testing.assert_allclose([float(r[k]) for k in ("map_xmin", "map_ymin", "map_xmax", "map_ymax")],
                                   [c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max()], atol=2e-3)
        b64 = box.astype(np.float64)
        cx, cy = apply(T1, (b64[0] + b64[2]) / 2, (b64[1] + b64[3]) / 2)
        lon, lat = warp_transform(UTM33, "EPSG:4326", [cx], [cy])
        assert float(r["lon"]) == pytest.approx(lon[0], abs=1e-7) and float(r["lat"]) == pytest.approx(lat[0], abs=1e-7)
    plain = write_csv([dets(crs=None, transform=None, n=1)], tmp_path / "p.csv")
    (row,) = csv.DictReader(plain.open())
    assert row["lon"] == "" and row["map_xmin"] == "" and row["crs"] == ""


def test_ids_thresholds_and_provenance_in_every_format(tmp_path):
    import pyogrio.raw

    model = tmp_path / "m.onnx"
    model.write_bytes(b"weights")
    job = provenance("my-model", str(model), CLASSES, [0.6, 0.55, 0.7], 0.1)
    assert job["model_sha256"] == __import__("hashlib").sha256(b"weights").hexdigest()
    assert job["class_thresholds"] == {"bunker": 0.6, "revetment": 0.55, "shelter": 0.7} and job["min_score"] == 0.1

    def scored(folder, seed=0):
        d = dets(n=6, path=str(tmp_path / folder / "scene.tif"), seed=seed)
        d.extra["provenance"] = scene_provenance(job, d.path)
        return d

    a = scored("x")
    fc = json.loads(write_geojson([a], tmp_path / "a.geojson").read_text())
    props = [f["properties"] for f in fc["features"]]
    ids = [p["id"] for p in props]
    assert len(set(ids)) == 6 and all(i.startswith("d") and len(i) == 13 for i in ids)
    assert [p["threshold"] for p in props] == [[0.6, 0.55, 0.7][k] for k in a.labels]
    (meta,) = fc["revet"]["scenes"]
    assert meta["provenance"]["scene"] == str(a.path) and meta["provenance"]["model"] == "my-model"
    assert meta["provenance"]["scored_at"].endswith("+00:00") and meta["provenance"]["revet_version"]
    # stable: the same scene (moved elsewhere) gives the same ids; other boxes give other ids
    again = json.loads(write_geojson([scored("y")], tmp_path / "b.geojson").read_text())
    assert [f["properties"]["id"] for f in again["features"]] == ids
    other = json.loads(write_geojson([scored("x", seed=5)], tmp_path / "c.geojson").read_text())
    assert not set(f["properties"]["id"] for f in other["features"]) & set(ids)
    # GeoPackage and CSV carry the same ids and thresholds; the layer metadata the provenance
    gmeta, _, _, fields = pyogrio.raw.read(write_gpkg([a], tmp_path / "a.gpkg"))
    names = list(gmeta["fields"])
    assert list(fields[names.index("id")]) == ids
    np.testing.assert_allclose(fields[names.index("threshold")], [p["threshold"] for p in props])
    lm = pyogrio.read_info(tmp_path / "a.gpkg")["layer_metadata"]
    assert json.loads(lm["revet_scenes"])[0]["provenance"]["model_sha256"] == job["model_sha256"]
    # read back (the review app names the model from it): by scene file name, in both formats
    named = f"my-model (sha256 {job['model_sha256'][:12]})"
    assert scene_model(read_scene_metadata(tmp_path / "a.geojson"), "elsewhere/scene.tif") == named
    assert scene_model(read_scene_metadata(tmp_path / "a.gpkg"), a.path) == named
    assert scene_model(read_scene_metadata(tmp_path / "a.geojson"), "other.tif") is None
    rows = list(csv.DictReader(write_csv([a], tmp_path / "a.csv").open()))
    assert read_scene_metadata(tmp_path / "a.csv") == []
    assert [r["id"] for r in rows] == ids and [float(r["threshold"]) for r in rows] == [p["threshold"] for p in props]
    # without provenance: ids still, thresholds empty
    plain = json.loads(write_geojson([dets(n=2)], tmp_path / "p.geojson").read_text())
    assert all(f["properties"]["id"] and f["properties"]["threshold"] is None for f in plain["features"])


def test_coco_results_ids_and_xywh(tmp_path):
    a, b = dets(n=3), dets(n=2, seed=3)
    path = write_coco_results([a, b], tmp_path / "r.json", image_ids=[5, 9], category_ids=[30, 10, 20])
    res = json.loads(path.read_text())
    assert len(res) == 5 and [r["image_id"] for r in res] == [5, 5, 5, 9, 9]
    assert [r["category_id"] for r in res[:3]] == [30, 10, 20]
    x1, y1, x2, y2 = a.boxes[1]
    np.testing.assert_allclose(res[1]["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=1e-3)
    assert res[1]["score"] == pytest.approx(float(a.scores[1]), abs=1e-5)
    default = json.loads(write_coco_results([a], tmp_path / "d.json").read_text())
    assert {r["image_id"] for r in default} == {1} and [r["category_id"] for r in default] == [1, 2, 3]


def test_formats_and_atomic_write(tmp_path):
    assert parse_formats(None) == ["geojson"]
    assert parse_formats("csv, gpkg,csv") == ["csv", "gpkg"]
    with pytest.raises(ValueError, match="shapefile"):
        parse_formats("geojson,shapefile")
    assert [format_for_path(p) for p in ("a.geojson", "a.GPKG", "a.csv", "a.json", "a.coco.json", "out")] == \
        ["geojson", "gpkg", "csv", "coco", "coco", None]
    target = tmp_path / "x.geojson"
    target.write_text("old")

    class Boom(Exception):
        pass

    def half_then_die(tmp):
        tmp.write_text('{"type": "FeatureColl')
        raise Boom

    with pytest.raises(Boom):
        atomic_write(target, half_then_die)
    assert target.read_text() == "old"  # the old file is untouched, no temp file left
    assert [p.name for p in tmp_path.iterdir()] == ["x.geojson"]
    write_detections([dets(n=2)], target, "geojson")
    assert len(json.loads(target.read_text())["features"]) == 2


def test_quicklook_png_downsampled_with_class_colours(tmp_path):
    import rasterio
    from PIL import Image

    from detector.quicklook import COLOURS, write_quicklook

    tif = tmp_path / "s.tif"
    rng = np.random.default_rng(0)
    img = (rng.uniform(40, 80, (3, 400, 600))).astype(np.uint16)
    with rasterio.open(tif, "w", driver="GTiff", width=600, height=400, count=4, dtype="uint16",
                       crs=UTM33, transform=T1) as ds:
        ds.write(np.concatenate([img, img[:1]]))
    d = Detections(np.array([[100, 100, 300, 200], [400, 50, 500, 150]], np.float32), np.array([0.9, 0.5], np.float32),
                   np.array([1, 2], np.int64), CLASSES, path=tif, crs=UTM33, transform=T1, width=600, height=400)
    png = write_quicklook(d, tmp_path / "q.png", bands=(3, 2, 1), max_size=300)
    im = np.asarray(Image.open(png).convert("RGB"))
    assert im.shape == (200, 300, 3)
    # the boxes' left edges at half scale carry their class colours; the stretched image is grey-ish noise
    assert tuple(im[75, 50]) == COLOURS[1] and tuple(im[50, 200]) == COLOURS[2]
    assert im[150:190, 5:40].std() > 10  # percentile stretch spread the 40..80 values
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_runner_up_class_is_written_to_geojson_gpkg_and_csv(tmp_path):
    """A --one-class job's runner-up class and score per detection (None where there was none),
    in the GeoJSON properties, as GeoPackage fields and as CSV columns (empty there: the columns are
    fixed, so the job-wide CSV joins every scene's); GeoJSON and GeoPackage jobs without it write neither."""
    import pyogrio.raw

    a = dets(n=3)
    a.extra.update(runner_up=np.array([1, -1, 0]), runner_up_score=np.array([0.25, np.nan, 0.125], np.float32))
    b = dets(n=2, seed=1, path="b.tif")  # another scene of the job, scored without the option
    props = [f["properties"] for f in json.loads(write_geojson([a], tmp_path / "d.geojson").read_text())["features"]]
    assert [(p["runner_up"], p["runner_up_score"]) for p in props] == [("revetment", 0.25), (None, None),
                                                                      ("bunker", 0.125)]
    meta, _, _, fields = pyogrio.raw.read(write_gpkg([a, b], tmp_path / "d.gpkg"), layer=GPKG_LAYER)
    col = dict(zip(meta["fields"], fields))
    assert list(col["runner_up"]) == ["revetment", None, "bunker", None, None]
    np.testing.assert_allclose(col["runner_up_score"], [0.25, np.nan, 0.125, np.nan, np.nan])
    meta, *_ = pyogrio.raw.read(write_gpkg([b], tmp_path / "e.gpkg"), layer=GPKG_LAYER)
    assert "runner_up" not in list(meta["fields"])
    assert "runner_up" not in json.loads(write_geojson([b], tmp_path / "e.geojson").read_text())["features"][0]["properties"]
    with open(write_csv([a, b], tmp_path / "d.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["runner_up"], r["runner_up_score"]) for r in rows] == [("revetment", "0.25000"), ("", ""),
                                                                     ("bunker", "0.12500"), ("", ""), ("", "")]
