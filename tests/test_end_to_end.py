"""The whole path on tiny synthetic data: synth -> train -> export -> predict -> evaluate.

Small enough for CI (about 2 minutes on 2 cores); it checks that the stages fit together and
that the exported model is the trained one; the demo's fine-tune must reach a stated mAP floor
(tests/train/test_learning.py checks that training learns).
"""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import rasterio

from detector.spec import SPEC_KEY, ModelSpec

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained(synth_small, tmp_path_factory):
    from detector.train.fit import TrainConfig, train

    run = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(train=str(synth_small / "train.json"), val=str(synth_small / "val.json"),
                      out=str(run), epochs=3, batch_size=8, crop=256, num_workers=0, warmup_steps=2)
    return train(cfg)


def test_checkpoint_holds_spec_and_logs(trained):
    import torch

    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    spec = ModelSpec.from_json(ckpt[SPEC_KEY])
    assert spec.classes == ("bunker", "revetment", "shelter")
    assert spec.dtype == "uint8" and spec.gsd == pytest.approx(0.5)
    metrics = (trained.parent / "logs" / "metrics.csv").read_text()
    assert "val/mAP50" in metrics and "train/loss" in metrics
    assert (trained.parent / "last.ckpt").exists() and (trained.parent / "config.yaml").exists()


