"""Runner behaviour with a transparent backend: it reports each bright square it sees in a
window (cut off by the window edge if need be), so window placement, merging across overlaps,
nodata handling and resampling can be checked exactly, without a trained model."""
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage

from detector.runner import Detector
from detector.spec import ModelSpec

SPEC = ModelSpec(classes=("square",), bands=(1, 2, 3), tile_size=128, overlap=48, gsd=0.5,
                 score_threshold=0.5, max_detections=20)


class BrightSquares:
    """Backend: connected bright regions of each tile -> boxes, score 0.9, label 0."""

    def __init__(self, spec):
        self.spec = spec
        self.seen_sizes = []
        self.tiles = 0

    def run(self, batch):
        b, _, t, _ = batch.shape
        self.tiles += b
        d = self.spec.max_detections
        boxes = np.zeros((b, d, 4), np.float32)
        scores = np.zeros((b, d), np.float32)
        labels = np.zeros((b, d), np.int64)
        for k in range(b):
            lab, n = ndimage.label(batch[k, 0] > 200)
            for j, sl in enumerate(ndimage.find_objects(lab)[:d]):
                ys, xs = sl
                boxes[k, j] = (xs.start, ys.start, xs.stop, ys.stop)
                scores[k, j] = 0.9
                self.seen_sizes.append((xs.stop - xs.start, ys.stop - ys.start))
        return boxes, scores, labels


def _scene(path, squares, size, gsd=0.5, nodata_cols=0):
    img = np.full((3, size, size), 60, np.uint8)
    for x, y, s in squares:
        img[:, y:y + s, x:x + s] = 255
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32637",
                   transform=from_origin(500000, 4000000, gsd, gsd), nodata=0)
    if nodata_cols:
        img[:, :, :nodata_cols] = 0
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(img)
    return path


def test_objects_across_window_edges_reported_once_whole(tmp_path):
    # windows start at 0, 80, 160, ... (stride 80); squares of 30 px straddle the edges at 128, 208, ...
    squares = [(115, 20, 30), (195, 195, 30), (20, 115, 30), (300, 40, 30), (50, 50, 30)]
    path = _scene(tmp_path / "s.tif", squares, 400)
    det = Detector(BrightSquares(SPEC), SPEC).predict_scene(path)
    got = sorted(map(tuple, det.boxes.round().astype(int).tolist()))
    want = sorted((x, y, x + s, y + s) for x, y, s in squares)
    assert got == want  # each exactly once, with its whole extent


def test_nodata_windows_skipped_and_no_detection_on_nodata(tmp_path):
    squares = [(200, 200, 20)]
    path = _scene(tmp_path / "s.tif", squares, 400, nodata_cols=170)
    backend = BrightSquares(SPEC)
    det = Detector(backend, SPEC).predict_scene(path, skip=False)  # the flat windows too (no first pass)
    assert det.boxes.round().astype(int).tolist() == [[200, 200, 220, 220]]
    # window columns start at 0, 80, 160, 240, 272: the first column (0..128) is all nodata
    assert det.extra["windows"] == 25 and backend.tiles == 20
    assert det.extra["skipped"] == det.extra["skipped_nodata"] == 5 and det.extra["prescreen"] is None


def test_resampled_when_pixel_size_differs(tmp_path):
    # raster at 0.25 m: a 60 px square is 30 px at the model's 0.5 m
    path = _scene(tmp_path / "fine.tif", [(100, 140, 60)], 400, gsd=0.25)
    backend = BrightSquares(SPEC)
    det = Detector(backend, SPEC).predict_scene(path)
    assert det.extra["resampled"] == pytest.approx(2.0)
    # the model saw the square at its own pixel size (whole in some window, cut in others)
    assert max(w for w, h in backend.seen_sizes) in (30, 31) and max(h for w, h in backend.seen_sizes) in (30, 31)
    np.testing.assert_allclose(det.boxes, [[100, 140, 160, 200]], atol=2)
    same = Detector(BrightSquares(SPEC), SPEC).predict_scene(path, resample=False)
    np.testing.assert_allclose(same.boxes, [[100, 140, 160, 200]], atol=0.5)


def test_wrong_band_count_is_named(tmp_path):
    path = tmp_path / "one.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"one.tif: the model reads bands \[1, 2, 3\] but the image has 1 band"):
        Detector(BrightSquares(SPEC), SPEC).predict_scene(path)


def test_batches_hold_the_same_pixels_whatever_the_window(tmp_path):
    """batch_size counts 512-px windows: a 1024-px model gets a quarter as many per call."""
    import dataclasses

    assert [Detector(None, dataclasses.replace(SPEC, tile_size=t)).windows_per_batch(8)
            for t in (256, 512, 1024, 2048)] == [32, 8, 2, 1]
    with pytest.raises(ValueError, match="positive number of windows"):
        Detector(None, SPEC).windows_per_batch(0)
    spec = dataclasses.replace(SPEC, tile_size=256, overlap=0)
    backend = BrightSquares(spec)
    calls = []
    run = backend.run
    backend.run = lambda batch: calls.append(len(batch)) or run(batch)
    Detector(backend, spec).predict_tiles([np.zeros((256, 256, 3), np.uint8)] * 10, batch_size=1)
    assert calls == [4, 4, 2]


