"""The run report (train/run_report.py) on a real tiny training run: files, numbers, robustness."""
import csv
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from detector.plots import plot_training_curves  # noqa: E402
from detector.train.run_report import draw_val_grid, grid_size, read_metrics_csv, write_run_report  # noqa: E402

FIGURES = ("curves.png", "pr_curves.png", "confusion.png", "sweep.png", "val_grid.png")


@pytest.fixture(scope="module")
def run_dir(synth_small, tmp_path_factory):
    """A 2-epoch model (3 steps an epoch) and its report, written once for the module."""
    from detector.train.fit import TrainConfig, train

    run = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(train=str(synth_small / "train.json"), val=str(synth_small / "val.json"),
                      out=str(run), epochs=2, batch_size=8, crop=256, num_workers=0, warmup_steps=2)
    train(cfg)
    return run


@pytest.fixture(scope="module")
def report(run_dir):
    return write_run_report(run_dir)  # val from config.yaml, best.ckpt


def _png(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.convert("RGB").copy()


def test_figures_are_pngs(report, run_dir):
    assert report["skipped"] == {}
    for name in FIGURES:
        path = run_dir / name
        assert report["files"][name] == str(path)
        img = _png(path)
        assert img.width >= 400 and img.height >= 400, name
        assert path.stat().st_size > 8_000, name
        colours = img.getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 30, f"{name} looks blank"


def _same(a, b):
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return b == pytest.approx(a, abs=1e-9)


def test_metrics_json_equals_evaluate_model(report, run_dir, synth_small):
    from detector.evaluate import evaluate_model

    m = evaluate_model(run_dir / "best.ckpt", synth_small / "val.json", device="cpu")
    doc = json.loads((run_dir / "metrics.json").read_text())
    assert doc["checkpoint"] == str(run_dir / "best.ckpt")
    assert doc["val"] == str(synth_small / "val.json")
    for k in ("mAP50", "mAP50_95", "threshold"):
        assert _same(m[k], doc[k]) and _same(m[k], report[k]), k
    for k in ("precision", "recall", "f1"):
        assert _same(m["operating"][k], doc[k]) and _same(m["operating"][k], report[k]), k
    assert _same(m["sweep"]["best"]["threshold"], doc["best_f1_threshold"])
    assert set(doc["evaluation"]["per_class"]) == {"bunker", "revetment", "shelter"}
    for name, c in m["per_class"].items():
        for k in ("AP50", "AP", "precision", "recall", "tp", "fp", "fn", "num_gt"):
            assert _same(c[k], doc["evaluation"]["per_class"][name][k]), (name, k)
    assert doc["evaluation"]["confusion"] == m["confusion"]
    # what the log says: 24 tiles / batch 8 = 3 steps an epoch, 2 epochs
    assert doc["epochs"] == 2 and doc["steps"] == 6
    assert doc["training"]["validations"] == 2
    assert doc["time_s"] > 0 and doc["training"]["time_source"]
    assert doc["skipped"] == {} and set(doc["files"]) == set(FIGURES)


def test_val_grid_default_layout(report, run_dir):
    assert _png(run_dir / "val_grid.png").size == grid_size(8)  # 8 val tiles, 4 a row
    assert any("8 of 8" in n for n in report["notes"])


def test_val_grid_draws_n_tiles_and_both_box_styles(run_dir, synth_small, tmp_path):
    """A hand-made EvalRun (no model): 3 tiles drawn, true boxes green, predictions magenta."""
    from detector.labels.coco import read_coco
    from detector.evaluate import EvalRun, Source
    from detector.metrics import ImageEval
    from detector.display import DET_COLOUR, GT_COLOUR
    from detector.spec import ModelSpec

    spec = ModelSpec.from_json((run_dir / "spec.json").read_text())
    labels = read_coco(synth_small / "val.json").remap(spec.classes)
    images, sources = [], []
    for rec in labels.images:
        # one confident prediction away from the truth, one below the threshold (not drawn)
        boxes = np.array([[300, 300, 400, 380], [10, 10, 60, 60]], np.float32)
        images.append(ImageEval(rec.boxes, rec.labels, boxes, np.array([0.9, 0.1], np.float32),
                                np.array([0, 1], np.int64)))
        sources.append(Source(rec.path))
    run = EvalRun({"threshold": 0.5}, images, sources, spec)
    out = tmp_path / "grid.png"
    assert draw_val_grid(run, out, n=3) == 3
    img = _png(out)
    assert img.size == grid_size(3)
    a = np.asarray(img).astype(int)

    def count(colour):
        return int((np.abs(a - np.array(colour)).sum(-1) < 30).sum())

    assert count(DET_COLOUR) > 300 and count(GT_COLOUR) > 100
    assert draw_val_grid(run, tmp_path / "all.png", n=20) == len(labels.images)


def _write_csv(path, cols, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for r in rows:
            w.writerow(r)


def test_curves_with_missing_columns(tmp_path):
    # only the total loss: no components, no validation, no learning rate
    p = tmp_path / "a" / "metrics.csv"
    _write_csv(p, ["epoch", "step", "train/loss"],
               [{"epoch": s // 10, "step": s, "train/loss": 3 * math.exp(-s / 20) + 0.2} for s in range(0, 60, 3)])
    path, notes = plot_training_curves(read_metrics_csv(p), tmp_path / "a.png")
    assert _png(path).size[0] >= 900
    assert any("val" in n for n in notes) and any("lr" in n for n in notes)
    # no step column (x is the epoch), validation only
    p = tmp_path / "b" / "metrics.csv"
    _write_csv(p, ["epoch", "val/mAP50"], [{"epoch": e, "val/mAP50": e / 10} for e in range(5)])
    series = read_metrics_csv(p)
    assert series["val/mAP50"][-1] == (4.0, 0.4)
    path, notes = plot_training_curves(series, tmp_path / "b.png")
    assert _png(path) and any("loss" in n for n in notes)
    # nothing to plot at all
    p = tmp_path / "c" / "metrics.csv"
    _write_csv(p, ["epoch", "step"], [{"epoch": 0, "step": 0}])
    with pytest.raises(ValueError, match="nothing|no loss"):
        plot_training_curves(read_metrics_csv(p), tmp_path / "c.png")


def test_partial_run_never_raises(tmp_path, run_dir):
    """A run that logged no validation yet, has no checkpoint and no config: curves and
    metrics.json are written, the rest is skipped with a reason."""
    run = tmp_path / "early"
    _write_csv(run / "logs" / "metrics.csv", ["epoch", "lr", "step", "train/loss", "train/classification"],
               [{"epoch": 0, "lr": 1e-3, "step": 2, "train/loss": 4.0, "train/classification": 3.0},
                {"epoch": 0, "lr": 1e-3, "step": 5, "train/loss": 3.0, "train/classification": 2.0}])
    r = write_run_report(run)
    assert set(r["files"]) == {"curves.png", "metrics.json"}
    assert {"pr_curves.png", "confusion.png", "val_grid.png", "evaluation"} <= set(r["skipped"])
    assert "best.ckpt" in r["skipped"]["val_grid.png"]
    assert r["mAP50"] is None and r["epochs"] == 1 and r["steps"] == 6
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["evaluation"] is None and doc["skipped"] == r["skipped"]
    assert "best_val_mAP50" not in doc["training"]

    # a checkpoint but no config.yaml to find the validation set in; a broken CSV
    shutil.copy(run_dir / "spec.json", run / "spec.json")
    (run / "best.ckpt").symlink_to(run_dir / "best.ckpt")
    (run / "logs" / "metrics.csv").write_text("epoch,step\n")
    r = write_run_report(run)
    assert "config.yaml" in r["skipped"]["evaluation"] and "curves.png" in r["skipped"]
    assert set(r["files"]) == {"metrics.json"}
    # an empty folder still gets a metrics.json saying why; a missing folder is an error
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_run_report(empty)["files"] == {"metrics.json": str(empty / "metrics.json")}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_run_report(tmp_path / "nope")


def test_threshold_calibrated_without_the_report(synth_small, tmp_path):
    """report=False still sets the spec's operating threshold to validation's best-F1 one, and
    each class's own (issue 17 item 5), which export carries into the ONNX file."""
    from detector.evaluate import evaluate_tiles
    from detector.train.checkpoint import read_checkpoint, spec_from_checkpoint
    from detector.train.fit import TrainConfig, train

    cfg = TrainConfig(train=str(synth_small / "train.json"), val=str(synth_small / "val.json"),
                      out=str(tmp_path / "run"), epochs=3, batch_size=8, crop=256, warmup_steps=2,
                      report=False)
    best = train(cfg)
    assert not (tmp_path / "run" / "metrics.json").exists()  # no report written
    spec = spec_from_checkpoint(read_checkpoint(best), best)
    metrics = evaluate_tiles(best, synth_small / "val.json", device="cpu").metrics
    sweep = metrics["sweep"]["best"]
    if sweep["f1"] > 0:
        assert spec.score_threshold == pytest.approx(sweep["threshold"], abs=1e-3)
    else:  # nothing found on validation: the default stays
        assert spec.score_threshold == pytest.approx(0.3)
        assert spec.class_thresholds is None
        return
    # and one per class: each class's own best F1 on validation, the global one where it has none
    from detector.eval_run import calibrated_thresholds

    assert spec.class_thresholds == calibrated_thresholds(metrics["per_class"], spec.classes, spec.score_threshold)
    for name, t in zip(spec.classes, spec.class_thresholds):
        b = metrics["per_class"][name]["best_f1"]
        assert t == (b["rounded"] if b["f1"] > 0 else spec.score_threshold)
        assert metrics["per_class"][name]["threshold"] == t  # evaluation read each class at its own
    # export carries them into the ONNX file the runner reads
    from detector.export.onnx_export import export_checkpoint
    from detector.runner import Detector

    onnx_path = tmp_path / "model.onnx"
    export_checkpoint(best, onnx_path)
    assert Detector.load(onnx_path, device="cpu").spec.class_thresholds == spec.class_thresholds
