"""Scene-level evaluation: labels in any format and CRS, areas, window boundaries, errors."""
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import rasterio

from detector.runner import Detector
from detector.scene_eval import crossing_mask, cut_mask, duplicate_counts, evaluate_scene, evaluate_scene_run
from detector.spec import ModelSpec
from detector.tiling import scene_windows

from test_evaluate import OracleBackend, _cli, assert_matches_coco  # noqa: E402

CLASSES = ("bunker", "revetment", "shelter")
SPEC = ModelSpec(tile_size=256, overlap=32, gsd=0.5)  # a fine grid: many labels cross windows


def _truth(geojson):
    feats = json.loads(Path(geojson).read_text())["features"]
    return (np.array([f["properties"]["pixel_box"] for f in feats], np.float32).reshape(-1, 4),
            np.array([CLASSES.index(f["properties"]["class"]) for f in feats]))


def _oracle(scene, geojson, **kw) -> Detector:
    be = OracleBackend(SPEC, **kw)
    be.add_scene(scene, *_truth(geojson))
    return Detector(be, SPEC)


@pytest.fixture(scope="session")
def scene_oracle(synth_small):
    return _oracle(synth_small / "scene.tif", synth_small / "scene.geojson")


def _polygon_wkb(ring) -> bytes:
    return struct.pack("<BII", 1, 3, 1) + struct.pack("<I", len(ring)) + b"".join(
        struct.pack("<dd", x, y) for x, y in ring)


def write_gpkg_in_scene_crs(geojson, scene, out) -> Path:
    """The labels of ``geojson`` as a GeoPackage in the scene's (UTM) CRS, from the pixel boxes."""
    import pyogrio.raw

    boxes, labels = _truth(geojson)
    with rasterio.open(scene) as ds:
        tr, crs = ds.transform, ds.crs.to_string()
    geoms = []
    for x1, y1, x2, y2 in boxes.astype(float):
        ring = [tr @ p for p in [(x1, y1), (x1, y2), (x2, y2), (x2, y1), (x1, y1)]]
        geoms.append(_polygon_wkb(ring))
    names = np.array([CLASSES[i] for i in labels], dtype=object)
    pyogrio.raw.write(out, np.array(geoms, dtype=object), [names], ["class"], driver="GPKG",
                      geometry_type="Polygon", crs=crs)
    return Path(out)


def test_scene_matches_pycocotools_and_rules(scene_oracle, synth_small):
    run = evaluate_scene_run(scene_oracle, synth_small / "scene.tif", synth_small / "scene.geojson")
    m, sc = run.metrics, run.metrics["scene"]
    n_labels = len(_truth(synth_small / "scene.geojson")[1])
    assert m["mode"] == "scene" and m["num_images"] == 1
    assert_matches_coco(run, 10 ** 6)  # every merged detection of the scene counts
    assert sc["scene_km2"] == pytest.approx(1024 * 1024 * 0.25 / 1e6)
    assert sc["valid_km2"] == pytest.approx(sc["scene_km2"])
    assert sc["fp_per_km2"] == pytest.approx(m["operating"]["fp"] / sc["valid_km2"])
    for c in CLASSES:
        assert m["per_class"][c]["fp_per_km2"] == pytest.approx(m["per_class"][c]["fp"] / sc["valid_km2"])
    assert sc["labels_read"] == sc["labels_evaluated"] == n_labels
    assert sc["windows"] == {"tile": 256, "overlap": 32, "count": len(scene_windows(1024, 1024, 256, 32))}
    bd = sc["boundary"]
    assert bd["crossing"]["num_gt"] + bd["inside"]["num_gt"] == n_labels
    assert bd["crossing"]["num_gt"] == int(crossing_mask(run.images[0].gt_boxes, 1024, 1024, 256, 32).sum()) > 0
    assert bd["crossing"]["found"] + bd["inside"]["found"] == m["operating"]["tp"]
    assert sum(m["per_class"][c]["num_crossing"] for c in CLASSES) == bd["crossing"]["num_gt"]
    assert bd["cut"]["num_gt"] + bd["uncut"]["num_gt"] == n_labels and bd["cut"]["num_gt"] > 0
    assert bd["cut"]["found"] + bd["uncut"]["found"] == m["operating"]["tp"]


def test_geojson_4326_equals_gpkg_in_utm(scene_oracle, synth_small, tmp_path):
    gpkg = write_gpkg_in_scene_crs(synth_small / "scene.geojson", synth_small / "scene.tif", tmp_path / "l.gpkg")
    a = evaluate_scene(scene_oracle, synth_small / "scene.tif", synth_small / "scene.geojson")
    b = evaluate_scene(scene_oracle, synth_small / "scene.tif", gpkg)
    assert a["scene"]["labels_crs"] == "EPSG:4326" and b["scene"]["labels_crs"] == "EPSG:32637"
    for m in (a, b):
        m["scene"].pop("labels"), m["scene"].pop("labels_crs")
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def test_crossing_mask_rule():
    # width 1000, tile 256, overlap 32: column starts 0, 224, 448, 672, 744
    boxes = np.array([[10, 10, 50, 50],      # inside the first window
                      [200, 10, 260, 50],    # past 256, starts before 224: no window holds it
                      [230, 10, 300, 50],    # inside the window at 224
                      [10, 240, 50, 270],    # rows: 0, 224, 344 -> fits the window at row 224
                      [100, 100, 400, 150],  # wider than a tile
                      [740, 10, 1000, 60]]) # the last window (744..1000) does not hold x1=740
    assert crossing_mask(boxes, 1000, 600, 256, 32).tolist() == [False, True, False, False, True, True]
    # a scene smaller than one tile is one (padded) window: nothing crosses
    assert not crossing_mask(np.array([[0, 0, 200, 100]]), 200, 100, 256, 32).any()


