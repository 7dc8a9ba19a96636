"""Vector labels over GeoTIFFs and chipping into COCO tiles, on real files through rasterio."""
import json
import struct

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform as warp

from detector.datasets.chip import assign_boxes, chip, tile_starts
from detector.labels.coco import read_coco
from detector.labels.vector import read_vector, read_vector_labels

UTM = "EPSG:32637"
CLASSES = ["bunker", "revetment", "shelter"]


def write_raster(path, *, width, height, count=3, dtype="uint8", nodata=None, gsd=0.5,
                 crs=UTM, seed=0, fill=None):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else None
    hi = min(info.max, 4000) if info else 1.0
    data = (rng.random((count, height, width)) * hi).astype(dtype)
    if nodata is not None:
        data[data == nodata] = 1
    if fill is not None:
        fill(data)
    transform = Affine(gsd, 0, 500000.0, 0, -gsd, 4000000.0)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                       dtype=dtype, crs=crs, transform=transform, nodata=nodata, tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as dst:
        dst.write(data)
    return transform, data


def box_rings(boxes, transform, dst_crs):
    """Pixel boxes -> rings (NW, SW, SE, NE, NW) in ``dst_crs`` via the raster's UTM CRS."""
    rings = []
    for x1, y1, x2, y2 in boxes:
        px = [(x1, y1), (x1, y2), (x2, y2), (x2, y1), (x1, y1)]
        mx, my = zip(*[transform @ p for p in px])
        if dst_crs != UTM:
            mx, my = warp(UTM, dst_crs, list(mx), list(my))
        rings.append([[float(a), float(b)] for a, b in zip(mx, my)])
    return rings


