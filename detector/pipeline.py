"""The main job on built-in synthetic data: synth -> train -> export -> predict -> evaluate.

Everything lands in one folder::

    OUT/data/            synthetic tiles (train/val/test COCO) and scene.tif + scene.geojson
    OUT/run/best.ckpt    trained checkpoint (with its spec), logs, config
    OUT/model.onnx       exported model (+ model.onnx.parity.json)
    OUT/scene_detections.geojson
    OUT/metrics.json     test-set metrics of the ONNX model
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger("revet.demo")


def run_demo(out: str | Path, *, minutes: float = 10.0, n_train: int = 400, seed: int = 0,
             model: str | None = None) -> Path:
    from detector.datasets.synth import generate_dataset
    from detector.evaluate import evaluate_model, format_metrics
    from detector.export.onnx_export import export_checkpoint
    from detector.predict import predict_files
    from detector.train.fit import TrainConfig, train

    out = Path(out).resolve()
    data = out / "data"
    times = {}
    t = time.monotonic()
    if not (data / "test.json").exists():
        generate_dataset(data, n_train=n_train, n_val=60, n_test=100, seed=seed, workers=2)
    times["synth_s"] = time.monotonic() - t
    log.info("data ready in %s (%.0f s)", data, times["synth_s"])

    t = time.monotonic()
    cfg = TrainConfig(train=str(data / "train.json"), val=str(data / "val.json"), out=str(out / "run"),
                      max_time=minutes, epochs=1000, seed=seed, val_every=2, **({"arch": model} if model else {}))
    best = train(cfg)
    times["train_s"] = time.monotonic() - t

    t = time.monotonic()
    parity = export_checkpoint(best, out / "model.onnx")
    times["export_s"] = time.monotonic() - t
    log.info("exported %s; parity %s", out / "model.onnx", parity)

    t = time.monotonic()
    pred = predict_files(out / "model.onnx", [str(data / "scene.tif")], out / "scene_detections.geojson")
    times["predict_s"] = time.monotonic() - t

    t = time.monotonic()
    metrics = evaluate_model(out / "model.onnx", data / "test.json", out=out / "metrics.json")
    times["evaluate_s"] = time.monotonic() - t
    print(format_metrics(metrics))
    (out / "timings.json").write_text(json.dumps({**times, "scene_detections": pred["detections"]}, indent=2))
    return out
