"""The main job on built-in synthetic data: synth -> train -> export -> predict -> evaluate.

Training fine-tunes the shipped base model ``revet-base`` (:mod:`detector.zoo`) on freshly
generated tiles of the demo's seed, for at most ``FINE_TUNE["steps"]`` steps or ``minutes``;
``from_scratch=True`` (``revet demo --from-scratch``) trains a new model for ``minutes`` instead.

Everything lands in one folder::

    OUT/data/            synthetic tiles (train/val/test COCO) and scene.tif + scene.geojson
    OUT/run/best.ckpt    trained checkpoint (with its spec), logs, config
    OUT/model.onnx       exported float32 model (+ model.onnx.parity.json, with the int8 report)
    OUT/model.int8.onnx  int8 variant (calibrated on validation tiles): about 2x faster on CPU
    OUT/scene_detections.geojson   the scene scored by the int8 model when its validation
                         mAP@0.5 is within ``INT8_TOLERANCE`` of float32, else by model.onnx
    OUT/metrics.json     test-set metrics of the float32 model (metrics.int8.json: int8)
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger("revet.demo")

INT8_TOLERANCE = 0.01  # largest validation mAP@0.5 loss for which the demo scores with int8
BASE_MODEL = "revet-base"
# fine-tuning recipe from the base model: a short warm-up and a lower peak learning rate than
# from scratch (TrainConfig.lr 2e-3), so the base's features are adapted rather than relearnt
FINE_TUNE = dict(weights=BASE_MODEL, lr=5e-4, warmup_steps=20, steps=400)
DEFAULT_MINUTES = {"fine-tune": 5.0, "from-scratch": 10.0}


def run_demo(out: str | Path, *, minutes: float | None = None, n_train: int = 400, seed: int = 0,
             model: str | None = None, from_scratch: bool = False, n_val: int = 60, n_test: int = 100,
             scene_size: int = 2048, train_overrides: dict | None = None) -> Path:
    """Run the main job into ``out``; returns ``out``. ``minutes``: training budget (default
    ``DEFAULT_MINUTES``). ``model``: an architecture name; one other than the base model's
    trains from scratch (the base weights fit only their own architecture)."""
    from detector.datasets.synth import generate_dataset
    from detector.evaluate import evaluate_model, format_metrics
    from detector.export.onnx_export import export_checkpoint
    from detector.predict import predict_files
    from detector import zoo
    from detector.train.fit import TrainConfig, train

    out = Path(out).resolve()
    data = out / "data"
    times = {}
    t = time.monotonic()
    if not (data / "test.json").exists():
        generate_dataset(data, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed, workers=2,
                         scene_size=scene_size)
    times["synth_s"] = time.monotonic() - t
    log.info("data ready in %s (%.0f s)", data, times["synth_s"])

    t = time.monotonic()
    base_arch = zoo.card(BASE_MODEL)["arch"] if BASE_MODEL in zoo.available() else None
    if not from_scratch and base_arch is None:
        raise FileNotFoundError(f"{zoo.ZOO_DIR / BASE_MODEL}: the installation lacks the base model; "
                                "reinstall Revet or run 'revet demo --from-scratch'")
    if not from_scratch and model and model != base_arch:
        log.warning("--model %s is not the base model's architecture (%s): training from scratch", model, base_arch)
        from_scratch = True
    start = "from-scratch" if from_scratch else "fine-tune"
    minutes = DEFAULT_MINUTES[start] if minutes is None else minutes
    kw = dict(train=str(data / "train.json"), val=str(data / "val.json"), out=str(out / "run"),
              max_time=minutes, epochs=1000, seed=seed, val_every=2, **({"arch": model} if model else {}),
              **({} if from_scratch else FINE_TUNE))
    log.info("training (%s) for at most %.0f minutes", start, minutes)
    cfg = TrainConfig(**{**kw, **(train_overrides or {})})
    best = train(cfg, overwrite=True)  # the demo owns its folder
    times["train_s"] = time.monotonic() - t
    times["start"] = start

    t = time.monotonic()
    parity = export_checkpoint(best, out / "model.onnx", int8=True)
    times["export_s"] = time.monotonic() - t
    int8 = parity["variants"]["int8"]
    scorer = Path(int8["path"]) if int8["delta_mAP50"] >= -INT8_TOLERANCE else out / "model.onnx"
    log.info("exported %s (parity passed: %s); int8 variant mAP@0.5 change on validation %+.4f; "
             "scoring the scene with %s", out / "model.onnx", parity["passed"], int8["delta_mAP50"], scorer.name)

    t = time.monotonic()
    pred = predict_files(scorer, [str(data / "scene.tif")], out / "scene_detections.geojson")
    times["predict_s"] = time.monotonic() - t

    t = time.monotonic()
    metrics = evaluate_model(out / "model.onnx", data / "test.json", out=out / "metrics.json")
    m8 = evaluate_model(int8["path"], data / "test.json", out=out / "metrics.int8.json")
    times["evaluate_s"] = time.monotonic() - t
    print(format_metrics(metrics))
    print(f"int8 model: test mAP@0.5 {m8['mAP50']:.4f} ({m8['mAP50'] - metrics['mAP50']:+.4f} against float32)")
    (out / "timings.json").write_text(json.dumps({**times, "scene_detections": pred["detections"],
                                                  "scene_model": scorer.name}, indent=2))
    return out
