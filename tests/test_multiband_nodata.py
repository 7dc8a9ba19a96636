"""A 16-bit 4-band dataset with nodata borders trains, exports and predicts with no manual
conversion, and no detection is ever produced inside nodata."""
import json

import numpy as np
import pytest
import rasterio

pytest.importorskip("torch")

BORDER = 64  # columns of nodata on the left of every tile


def _to_uint16_4band(src, dst, border):
    with rasterio.open(src) as ds:
        rgb = ds.read().astype(np.float32)
        prof = ds.profile
    nir = rgb.mean(axis=0, keepdims=True) * 1.3
    img = (np.concatenate([rgb, nir]) * 40 + 500).astype(np.uint16)
    img[:, :, :border] = 0
    prof.update(count=4, dtype="uint16", nodata=0, photometric="minisblack")
    with rasterio.open(dst, "w", **prof) as out:
        out.write(img)


def _convert_split(synth, out, split):
    data = json.loads((synth / f"{split}.json").read_text())
    (out / split).mkdir(parents=True, exist_ok=True)
    for im in data["images"]:
        _to_uint16_4band(synth / im["file_name"], out / im["file_name"], BORDER)
    # objects now under nodata are not visible: drop their labels
    data["annotations"] = [a for a in data["annotations"] if a["bbox"][0] >= BORDER]
    (out / f"{split}.json").write_text(json.dumps(data))
    return out / f"{split}.json"


def test_uint16_4band_with_nodata(synth_small, tmp_path):
    from detector.export.onnx_export import export_checkpoint
    from detector.runner import Detector
    from detector.train.fit import TrainConfig, train

    train_json = _convert_split(synth_small, tmp_path, "train")
    val_json = _convert_split(synth_small, tmp_path, "val")
    best = train(TrainConfig(train=str(train_json), val=str(val_json), out=str(tmp_path / "run"), epochs=2,
                             batch_size=8, crop=256, warmup_steps=2, report=False))
    report = export_checkpoint(best, tmp_path / "m.onnx")
    assert report["passed"]
    det = Detector.load(tmp_path / "m.onnx")
    spec = det.spec
    assert spec.dtype == "uint16" and spec.bands == (1, 2, 3, 4)
    assert all(o >= 500 for o in spec.offset) and all(s > 100 for s in spec.scale)  # percentile stretch

    scene = tmp_path / "scene16.tif"
    _to_uint16_4band(synth_small / "scene.tif", scene, 300)
    r = det.predict_scene(scene, min_score=0.0001)
    assert len(r) > 0
    centres = (r.boxes[:, 0] + r.boxes[:, 2]) / 2
    assert (centres >= 300).all(), "a detection is centred on nodata"