@pytest.mark.parametrize("nodata", [0, 255])
def test_nodata_value_does_not_change_detections(tmp_path, nodata):
    """#15.2: nodata pixels reach the model as training fed them (the band offset, 0 after
    scaling), whatever the nodata value. A square beside a nodata border of 255 used to merge
    with the border into one bright region centred on nodata, and was lost."""
    squares = [(170, 60, 24), (300, 300, 20)]
    img = np.full((3, 400, 400), 60, np.uint8)
    for x, y, s in squares:
        img[:, y:y + s, x:x + s] = 254
    img[:, :, :170] = nodata
    path = tmp_path / f"nodata{nodata}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=400, height=400, count=3, dtype="uint8",
                       crs="EPSG:32637", transform=from_origin(500000, 4000000, 0.5, 0.5), nodata=nodata) as ds:
        ds.write(img)
    backend = BrightSquares(SPEC)
    det = Detector(backend, SPEC).predict_scene(path)
    assert sorted(det.boxes.round().astype(int).tolist()) == sorted([x, y, x + s, y + s] for x, y, s in squares)


def test_nodata_pixels_are_filled_with_the_band_offset(tmp_path):
    """What the backend receives: raw values where valid, the spec's per-band offset elsewhere."""
    spec = ModelSpec(classes=("square",), bands=(1, 2, 3), tile_size=128, overlap=0, gsd=0.5,
                     offset=(10.0, 20.0, 30.0), scale=(200.0, 200.0, 200.0))

    class Record(BrightSquares):
        def run(self, batch):
            self.batches = getattr(self, "batches", []) + [batch.copy()]
            return super().run(batch)

    img = np.full((100, 100, 3), 77, np.uint8)
    valid = np.ones((100, 100), bool)
    valid[:, :40] = False
    backend = Record(spec)
    Detector(backend, spec).predict_tiles([img], valid=[valid])
    b = backend.batches[0][0]  # (C, 128, 128): the 100 x 100 image padded to the window
    assert (b[:, :100, 40:100] == 77).all()
    for c, off in enumerate((10.0, 20.0, 30.0)):
        assert (b[c, :100, :40] == off).all() and (b[c, 100:, :] == off).all() and (b[c, :, 100:] == off).all()


def test_tile_evaluation_resamples_like_scenes(tmp_path):
    """``evaluate_tiles`` reads a 0.25 m tile at the model's 0.5 m (the model sees the square at
    half size) and compares boxes in the tile's own pixels: a perfect detector scores 1.0."""
    import json

    from detector.evaluate import evaluate_tiles

    _scene(tmp_path / "fine.tif", [(100, 140, 60)], 256, gsd=0.25)
    _scene(tmp_path / "native.tif", [(20, 30, 40)], 128, gsd=0.5)
    coco = {"images": [{"id": 1, "file_name": "fine.tif", "width": 256, "height": 256},
                       {"id": 2, "file_name": "native.tif", "width": 128, "height": 128}],
            "categories": [{"id": 1, "name": "square"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 140, 60, 60]},
                            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [20, 30, 40, 40]}]}
    (tmp_path / "test.json").write_text(json.dumps(coco))
    backend = BrightSquares(SPEC)
    run = evaluate_tiles(Detector(backend, SPEC), tmp_path / "test.json")
    assert sorted(backend.seen_sizes) == [(30, 30), (40, 40)]
    assert run.metrics["mAP50_95"] == pytest.approx(1.0)


def _scene_in(path, crs, transform, size=400):
    img = np.full((3, size, size), 60, np.uint8)
    img[:, 140:200, 100:160] = 255                   # a 60 px square: 15 m at 0.25 m
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs=crs, transform=transform) as ds:
        ds.write(img)
    return path


@pytest.mark.parametrize("crs", ["EPSG:32652", "EPSG:2263", "EPSG:4326"])
def test_pixel_size_is_metres_whatever_the_crs(tmp_path, crs):
    """#15.1: one 0.25 m scene written in metres, US survey feet and degrees is resampled by the
    same factor (2 to the model's 0.5 m) and gives the same detections within 1 m."""
    import math

    lat = 37.5
    if crs == "EPSG:32652":
        t = from_origin(350000, 4150000, 0.25, 0.25)
    elif crs == "EPSG:2263":
        ft = 0.25 / 0.3048006096                      # US survey foot
        t = from_origin(980000, 200000, ft, ft)
    else:   # degrees: spherical approximation, independent of the code's ellipsoid
        t = from_origin(127.0, lat, 0.25 / (111320 * math.cos(math.radians(lat))), 0.25 / 110950)
    path = _scene_in(tmp_path / "s.tif", crs, t)
    backend = BrightSquares(SPEC)
    det = Detector(backend, SPEC).predict_scene(path)
    assert det.extra["resampled"] == pytest.approx(2.0, rel=0.01)
    assert max(w for w, h in backend.seen_sizes) in (29, 30, 31)
    np.testing.assert_allclose(det.boxes, [[100, 140, 160, 200]], atol=4)   # 4 px = 1 m


