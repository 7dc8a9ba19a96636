"""Tests of the synthetic scene generator (detector.datasets.synth)."""
import json
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from detector.datasets import synth  # noqa: E402
from detector.datasets.synth import objects as so  # noqa: E402
from detector.datasets.synth import render as sr  # noqa: E402

SMALL = dict(n_train=4, n_val=2, n_test=2, tile_size=256, scene_size=512, gsd=0.5, seed=3)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The same small dataset written with 1 and with 2 workers."""
    out1 = tmp_path_factory.mktemp("w1")
    out2 = tmp_path_factory.mktemp("w2")
    s1 = synth.generate_dataset(out1, workers=1, preview=True, **SMALL)
    s2 = synth.generate_dataset(out2, workers=2, **SMALL)
    return out1, out2, s1, s2


def test_render_tile_shapes_and_boxes_inside():
    for seed in range(4):
        img, boxes, labels = synth.render_tile(seed)
        assert img.shape == (512, 512, 3) and img.dtype == np.uint8
        assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4)
        assert labels.dtype == np.int64
        assert ((labels >= 0) & (labels < len(synth.CLASSES))).all()
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= 512).all() and (boxes[:, 3] <= 512).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert len(labels) <= 8
        assert 20 < img.mean() < 235 and img.std() > 5  # neither blank nor saturated


def test_render_tile_is_deterministic_in_seed():
    a = synth.render_tile(11, size=256)
    b = synth.render_tile(11, size=256)
    c = synth.render_tile(12, size=256)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_no_negatives_keeps_targets_and_draws_no_negatives():
    n_neg = 0
    for seed in range(5):
        with_neg = synth.render_image(seed, 384, 384, negatives=True)
        without = synth.render_image(seed, 384, 384, negatives=False)
        assert without.negatives == []
        n_neg += len(with_neg.negatives)
        assert all(o.kind in so.NEGATIVES or o.kind == "stack" for o in with_neg.negatives)
        np.testing.assert_array_equal(with_neg.boxes, without.boxes)
        np.testing.assert_array_equal(with_neg.labels, without.labels)
    assert n_neg > 0


def test_negatives_only_images_have_no_labels_but_look_alikes(tmp_path):
    n_neg = 0
    for seed in range(4):
        r = synth.render_image(seed, 384, 384, targets=False)
        assert r.targets == [] and len(r.labels) == 0 and r.boxes.shape == (0, 4)
        n_neg += len(r.negatives)
    assert n_neg >= 4
    summary = synth.generate_dataset(tmp_path, n_train=0, n_val=0, n_test=3, tile_size=256,
                                     scene_size=0, targets=False)
    coco = json.loads((tmp_path / "test.json").read_text())
    assert len(coco["images"]) == 3 and coco["annotations"] == []
    assert summary is not None
    with pytest.raises(ValueError, match="targets and negatives are both off"):
        synth.generate_dataset(tmp_path / "x", targets=False, negatives=False)


def test_empty_tiles_occur_but_are_a_minority():
    counts = [len(synth.render_tile(1000 + s, size=512)[2]) for s in range(24)]
    empty = sum(c == 0 for c in counts) / len(counts)
    assert 0.0 < empty < 0.45, counts
    assert sum(counts) >= 24


@pytest.mark.parametrize("kind", ["bunker", "revetment", "shelter"])
def test_object_pixel_size_scales_with_gsd(kind):
    rng = np.random.default_rng(0)
    pal = synth.st.make_palette(rng)
    p = {"bunker": so.params_bunker, "revetment": so.params_revetment,
         "shelter": so.params_shelter}[kind](rng, pal)
    p["tex"] = 1
    widths = {}
    for gsd in (0.3, 0.6, 1.0):
        o = so._make(kind, 200, 200, 0.0, p, 0)
        y0, x0, pt = so.draw(o, gsd, (400, 400))
        cols = np.nonzero(pt.footprint.any(0))[0]
        widths[gsd] = (cols[-1] - cols[0] + 1) * gsd  # metres along u (angle 0: along x)
    for gsd, w_m in widths.items():
        assert abs(w_m - o.length) <= 2 * gsd + 0.5, (gsd, w_m, o.length)


def test_rendered_target_sizes_are_metric_at_any_gsd():
    for gsd in (0.3, 1.0):
        for seed in range(3):
            r = synth.render_image(seed, 320, 320, gsd=gsd, negatives=False)
            for o, in zip(r.targets):
                assert 6 <= max(o.length, o.width) <= 41, (o.kind, o.length, o.width)
            sizes_m = (r.boxes[:, 2:] - r.boxes[:, :2]) * gsd
            assert (sizes_m.max(1, initial=0) <= 45).all()


def test_cast_shadow_length_matches_sun_elevation():
    h = np.zeros((200, 200), np.float32)
    h[95:105, 95:105] = 10.0  # 10 m pillar, 5 m wide at 0.5 m
    # sun in the east (azimuth 90) at 45 degrees: a 10 m shadow (20 px) towards the west
    s = sr.cast_shadow(h, 0.5, 90.0, 45.0)
    row = s[100]
    assert row[80] > 0.5 and row[90] > 0.5
    assert row[70] < 0.5 and row[110] < 0.5
    assert s[80, 85] < 0.5 and s[120, 85] < 0.5


def test_invalid_gsd_is_rejected():
    with pytest.raises(ValueError, match="gsd"):
        synth.render_tile(0, gsd=5.0)


def test_files_identical_for_any_worker_count(datasets):
    out1, out2, _, _ = datasets
    files1 = sorted(p.relative_to(out1) for p in out1.rglob("*") if p.is_file()
                    and p.parent.name != "preview")
    files2 = sorted(p.relative_to(out2) for p in out2.rglob("*") if p.is_file())
    assert files1 == files2
    assert Path("scene.tif") in files1 and Path("train.json") in files1
    for rel in files1:
        assert (out1 / rel).read_bytes() == (out2 / rel).read_bytes(), rel


def test_coco_json_is_valid(datasets):
    out, _, summary, _ = datasets
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        coco = json.loads((out / f"{split}.json").read_text())
        assert [c["name"] for c in coco["categories"]] == list(synth.CLASSES)
        assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
        assert len(coco["images"]) == n == summary["splits"][split]["images"]
        ids = {im["id"]: im for im in coco["images"]}
        assert len(ids) == n
        for im in coco["images"]:
            assert im["file_name"].startswith(f"{split}/")
            assert (out / im["file_name"]).is_file()
            assert im["width"] == im["height"] == 256
        ann_ids = set()
        for a in coco["annotations"]:
            im = ids[a["image_id"]]
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= im["width"] and y + h <= im["height"]
            assert a["category_id"] in (1, 2, 3) and a["iscrowd"] == 0
            assert a["area"] == pytest.approx(w * h)
            ann_ids.add(a["id"])
        assert len(ann_ids) == len(coco["annotations"])


def test_coco_boxes_match_render_tile(datasets):
    out, *_ = datasets
    coco = json.loads((out / "val.json").read_text())
    _, boxes, labels = synth.render_tile(synth.tile_seed(3, "val", 1), size=256)
    im = coco["images"][1]
    anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
    got = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
    np.testing.assert_allclose(got, boxes)
    assert [a["category_id"] - 1 for a in anns] == labels.tolist()


def test_geotiffs_are_georeferenced(datasets):
    out, *_ = datasets
    origins = set()
    for tif in sorted(out.glob("*/0000*.tif")):
        with rasterio.open(tif) as src:
            assert src.crs.to_epsg() == 32637, tif
            assert src.count == 3 and src.dtypes == ("uint8",) * 3
            assert src.transform.a == pytest.approx(0.5) and src.transform.e == pytest.approx(-0.5)
            assert src.transform.b == 0 and src.transform.d == 0
            assert src.compression.name.lower() == "deflate"
            assert [c.name for c in src.colorinterp] == ["red", "green", "blue"]
            origins.add((src.transform.c, src.transform.f))
    assert len(origins) == 8  # every tile its own place
    with rasterio.open(out / "scene.tif") as src:
        assert (src.width, src.height) == (512, 512)
        assert src.crs.to_epsg() == 32637
        assert src.block_shapes == [(512, 512)] * 3
        assert src.compression.name.lower() == "deflate"


def test_scene_geojson_maps_back_to_pixel_boxes(datasets):
    from rasterio.warp import transform as warp

    out, *_ = datasets
    gj = json.loads((out / "scene.geojson").read_text())
    assert gj["type"] == "FeatureCollection"
    expected = synth.render_image(synth.scene_seed(3), 512, 512, gsd=0.5)
    assert len(gj["features"]) == len(expected.boxes) > 0
    with rasterio.open(out / "scene.tif") as src:
        inv, crs = ~src.transform, src.crs
    for f, box, lab in zip(gj["features"], expected.boxes, expected.labels):
        assert f["properties"]["class"] == synth.CLASSES[lab]
        ring = np.array(f["geometry"]["coordinates"][0])
        assert ring.shape == (5, 2) and (ring[0] == ring[-1]).all()
        assert (np.abs(ring[:, 0]) <= 180).all() and (np.abs(ring[:, 1]) <= 90).all()
        mx, my = warp("EPSG:4326", crs, ring[:, 0].tolist(), ring[:, 1].tolist())
        px = np.array([inv @ (x, y) for x, y in zip(mx, my)])
        got = np.concatenate([px.min(0), px.max(0)])
        np.testing.assert_allclose(got, box, atol=1.0)


def test_summary_and_previews(datasets):
    out, _, summary, _ = datasets
    assert set(summary["splits"]) == {"train", "val", "test"}
    total = sum(sum(s["objects"].values()) for s in summary["splits"].values())
    coco_total = sum(len(json.loads((out / f"{s}.json").read_text())["annotations"])
                     for s in ("train", "val", "test"))
    assert total == coco_total
    assert summary["preview"] and all(Path(p).is_file() for p in summary["preview"])


def test_multiband16_variant(tmp_path):
    """16-bit 4-band tiles with nodata 0, borders on some tiles, no label centred on nodata."""
    import json

    import rasterio

    from detector.datasets.synth import generate_dataset

    generate_dataset(tmp_path, n_train=10, n_val=0, n_test=0, scene_size=512, seed=3, multiband16=True)
    data = json.loads((tmp_path / "train.json").read_text())
    borders = 0
    for im in data["images"]:
        with rasterio.open(tmp_path / im["file_name"]) as ds:
            assert ds.count == 4 and ds.dtypes[0] == "uint16" and ds.nodata == 0
            img = ds.read()
            valid = ds.read_masks(1) > 0
        assert img[:, valid].min() >= 1 and img.max() > 3000
        borders += int((~valid).any())
        for a in data["annotations"]:
            if a["image_id"] == im["id"]:
                x, y, w, h = a["bbox"]
                assert valid[int(y + h / 2), int(x + w / 2)]
    assert 0 < borders < 10
    with rasterio.open(tmp_path / "scene.tif") as ds:
        assert ds.count == 4 and not (ds.read_masks(1)[:, :40] > 0).any()
