"""The first pass (detector/prescreen.py) and its use in scene scoring: flat water windows are
skipped and reported, a window holding a rendered object never is, --no-skip scores every window,
the Ray engine skips the same windows, and the skip fraction reaches the output metadata.

Real GeoTIFFs (rasterio), a real ONNX Runtime session (the peak model of scoring_models.py),
objects rendered by Revet's own generator."""
import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from detector.prescreen import DEFAULT, Prescreen
from detector.runner import Detector, read_scene_window
from detector.spec import ModelSpec
from detector import tiling

SPEC = ModelSpec()
TILE = 256


def _lake_scene(path, size=1024, seed=0, dtype="uint8", gain=1.0, offset=0.0):
    """A scene whose left half is flat water (1.5 DN noise, a gentle gradient) and right half
    a rendered synthetic scene with targets (boxes returned in scene pixels)."""
    from detector.datasets.synth import render_image

    r = render_image(seed, size, size // 2, contain=True)
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.float32)
    yy = np.mgrid[0:size, 0:size // 2][0].astype(np.float32)
    img[:, :size // 2] = np.float32([38, 52, 58]) + 6 * (yy / size)[..., None] + rng.normal(0, 1.5, (size, size // 2, 3))
    img[:, size // 2:] = r.image
    boxes = r.boxes + np.float32([size // 2, 0, size // 2, 0])
    raw = np.clip(img * gain + offset, 0, np.iinfo(dtype).max).round().astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype=dtype,
                       crs="EPSG:32637", transform=from_origin(500000, 4000000, 0.5, 0.5), tiled=True,
                       blockxsize=256, blockysize=256) as ds:
        ds.write(np.moveaxis(raw, 2, 0))
    return path, boxes


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return _lake_scene(tmp_path_factory.mktemp("lake") / "lake.tif", seed=4)


def _windows(path, spec, screen=DEFAULT):
    """(col, row) -> may_hold for the scene's windows with data."""
    out = {}
    with rasterio.open(path) as ds:
        for col, row in tiling.scene_windows(ds.width, ds.height, spec.tile_size, spec.overlap):
            tile, valid = read_scene_window(ds, list(spec.bands), spec.tile_size, col, row)
            out[(col, row)] = screen.may_hold(tile, valid, spec)
    return out


def test_flat_water_windows_are_skipped_and_object_windows_never(lake):
    path, boxes = lake
    spec = SPEC.replace(tile_size=TILE, overlap=32)
    keep = _windows(path, spec)
    water = [k for k in keep if k[0] + TILE <= 512]
    assert water and not any(keep[k] for k in water)          # every all-water window skipped
    assert len(boxes) > 0
    for col, row in keep:
        if any((b[0] < col + TILE) and (b[2] > col) and (b[1] < row + TILE) and (b[3] > row) for b in boxes):
            assert keep[(col, row)], f"window {(col, row)} holds an object but was skipped"


@pytest.mark.parametrize("dtype,gain,offset", [("uint16", 14.0, 300.0), ("uint16", 60.0, 0.0)])
def test_16_bit_imagery_is_judged_in_model_units(tmp_path, dtype, gain, offset):
    """The same scene as 16-bit digital numbers (a 12-bit-like sensor; a plain gain) under a spec
    that scales them as a 16-bit model would: the same windows are skipped as in 8 bits."""
    p8, _ = _lake_scene(tmp_path / "a.tif", size=768, seed=1)
    p16, _ = _lake_scene(tmp_path / "b.tif", size=768, seed=1, dtype=dtype, gain=gain, offset=offset)
    spec = SPEC.replace(tile_size=TILE, overlap=32)
    spec16 = spec.replace(dtype=dtype, offset=(offset,) * 3, scale=(255.0 * gain,) * 3)
    assert _windows(p8, spec) == _windows(p16, spec16)


def test_statistic_is_gain_invariant_and_flat_or_blank_windows_hold_nothing():
    from detector.datasets.synth import render_tile

    img, boxes, _ = render_tile(2, size=TILE)
    valid = np.ones(img.shape[:2], bool)
    c8, n8 = DEFAULT.statistics(img, valid, SPEC.offset, SPEC.scale)
    dim = (img.astype(np.float32) * 0.4).astype(np.float32)     # a darker exposure: same log contrast
    c4, _ = DEFAULT.statistics(dim, valid, SPEC.offset, SPEC.scale)
    assert len(boxes) and DEFAULT.may_hold(img, valid, SPEC)
    np.testing.assert_allclose(c4, c8, atol=0.03)
    for flat in (np.full((TILE, TILE, 3), 255, np.uint8), np.full((TILE, TILE, 3), 0, np.uint8)):
        assert not DEFAULT.may_hold(flat, valid, SPEC)              # saturated cloud, black
    part = valid.copy()
    part[:, :100] = False                                           # a nodata edge is not structure
    flat = np.full((TILE, TILE, 3), 90, np.uint8)
    flat[~part] = 0
    assert not DEFAULT.may_hold(flat, part, SPEC)
    odd = np.full((300, 300, 4), 90, np.uint8)                       # any window size, any band count
    odd[100:140, 100:140] = 200
    assert DEFAULT.may_hold(odd, np.ones((300, 300), bool), SPEC.replace(
        bands=(1, 2, 3, 4), offset=(0.0,) * 4, scale=(255.0,) * 4, mean=(0.5,) * 4, std=(0.2,) * 4))
    with pytest.raises(ValueError, match="block"):
        Prescreen(block=3, step=2)


@pytest.fixture(scope="module")
def peak_model(tmp_path_factory):
    pytest.importorskip("onnx")
    from scoring_models import write_peak_model

    return write_peak_model(tmp_path_factory.mktemp("m") / "peaks.onnx", tile=TILE, gsd=0.5)


def test_scene_scoring_skips_reports_and_no_skip_scores_everything(lake, peak_model, tmp_path):
    from detector.predict_cli import main

    path, _ = lake
    det = Detector.load(peak_model, device="cpu", threads=1)
    full = det.predict_scene(path, skip=False)
    fast = det.predict_scene(path)
    n = full.extra["windows"]
    assert full.extra["skipped"] == 0 and full.extra["prescreen"] is None
    assert 0 < fast.extra["skipped"] < n and fast.extra["skipped_nodata"] == 0
    assert fast.extra["skip_fraction"] == pytest.approx(fast.extra["skipped"] / n, abs=1e-4)
    assert fast.extra["prescreen"] == DEFAULT.to_dict()
    # the detections of the land half are those of the full pass
    land = full.boxes[:, 0] >= 512 + TILE
    assert land.any()
    got = {tuple(b) for b in fast.boxes.round(2).tolist()}
    assert all(tuple(b) in got for b in full.boxes[land].round(2).tolist())

    for flags, skipped in (([], fast.extra["skipped"]), (["--no-skip"], 0)):
        out = tmp_path / ("full" if flags else "skip")
        assert main(["predict", str(peak_model), str(path), "--out", str(out), "--format", "geojson,gpkg",
                     "--no-progress", *flags]) == 0
        summary = json.loads((out / "summary.json").read_text())
        rec = summary["scenes"][0]
        assert rec["skipped"] == skipped and rec["windows"] == n
        assert rec["skip_fraction"] == pytest.approx(skipped / n, abs=1e-4)
        assert summary["skipped"] == skipped and (summary["prescreen"] is None) == bool(flags)
        meta = json.loads((out / "lake.geojson").read_text())["revet"]["scenes"][0]
        assert meta["skipped"] == skipped and meta["skip_fraction"] == rec["skip_fraction"]
        import pyogrio

        layer = pyogrio.read_info(out / "lake.gpkg", layer="detections")["layer_metadata"]
        assert json.loads(layer["revet_scenes"])[0]["skipped"] == skipped


def test_the_ray_engine_skips_the_same_windows(lake, peak_model, tmp_path):
    ray = pytest.importorskip("ray")
    import logging

    from detector.predict import predict_files
    from test_predict_batch import outputs_of

    path, _ = lake
    single = predict_files(peak_model, [path], tmp_path / "single", formats="geojson,gpkg,csv")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        dist = predict_files(peak_model, [path], tmp_path / "ray", formats="geojson,gpkg,csv", engine="ray",
                             actors=1)
    finally:
        ray.shutdown()
    assert single["scenes"][0]["skipped"] > 0
    for k in ("skipped", "skip_fraction", "windows", "detections"):
        assert dist["scenes"][0][k] == single["scenes"][0][k]
    a, b = outputs_of(tmp_path / "single"), outputs_of(tmp_path / "ray")
    assert a == b