def test_cut_mask_rule():
    # columns start 0, 224, 448, 672, 744 (width 1000); rows 0, 224, 344 (height 600); tile 256
    boxes = np.array([[10, 10, 50, 50],       # only window (0, 0) touches it, and holds it
                      [230, 10, 300, 50],     # window at column 0 ends at 256: cut
                      [10, 240, 50, 250],     # rows 0 and 224 both hold it
                      [10, 250, 50, 270],     # row 0 ends at 256: cut
                      [900, 500, 950, 550],   # column 672 ends at 928: cut
                      [800, 400, 820, 420]])  # every window that touches it holds it
    assert cut_mask(boxes, 1000, 600, 256, 32).tolist() == [False, True, False, True, True, False]


def test_duplicates_count_double_reports_of_found_labels():
    from detector.metrics import ImageEval, match_image

    im = ImageEval(np.array([[10.0, 10, 50, 50]]), np.array([0]),
                   np.array([[10.0, 10, 50, 50], [12, 10, 52, 50], [10, 10, 50, 50], [200, 200, 240, 240],
                             [11, 10, 51, 50]]),
                   np.array([0.9, 0.8, 0.7, 0.9, 0.2]), np.array([0, 0, 1, 0, 0]))
    m = match_image(im, 2, 0.5, None)
    # the shifted same-class box is a double report; other class, far box, under threshold: not
    assert duplicate_counts(im, m.det_gt, 0.5).tolist() == [1]
    assert duplicate_counts(im, m.det_gt, 0.1).tolist() == [2]


def test_nodata_area_and_labels(synth_small, tmp_path):
    src = synth_small / "scene.tif"
    scene = tmp_path / "half.tif"
    with rasterio.open(src) as ds:
        img, profile = ds.read(), ds.profile
    img = np.maximum(img, 1)
    img[:, :, :512] = 0
    profile.update(nodata=0)
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(img)
    det = _oracle(scene, synth_small / "scene.geojson")
    m = evaluate_scene(det, scene, synth_small / "scene.geojson")
    sc = m["scene"]
    assert sc["valid_km2"] == pytest.approx(sc["scene_km2"] / 2)
    boxes, _ = _truth(synth_small / "scene.geojson")
    on_nodata = int(((boxes[:, 0] + boxes[:, 2]) / 2 < 512).sum())
    assert sc["labels_on_nodata"] == on_nodata and sc["labels_evaluated"] == len(boxes) - on_nodata
    assert sc["fp_per_km2"] == pytest.approx(m["operating"]["fp"] / sc["valid_km2"])


def test_errors_name_the_file(scene_oracle, synth_small, tmp_path):
    scene, gj = synth_small / "scene.tif", synth_small / "scene.geojson"
    doc = json.loads(gj.read_text())
    # unknown class names
    bad = json.loads(json.dumps(doc))
    bad["features"][2]["properties"]["class"] = "silo"
    p = tmp_path / "silo.geojson"
    p.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"silo\.geojson: class names \['silo'\].*features \[2\].*model's classes"):
        evaluate_scene(scene_oracle, scene, p)
    # lon/lat coordinates declared as UTM: nothing overlaps the scene
    wrong = dict(doc, crs={"type": "name", "properties": {"name": "EPSG:32637"}})
    p = tmp_path / "wrongcrs.geojson"
    p.write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match=r"wrongcrs\.geojson: none of the .* labels overlap raster .*scene\.tif"):
        evaluate_scene(scene_oracle, scene, p)
    # the class attribute is elsewhere
    with pytest.raises(ValueError, match=r"scene\.geojson: feature 0: has no 'kind' attribute"):
        evaluate_scene(scene_oracle, scene, gj, class_field="kind")
    # a scene without georeferencing
    plain = tmp_path / "plain.tif"
    with rasterio.open(scene) as ds:
        img = ds.read()
    with rasterio.open(plain, "w", driver="GTiff", width=img.shape[2], height=img.shape[1], count=3,
                       dtype="uint8") as dst:
        dst.write(img)
    with pytest.raises(ValueError, match=r"plain\.tif: scene has no CRS"):
        evaluate_scene(scene_oracle, plain, gj)
    with pytest.raises(FileNotFoundError, match="nope.geojson"):
        evaluate_scene(scene_oracle, scene, tmp_path / "nope.geojson")


def test_cli_scene(scene_oracle, synth_small, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Detector, "load", classmethod(lambda cls, path, **kw: scene_oracle))
    assert _cli(["evaluate", "m.onnx", "--scene", str(synth_small / "scene.tif"), "--labels",
                 str(synth_small / "scene.geojson"), "--out", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "per km2" in out and "crossing window boundaries" in out and "FP/km2" in out
    assert json.loads((tmp_path / "s.json").read_text())["scene"]["windows"]["tile"] == 256