def test_rotated_geotransform_is_refused_by_name(tmp_path):
    from rasterio.transform import Affine

    path = _scene_in(tmp_path / "rot.tif", "EPSG:32652", Affine(0.25, 0.05, 350000, 0.05, -0.25, 4150000))
    with pytest.raises(ValueError, match=r"rot\.tif: rotated or sheared geotransform"):
        Detector(BrightSquares(SPEC), SPEC).predict_scene(path)


class FailsOnSecondBatch(BrightSquares):
    def run(self, batch):
        if self.tiles:
            raise RuntimeError("model failed")
        return super().run(batch)


def test_a_model_failing_mid_scene_leaves_no_reader_thread(tmp_path):
    """#15.6: the reader is stopped and joined when the model raises, scene after scene."""
    import threading

    path = _scene(tmp_path / "big.tif", [(100, 140, 60)], 1200)
    before = set(threading.enumerate())
    for _ in range(3):
        with pytest.raises(RuntimeError, match="model failed"):
            Detector(FailsOnSecondBatch(SPEC), SPEC).predict_scene(path, batch_size=2, skip=False)
    assert set(threading.enumerate()) - before == set()


def test_integer_type_other_than_the_models_is_refused_by_name(tmp_path):
    """#15.11: uint16 pixels through a uint8 model's scaling would saturate silently."""
    img = np.full((3, 256, 256), 60, np.uint16)
    with rasterio.open(tmp_path / "u16.tif", "w", driver="GTiff", width=256, height=256, count=3, dtype="uint16",
                       crs="EPSG:32637", transform=from_origin(500000, 4000000, 0.5, 0.5)) as ds:
        ds.write(img)
    with pytest.raises(ValueError, match=r"u16\.tif: uint16 pixels, but the model was trained on uint8"):
        Detector(BrightSquares(SPEC), SPEC).predict_scene(tmp_path / "u16.tif")


def test_nan_pixels_without_nodata_are_nodata(tmp_path):
    """#15.11: a float raster with NaN and no nodata value: NaN pixels invalid (warned), never
    scored into boxes; the square on finite pixels is found."""
    spec = ModelSpec(classes=("square",), bands=(1, 2, 3), tile_size=128, overlap=48, gsd=0.5, dtype="float32",
                     score_threshold=0.5, max_detections=20)
    img = np.full((3, 256, 256), 60, np.float32)
    img[:, 40:80, 40:80] = 255
    img[:, :, 160:] = np.nan                          # a swath of NaN
    with rasterio.open(tmp_path / "f.tif", "w", driver="GTiff", width=256, height=256, count=3, dtype="float32",
                       crs="EPSG:32637", transform=from_origin(500000, 4000000, 0.5, 0.5)) as ds:
        ds.write(img)
    backend = NanSquares(spec)
    with pytest.warns(UserWarning, match="NaN or infinite pixels and no nodata value"):
        det = Detector(backend, spec).predict_scene(tmp_path / "f.tif")
    np.testing.assert_allclose(det.boxes, [[40, 40, 80, 80]], atol=0.5)
    assert not backend.saw_nan


class NanSquares(BrightSquares):
    saw_nan = False

    def run(self, batch):
        NanSquares.saw_nan |= bool(np.isnan(batch).any())
        return super().run(batch)


def test_merge_is_the_same_whatever_order_windows_come_in(tmp_path):
    """#12: engines hand windows to the merge in the order their workers finish; the merge takes
    them in window order, so the detections do not depend on it."""
    import random

    from detector.runner import Detector, WindowPart
    from detector.spec import ModelSpec

    rng = np.random.default_rng(0)
    det = Detector(backend=None, spec=ModelSpec(tile_size=256, overlap=32))
    parts = []
    for wid in range(12):
        xy = rng.uniform(0, 700, (9, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(8, 40, (9, 2)).astype(np.float32)], 1)
        scores = rng.choice(np.float32([0.5, 0.6, 0.7]), 9)  # ties: order would matter if it could
        parts.append(WindowPart(wid, boxes, scores, rng.integers(0, 3, 9), rng.random(9) < 0.3))
    ref = det.merge_parts(parts, 768, 768, 12)
    assert 0 < len(ref) < 12 * 9
    for seed in range(3):
        shuffled = parts[:]
        random.Random(seed).shuffle(shuffled)
        got = det.merge_parts(shuffled, 768, 768, 12)
        np.testing.assert_array_equal(got.boxes, ref.boxes)
        np.testing.assert_array_equal(got.scores, ref.scores)
        np.testing.assert_array_equal(got.labels, ref.labels)