def test_export_predict_evaluate(trained, synth_small, tmp_path):
    from detector.evaluate import evaluate_model
    from detector.export.onnx_export import export_checkpoint

    onnx_path = tmp_path / "model.onnx"
    report = export_checkpoint(trained, onnx_path)
    assert report["passed"] and report["tiles"] == 8 and report["max_box_diff_px"] <= 0.01
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    import torch

    assert ModelSpec.from_json(meta[SPEC_KEY]) == ModelSpec.from_json(
        torch.load(trained, map_location="cpu", weights_only=True)[SPEC_KEY])
    # provenance (#15.9): the exporting version, when, and which weights
    import datetime
    from importlib.metadata import version

    assert meta["revet_version"] == version("revet")
    age = datetime.datetime.now(datetime.timezone.utc) - datetime.datetime.fromisoformat(meta["exported"])
    assert datetime.timedelta(0) <= age < datetime.timedelta(hours=1)
    assert len(meta["weights_sha256"]) == 64 and int(meta["weights_sha256"], 16)

    # evaluate: the ONNX model and the checkpoint give the same numbers
    m_onnx = evaluate_model(onnx_path, synth_small / "test.json", out=tmp_path / "m.json")
    m_ckpt = evaluate_model(trained, synth_small / "test.json")
    assert m_onnx["mAP50"] == pytest.approx(m_ckpt["mAP50"], abs=1e-3)
    saved = json.loads((tmp_path / "m.json").read_text())
    assert set(saved["per_class"]) == {"bunker", "revetment", "shelter"}

    # predict, torch-free, in a fresh interpreter through the CLI
    out = tmp_path / "scene.geojson"
    code = ("import sys; from detector.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "predict", str(onnx_path), str(synth_small / "scene.tif"),
                        "--out", str(out), "--min-score", "0.01"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    fc = json.loads(out.read_text())
    assert fc["type"] == "FeatureCollection"
    with rasterio.open(synth_small / "scene.tif") as ds:
        from rasterio.warp import transform_bounds
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    for f in fc["features"]:
        lon, lat = np.array(f["geometry"]["coordinates"][0]).T
        assert (w - 1e-6 <= lon).all() and (lon <= e + 1e-6).all() and (s - 1e-6 <= lat).all() and (lat <= n + 1e-6).all()
        assert f["properties"]["class"] in ("bunker", "revetment", "shelter")
        assert 0.01 <= f["properties"]["score"] <= 1


def test_demo_writes_every_output_and_scores_with_the_chosen_model(tmp_path):
    """`revet demo` at toy size: float32 + int8 exported, the scene scored by the model the
    tolerance rule picks, metrics for both, georeferenced detections."""
    from detector.pipeline import INT8_TOLERANCE, run_demo

    # the `trained` fixture's recipe: a 2-step model has near-tied scores, and exact ties make
    # the NMS order, and so the parity check, arbitrary
    out = run_demo(tmp_path / "demo", minutes=2, n_train=24, n_val=4, n_test=4, scene_size=512,
                   train_overrides={"epochs": 3, "batch_size": 8, "crop": 256, "warmup_steps": 2})
    parity = json.loads((out / "model.onnx.parity.json").read_text())
    assert parity["passed"]
    int8 = parity["variants"]["int8"]
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size / 2
    timings = json.loads((out / "timings.json").read_text())
    want = "model.int8.onnx" if int8["delta_mAP50"] >= -INT8_TOLERANCE else "model.onnx"
    assert timings["scene_model"] == want
    gj = json.loads((out / "scene_detections.geojson").read_text())
    assert len(gj["features"]) == timings["scene_detections"]
    for f in gj["features"]:
        lon, lat = f["geometry"]["coordinates"][0][0]
        assert -180 <= lon <= 180 and -90 <= lat <= 90
    for name in ("metrics.json", "metrics.int8.json"):
        m = json.loads((out / name).read_text())
        # fine-tuned from revet-base for a few steps: a model that learnt nothing (or lost the
        # base's features) scores near 0 here
        assert m["mAP50"] >= 0.5 and set(m["per_class"]) == {"bunker", "revetment", "shelter"}, (name, m["mAP50"])


def test_export_with_a_larger_scoring_window(trained, synth_small, tmp_path):
    """--tile-size 1024: same weights in a larger window; the scene is scored in fewer windows
    and finds what the 512-px export finds."""
    import torch

    from detector.backends import OnnxBackend
    from detector.export.onnx_export import export_checkpoint
    from detector.runner import Detector
    from detector.tiling import box_iou, scene_windows

    base = ModelSpec.from_json(torch.load(trained, map_location="cpu", weights_only=True)[SPEC_KEY])
    report = export_checkpoint(trained, tmp_path / "big.onnx", tile_size=1024)
    assert report["passed"] and report["tiles"] == 8
    big = OnnxBackend(tmp_path / "big.onnx", device="cpu").spec
    assert big.tile_size == 1024 and big.overlap == base.overlap and big.classes == base.classes
    assert len(scene_windows(2048, 2048, 1024, big.overlap)) < len(scene_windows(2048, 2048, 512, base.overlap))
    export_checkpoint(trained, tmp_path / "base.onnx")
    scene = synth_small / "scene.tif"
    a = Detector.load(tmp_path / "base.onnx").predict_scene(scene, min_score=0.05)
    b = Detector.load(tmp_path / "big.onnx").predict_scene(scene, min_score=0.05)
    top = np.argsort(-a.scores)[:10]  # the 512-px export's most confident detections
    assert len(top) >= 5
    iou = box_iou(a.boxes[top], b.boxes) * (a.labels[top, None] == b.labels[None])
    found = (iou.max(1) >= 0.5).mean() if len(b) else 0.0
    assert found >= 0.7, found
    with pytest.raises(ValueError, match="multiple of 32 larger than the model's overlap"):
        export_checkpoint(trained, tmp_path / "bad.onnx", tile_size=1000)


def test_failed_parity_removes_the_model_and_explains(trained, tmp_path, monkeypatch):
    """A parity failure leaves no .onnx, keeps the report, and says what near ties look like."""
    from detector.export import onnx_export

    real = onnx_export.parity_check

    def one_lost(*args, **kw):  # the real comparison, then one detection lost
        r = real(*args, **kw)
        return {**r, "matched": r["matched"] - 1, "unmatched": 1, "passed": False}

    monkeypatch.setattr(onnx_export, "parity_check", one_lost)
    out = tmp_path / "m.onnx"
    with pytest.raises(onnx_export.ParityError, match="near-tied scores") as e:
        onnx_export.export_checkpoint(trained, out)
    assert str(out) in str(e.value) and not out.exists()
    assert json.loads((tmp_path / "m.onnx.parity.json").read_text())["unmatched"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".onnx"] == []
    # a good model already at the path is not replaced by the failed one
    out.write_bytes(b"the good model")
    with pytest.raises(onnx_export.ParityError):
        onnx_export.export_checkpoint(trained, out)
    assert out.read_bytes() == b"the good model"


def test_export_without_verification_data_writes_no_model(trained, tmp_path):
    """#15.5: the tiles are looked up before anything is written; no unverified .onnx is left."""
    from detector.export import onnx_export

    out = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match="no tiles to verify"):
        onnx_export.export_checkpoint(trained, out, verify=str(tmp_path / "missing.json"))
    assert list(tmp_path.iterdir()) == []