def write_geojson(path, boxes, labels, transform, *, crs="EPSG:4326", field="class"):
    feats = [{"type": "Feature", "id": i,
              "geometry": {"type": "Polygon", "coordinates": [ring]},
              "properties": {field: CLASSES[lab]}}
             for i, (ring, lab) in enumerate(zip(box_rings(boxes, transform, crs), labels))]
    data = {"type": "FeatureCollection", "features": feats}
    if crs != "EPSG:4326":
        data["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(data))
    return path


def wkb_polygon(ring):
    b = struct.pack("<BII", 1, 3, 1) + struct.pack("<I", len(ring))
    return b + b"".join(struct.pack("<dd", *p) for p in ring)


def write_ogr(path, boxes, labels, transform, *, crs, driver):
    pyogrio = pytest.importorskip("pyogrio")
    geoms = np.array([wkb_polygon(r) for r in box_rings(boxes, transform, crs)], dtype=object)
    pyogrio.raw.write(path, geoms, [np.array([CLASSES[lab] for lab in labels], dtype=object)],
                      fields=["class"], crs=crs, geometry_type="Polygon", driver=driver)
    return path


def random_boxes(rng, n, width, height, *, lo=8, hi=160, margin=-40):
    wh = rng.uniform(lo, hi, (n, 2))
    xy = rng.uniform(margin, [width - margin, height - margin], (n, 2)) - wh / 2
    boxes = np.concatenate([xy, xy + wh], axis=1)
    return np.round(boxes, 2), rng.integers(0, 3, n)


def test_tile_grid_covers_raster():
    assert tile_starts(1000, 512, 64).tolist() == [0, 448, 488]
    assert tile_starts(300, 512, 64).tolist() == [0]
    assert tile_starts(1024, 512, 0).tolist() == [0, 512]


def test_edge_rule_keeps_majority_part_and_falls_back_to_best_tile():
    # Tiles along x: [0, 100) and [80, 180) (tile 100, overlap 20), one row.
    boxes = np.array([[60, 10, 110, 20],     # 80% in tile 0, 60% in tile 1: in both
                      [50, 30, 150, 40],     # 50% / 70%: in both
                      [95, 50, 96, 51]])     # inside the overlap: in both, whole
    xs, ys, pairs, dropped = assign_boxes(boxes, 180, 100, 100, 20, 0.5)
    assert sorted(pairs) == [(0, 0), (0, 1)]
    idx0, clip0 = pairs[(0, 0)]
    np.testing.assert_allclose(clip0[idx0.tolist().index(0)], [60, 10, 100, 20])
    idx1, clip1 = pairs[(0, 1)]
    np.testing.assert_allclose(clip1[idx1.tolist().index(1)], [0, 30, 70, 40])
    assert len(dropped) == 0
    # A big box cut at a 4-tile corner: < 50% in every tile, but kept in the best one.
    xs, ys, pairs, dropped = assign_boxes(np.array([[60, 60, 130, 130]]), 180, 180, 100, 20, 0.5)
    where = [k for k, (i, _) in pairs.items() if 0 in i.tolist()]
    assert len(where) == 1 and len(dropped) == 0
    # 30% to the left of 0 but 70% inside: kept; 70% outside: ignored.
    xs, ys, pairs, dropped = assign_boxes(np.array([[-30, 0, 70, 10], [-70, 20, 30, 30]]), 100, 100, 100, 0)
    assert pairs[(0, 0)][0].tolist() == [0]


@pytest.mark.parametrize("fmt", ["geojson-4326", "geojson-3857", "gpkg-4326", "shp-3857"])
def test_vector_labels_reprojected_to_raster_pixels(tmp_path, fmt):
    transform, _ = write_raster(tmp_path / "r.tif", width=300, height=200)
    boxes = np.array([[10, 20, 50, 60], [200.5, 100.25, 290, 190], [-20, -20, 30, 30]])
    labels = [0, 2, 1]
    kind, epsg = fmt.split("-")
    crs = f"EPSG:{epsg}"
    if kind == "geojson":
        src = write_geojson(tmp_path / "l.geojson", boxes, labels, transform, crs=crs)
    else:
        src = write_ogr(tmp_path / f"l.{kind}", boxes, labels, transform, crs=crs,
                        driver={"gpkg": "GPKG", "shp": "ESRI Shapefile"}[kind])
    vl = read_vector(src)
    assert len(vl) == 3 and vl.crs.to_epsg() == int(epsg)
    ls = read_vector_labels(src, tmp_path / "r.tif")
    assert ls.classes == CLASSES and ls.images[0].width == 300
    np.testing.assert_allclose(ls.images[0].boxes, np.clip(boxes, 0, [300, 200, 300, 200]), atol=0.01)
    assert ls.images[0].labels.tolist() == labels


def test_chip_utm_raster_with_4326_labels(tmp_path):
    """tile boxes mapped back through each tile's transform land within 1 px of the
    source polygons' bounds (clipped to the tile), and every label inside appears in a tile."""
    width, height = 1100, 900
    transform, data = write_raster(tmp_path / "scene.tif", width=width, height=height)
    rng = np.random.default_rng(3)
    boxes, labels = random_boxes(rng, 60, width, height)
    src = write_geojson(tmp_path / "labels.geojson", boxes, labels, transform)
    summary = chip([tmp_path / "scene.tif"], src, tmp_path / "out", tile_size=256, overlap=32,
                   keep_empty=0.0, classes=CLASSES)
    ls = read_coco(tmp_path / "out" / "dataset.json", check_files=True)
    assert ls.classes == CLASSES
    assert summary["tiles"] == len(ls.images) > 0 and summary["empty_tiles"] == 0
    inside = (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 3] <= height)
    assert inside.sum() > 20 and (~inside).sum() > 3  # the fixture exercises both cases
    found = np.zeros(len(boxes), bool)
    for rec in ls.images:
        assert len(rec.boxes) > 0  # keep_empty=0: only tiles with objects
        with rasterio.open(rec.path) as t:
            assert t.crs.to_string() == UTM and (t.width, t.height) == (256, 256)
            tt = t.transform
            col0, row0 = ~transform @ (tt.c, tt.f)
            col0, row0 = round(col0), round(row0)
            np.testing.assert_array_equal(t.read(), data[:, row0:row0 + 256, col0:col0 + 256])
        for box, lab in zip(rec.boxes, rec.labels):
            (ax, ay), (bx, by) = (~transform @ (tt @ (box[0], box[1])), ~transform @ (tt @ (box[2], box[3])))
            back = np.array([ax, ay, bx, by])
            expect = np.clip(boxes, [col0, row0] * 2, [col0 + 256, row0 + 256] * 2)
            err = np.abs(expect - back).max(axis=1)
            j = int(np.argmin(np.where(labels == lab, err, np.inf)))
            assert err[j] <= 1.0, (rec.path, back, expect[j])
            found[j] = True
    assert found[inside].all(), np.flatnonzero(inside & ~found)
    # Dropped: only boxes with some but under half of their area inside the raster.
    c = np.clip(boxes, 0, [width, height] * 2)
    frac = np.clip(c[:, 2] - c[:, 0], 0, None) * np.clip(c[:, 3] - c[:, 1], 0, None) / (
        (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    assert summary["objects_dropped_at_edges"] == ((frac > 0) & (frac < 0.5)).sum() > 0
    assert not found[(frac > 0) & (frac < 0.5)].any()


def test_chip_uint16_four_bands_nodata_border(tmp_path):
    """nodata-only tiles skipped; dtype, band count and nodata preserved."""
    def border(d):
        d[:, :, :300] = 0   # left 300 columns: no data
        d[:, -40:, :] = 0   # bottom strip

    transform, data = write_raster(tmp_path / "ms.tif", width=700, height=520, count=4,
                                   dtype="uint16", nodata=0, fill=border)
    boxes = np.array([[400, 100, 440, 150], [600, 300, 650, 330]])
    write_geojson(tmp_path / "l.geojson", boxes, [0, 1], transform)
    s = chip(tmp_path / "ms.tif", tmp_path / "l.geojson", tmp_path / "out", tile_size=256,
             overlap=0, keep_empty=1.0, classes=CLASSES)
    # x starts 0, 256, 444; y starts 0, 256, 264: tiles at x=0 are all nodata (3 of 9).
    assert s["nodata_tiles_skipped"] == 3 and s["tiles"] == 6
    ls = read_coco(tmp_path / "out" / "dataset.json")
    assert len(ls.images) == 6 and sum(len(r.boxes) for r in ls.images) >= 2
    for rec in ls.images:
        with rasterio.open(rec.path) as t:
            assert t.dtypes == ("uint16",) * 4 and t.count == 4 and t.nodata == 0
            col0, row0 = (round(v) for v in ~transform @ (t.transform.c, t.transform.f))
            np.testing.assert_array_equal(t.read(), data[:, row0:row0 + 256, col0:col0 + 256])
            assert t.read_masks(1).any()


@pytest.mark.parametrize("dtype, count", [("int16", 1), ("float32", 2), ("uint8", 5)])
def test_chip_any_dtype_and_band_count(tmp_path, dtype, count):
    transform, data = write_raster(tmp_path / "r.tif", width=300, height=280, count=count, dtype=dtype)
    write_geojson(tmp_path / "l.geojson", np.array([[10, 10, 40, 40]]), [2], transform)
    s = chip(tmp_path / "r.tif", tmp_path / "l.geojson", tmp_path / "out", tile_size=128,
             overlap=16, keep_empty=0.5, seed=1)
    ls = read_coco(tmp_path / "out" / "dataset.json")
    assert ls.classes == ["shelter"] and s["tiles"] == len(ls.images) >= 1
    with rasterio.open(ls.images[0].path) as t:
        assert t.dtypes[0] == dtype and t.count == count
        np.testing.assert_array_equal(t.read(), data[:, :128, :128])


def test_keep_empty_is_seeded(tmp_path):
    transform, _ = write_raster(tmp_path / "r.tif", width=640, height=640, count=1)
    write_geojson(tmp_path / "l.geojson", np.array([[10, 10, 40, 40]]), [0], transform)
    a = chip(tmp_path / "r.tif", tmp_path / "l.geojson", tmp_path / "a", tile_size=64, overlap=0,
             keep_empty=0.3, seed=5)
    b = chip(tmp_path / "r.tif", tmp_path / "l.geojson", tmp_path / "b", tile_size=64, overlap=0,
             keep_empty=0.3, seed=5)
    names = lambda d: sorted(p.name for p in (tmp_path / d / "tiles").iterdir())  # noqa: E731
    assert names("a") == names("b") and a["empty_tiles"] == b["empty_tiles"]
    assert 10 < a["empty_tiles"] < 60  # about 0.3 of 99 empty tiles
