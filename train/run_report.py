"""What happened in a training run: figures and numbers written into the run folder.

    from detector.train.run_report import write_run_report
    info = write_run_report("runs/revet")      # after train(cfg)

Reads ``RUN_DIR/logs/metrics.csv`` (Lightning's CSVLogger), ``RUN_DIR/config.yaml`` (for the
validation COCO file) and the best checkpoint, scores the validation set through the same
:func:`detector.tile_eval.evaluate_tiles` path as ``revet evaluate``, and writes into RUN_DIR:

- ``curves.png``: training losses, validation mAP (and per-class AP@0.5) and the learning rate
  against the global step, epoch ends marked;
- ``pr_curves.png``, ``confusion.png``, ``sweep.png``: the evaluation report's figures
  (:mod:`detector.plots`) for the validation set;
- ``val_grid.png``: up to ``grid_tiles`` validation tiles with true boxes (green, dashed) and
  predictions at or above the operating threshold (magenta, solid, tagged ``class score``);
- ``metrics.json``: mAP@0.5, mAP@0.5:0.95, per-class AP, precision/recall/F1 at the operating
  threshold, the best-F1 threshold, what the log says about the training (epochs, steps, time,
  best validation mAP) and which outputs were skipped and why.

Nothing here raises at the end of a training run for a missing or partial log, checkpoint or
validation file: each part is produced if its inputs allow, and ``skipped`` says why not.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from detector import raster
from detector.eval_run import write_json
from detector.spec import above_threshold
from detector.tile_eval import evaluate_tiles
from detector.display import display_rgb
from detector.display import DET_COLOUR, GT_COLOUR
from detector.plots import font, plot_confusion, plot_pr_curves, plot_sweep, plot_training_curves

log = logging.getLogger("revet.train")

GRID_CELL = 300      # px per tile in val_grid.png
GRID_GAP = 8
GRID_CAPTION = 22    # caption strip under each tile
GRID_HEADER = 58     # title and legend
GRID_COLS = 4


def grid_size(n: int, cols: int = GRID_COLS) -> tuple[int, int]:
    """(width, height) of a ``val_grid.png`` holding ``n`` tiles in ``cols`` columns."""
    c = max(1, min(n, cols))
    r = max(1, math.ceil(n / c))
    return (c * GRID_CELL + (c + 1) * GRID_GAP,
            GRID_HEADER + r * (GRID_CELL + GRID_CAPTION + GRID_GAP) + GRID_GAP)


# -- the log ---------------------------------------------------------------------------------

def read_metrics_csv(path: str | os.PathLike) -> dict[str, list[tuple[float, float]]]:
    """Lightning's ``metrics.csv`` -> ``{column: [(x, value), ...]}`` of the non-empty cells.

    ``x`` is the row's ``step`` (global step), else its ``epoch``, else the row number. The
    ``step`` and ``epoch`` columns themselves are included (x, x) when present. Cells that are
    empty or not numbers are left out."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    series: dict[str, list[tuple[float, float]]] = {}
    for i, row in enumerate(rows):
        x = _num(row.get("step"))
        if x is None:
            x = _num(row.get("epoch"))
        if x is None:
            x = float(i)
        for k, v in row.items():
            if k is None:
                continue
            y = _num(v)
            if y is not None:
                series.setdefault(k, []).append((x, y))
    return series


def _num(v) -> float | None:
    try:
        y = float(v)
    except (TypeError, ValueError):
        return None
    return y if math.isfinite(y) else None


def training_summary(series: dict, run_dir: Path, train_seconds: float | None = None) -> dict:
    """Epochs, steps, time and best validation mAP as far as the log (and file times) tell."""
    out: dict = {}
    if "epoch" in series:
        out["epochs"] = int(max(v for _, v in series["epoch"])) + 1
    if "step" in series:
        out["last_logged_step"] = int(max(v for _, v in series["step"]))
    # Lightning logs validation at the epoch's last step: that step + 1 steps were trained by then.
    if "val/mAP50" in series:
        best_x, best = max(series["val/mAP50"], key=lambda p: p[1])
        out["validations"] = len(series["val/mAP50"])
        out["best_val_mAP50"] = best
        out["best_val_step"] = int(best_x)
        out["last_val_mAP50"] = series["val/mAP50"][-1][1]
    if "val/mAP50_95" in series:
        out["last_val_mAP50_95"] = series["val/mAP50_95"][-1][1]
    if "train/loss" in series:
        out["first_train_loss"] = series["train/loss"][0][1]
        out["last_train_loss"] = series["train/loss"][-1][1]
    for key in ("time", "train/time", "elapsed", "train_time"):
        if key in series:
            out["time_s"], out["time_source"] = float(series[key][-1][1]), f"metrics.csv column {key!r}"
            break
    if train_seconds is not None:
        out["time_s"], out["time_source"] = float(train_seconds), "measured by the caller"
    elif "time_s" not in out:
        start, end = run_dir / "config.yaml", run_dir / "last.ckpt"
        if start.exists() and end.exists():
            out["time_s"] = max(0.0, end.stat().st_mtime - start.stat().st_mtime)
            out["time_source"] = "approximate: config.yaml written to last.ckpt written"
    return out


# -- curves.png ------------------------------------------------------------------------------

# -- val_grid.png ----------------------------------------------------------------------------

def _dashed_rect(d: ImageDraw.ImageDraw, box, colour, width: int = 2, on: int = 6, off: int = 4) -> None:
    x1, y1, x2, y2 = box
    for a, b, horizontal, fixed in ((x1, x2, True, y1), (x1, x2, True, y2), (y1, y2, False, x1), (y1, y2, False, x2)):
        s = a
        while s < b:
            e = min(b, s + on)
            d.line([(s, fixed), (e, fixed)] if horizontal else [(fixed, s), (fixed, e)], fill=colour, width=width)
            s = e + off


def pick_grid_images(run, n: int) -> list[int]:
    """Indices of up to ``n`` images of ``run`` for the grid: those with ground truth or a
    detection above the threshold first (in dataset order), then the rest."""
    thr = run.thresholds  # per class where the model has class thresholds
    busy, quiet = [], []
    for i, im in enumerate(run.images):
        has = len(im.gt_labels) > 0 or bool(above_threshold(im.scores, im.labels, thr).any())
        (busy if has else quiet).append(i)
    return (busy + quiet)[:n]


def draw_val_grid(run, path: str | os.PathLike, *, n: int = 8, cols: int = GRID_COLS) -> int:
    """``val_grid.png``: up to ``n`` images of the :class:`detector.eval_run.EvalRun` ``run``,
    ``cols`` per row, each scaled to ``GRID_CELL`` px (see :func:`grid_size`), true boxes green
    and dashed, detections with ``score >= run.threshold`` magenta, solid and tagged
    ``class score``. Returns the number of images drawn."""
    idx = pick_grid_images(run, n)
    if not idx:
        raise ValueError("the validation set has no images")
    c = max(1, min(len(idx), cols))
    W, H = grid_size(len(idx), cols)
    img = Image.new("RGB", (W, H), (245, 245, 245))
    d = ImageDraw.Draw(img)
    f, fs, ft = font(16), font(13), font(12)
    thr = run.threshold
    d.text((GRID_GAP, 8), f"Validation tiles: predictions at score >= {thr:.2f} and ground truth", fill="black",
           font=f)
    ly = 36
    _dashed_rect(d, (GRID_GAP, ly, GRID_GAP + 28, ly + 14), GT_COLOUR, 2)
    d.text((GRID_GAP + 36, ly + 7), "ground truth (dashed)", fill="black", font=fs, anchor="lm")
    x = GRID_GAP + 200
    d.rectangle([x, ly, x + 28, ly + 14], outline=DET_COLOUR, width=2)
    d.text((x + 36, ly + 7), "prediction: class score (solid)", fill="black", font=fs, anchor="lm")
    d.text((W - GRID_GAP, ly + 7), f"{len(idx)} of {len(run.images)} images", fill=(90, 90, 90), font=fs,
           anchor="rm")
    bands = list(run.spec.bands)
    for k, i in enumerate(idx):
        r, q = divmod(k, c)
        x0 = GRID_GAP + q * (GRID_CELL + GRID_GAP)
        y0 = GRID_HEADER + r * (GRID_CELL + GRID_CAPTION + GRID_GAP)
        im, src = run.images[i], run.sources[i]
        image, valid, _info = raster.read_image(src.path, bands)
        h, w = image.shape[:2]
        s = GRID_CELL / max(h, w)
        tile = Image.fromarray(display_rgb(image, valid)).resize((max(1, round(w * s)), max(1, round(h * s))),
                                                                 Image.BILINEAR)
        img.paste(tile, (x0, y0))
        td = ImageDraw.Draw(img)
        for b in np.asarray(im.gt_boxes, np.float64).reshape(-1, 4):
            _dashed_rect(td, (x0 + b[0] * s, y0 + b[1] * s, x0 + b[2] * s - 1, y0 + b[3] * s - 1), GT_COLOUR, 2)
        scores = np.asarray(im.scores)
        keep = np.flatnonzero(above_threshold(scores, im.labels, run.thresholds))
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        rects = {j: (x0 + b[0] * s, y0 + b[1] * s, x0 + b[2] * s - 1, y0 + b[3] * s - 1)
                 for j, b in ((j, np.asarray(im.boxes[j], np.float64)) for j in keep)}
        for j in keep[::-1]:  # highest score drawn last, on top
            td.rectangle(rects[j], outline=DET_COLOUR, width=2)
        placed: list[tuple] = []
        for j in keep:  # tags by score; a tag that would cover an earlier one is left out
            bx = rects[j]
            text = f"{run.classes[int(im.labels[j])]} {scores[j]:.2f}"
            tw = td.textlength(text, font=ft)
            tx = min(max(bx[0], x0), x0 + GRID_CELL - tw - 4)
            ty = bx[1] - 15 if bx[1] - 15 >= y0 else bx[3] + 1  # above the box, else below it
            ty = min(ty, y0 + GRID_CELL - 15)
            tag = (tx, ty, tx + tw + 4, ty + 14)
            if any(tag[0] < p[2] and p[0] < tag[2] and tag[1] < p[3] and p[1] < tag[3] for p in placed):
                continue
            placed.append(tag)
            td.rectangle(tag, fill=DET_COLOUR)
            td.text((tx + 2, ty + 7), text, fill="white", font=ft, anchor="lm")
        cap = f"{Path(src.path).name} \u00b7 {len(im.gt_labels)} true, {len(keep)} predicted"
        d.text((x0 + 2, y0 + GRID_CELL + GRID_CAPTION / 2), cap, fill="black", font=fs, anchor="lm")
    path = Path(path)
    img.save(path)
    return len(idx)


# -- metrics.json and the whole report -------------------------------------------------------

def _val_path(run_dir: Path, val) -> Path:
    if val is None:
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path}: no config.yaml to find the validation set in; pass val=")
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        if not isinstance(cfg, dict) or not cfg.get("val"):
            raise ValueError(f"{cfg_path}: no 'val' entry (the validation COCO file)")
        val = cfg["val"]
    p = Path(val)
    if not p.exists() and not p.is_absolute() and (run_dir / p).exists():
        p = run_dir / p  # relative to the run folder rather than the working directory
    if not p.exists():
        raise FileNotFoundError(f"{p}: validation COCO file not found")
    return p


def _checkpoint_path(run_dir: Path, checkpoint) -> Path:
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.exists():
            raise FileNotFoundError(f"{p}: checkpoint does not exist")
        return p
    for name in ("best.ckpt", "last.ckpt"):
        if (run_dir / name).exists():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir}: no best.ckpt or last.ckpt")


def summarize_metrics(m: dict) -> dict:
    """The headline numbers of an :func:`detector.metrics.evaluate_full` dict."""
    per_class = {name: {k: c.get(k) for k in ("AP50", "AP", "recall50", "threshold", "precision", "recall", "f1",
                                                "tp", "fp", "fn", "num_gt", "best_f1")}
                 for name, c in m["per_class"].items()}
    return {"mAP50": m["mAP50"], "mAP50_95": m["mAP50_95"], "threshold": m["threshold"],
            "operating": dict(m["operating"]), "best_f1": dict(m["sweep"]["best"]),
            "per_class": per_class, "confusion": m["confusion"], "num_images": m["num_images"]}


VALIDATION_FIGURES = ("pr_curves.png", "confusion.png", "sweep.png", "val_grid.png")


class ReportParts:
    """What a run report has produced (``files``: name -> path) and skipped (``skipped``: name
    -> why), plus notes; :meth:`attempt` runs one part and never raises (the report must not
    end a finished training run)."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []

    def attempt(self, names: list[str], part, *args):
        """``part(*args)``, or None with every name in ``names`` skipped for its error."""
        try:
            return part(*args)
        except Exception as e:  # noqa: BLE001 - whatever broke, the rest of the report goes on
            reason = f"{type(e).__name__}: {e}" if not isinstance(e, (FileNotFoundError, ValueError)) else str(e)
            for name in names:
                self.skipped[name] = reason
            log.warning("run report: skipped %s (%s)", ", ".join(names), reason)
            return None


def _curves(run_dir: Path, parts: ReportParts) -> dict:
    """``curves.png`` from ``logs/metrics.csv``; returns the logged series."""
    csv_path = run_dir / "logs" / "metrics.csv"
    if not csv_path.exists():
        raise FileNotFoundError(f"{csv_path}: no training log")
    series = read_metrics_csv(csv_path)
    p, missing = plot_training_curves(series, run_dir / "curves.png", title=run_dir.name)
    parts.files["curves.png"] = str(p)
    parts.notes.extend(missing)
    return series


def _validation_figures(run, run_dir: Path, grid_tiles: int, parts: ReportParts) -> None:
    """The evaluation figures and ``val_grid.png`` of the validation run, each on its own."""
    for name, draw in (("pr_curves.png", plot_pr_curves), ("confusion.png", plot_confusion),
                       ("sweep.png", plot_sweep)):
        path = parts.attempt([name], draw, run.metrics, run_dir / name)
        if path is not None:
            parts.files[name] = str(path)
    shown = parts.attempt(["val_grid.png"], lambda: draw_val_grid(run, run_dir / "val_grid.png", n=grid_tiles))
    if shown is not None:
        parts.files["val_grid.png"] = str(run_dir / "val_grid.png")
        parts.notes.append(f"val_grid.png shows {shown} of {len(run.images)} validation images")


def _headline(evaluation: dict | None, training: dict) -> dict:
    """The numbers ``write_run_report`` returns and puts first in ``metrics.json``."""
    ev = evaluation or {}
    op, best = ev.get("operating", {}), ev.get("best_f1", {})
    return {
        "mAP50": ev.get("mAP50"), "mAP50_95": ev.get("mAP50_95"), "threshold": ev.get("threshold"),
        "precision": op.get("precision"), "recall": op.get("recall"), "f1": op.get("f1"),
        "best_f1_threshold": best.get("threshold"), "best_f1": best.get("f1"),
        "per_class": ev.get("per_class"),
        "epochs": training.get("epochs"), "steps": (training["last_logged_step"] + 1
                                                    if "last_logged_step" in training else None),
        "time_s": training.get("time_s"),
    }


def write_run_report(run_dir: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
                     val: str | os.PathLike | None = None, device: str = "cpu", threshold: float | None = None,
                     grid_tiles: int = 8, train_seconds: float | None = None) -> dict:
    """Write the run's figures and ``metrics.json`` into ``run_dir`` (see the module doc).

    ``checkpoint``: default ``run_dir/best.ckpt`` (``last.ckpt`` if there is no best);
    ``val``: the validation COCO file, default the ``val`` of ``run_dir/config.yaml``;
    ``threshold``: the operating score threshold, default the model spec's;
    ``train_seconds``: the wall time of training if the caller measured it (else it is
    estimated from file times).

    Returns ``{"files": {name: path}, "skipped": {name: reason}, "mAP50", "mAP50_95",
    "precision", "recall", "f1", "threshold", "best_f1_threshold", "epochs", "steps",
    "time_s", "seconds"}`` (numbers None where unknown). Raises only if ``run_dir`` is not a
    folder; everything else missing or broken is reported under ``skipped``.
    """
    t0 = time.monotonic()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder does not exist")
    parts = ReportParts()
    series = parts.attempt(["curves.png"], _curves, run_dir, parts) or {}
    try:
        training = training_summary(series, run_dir, train_seconds)
    except Exception as e:  # noqa: BLE001
        training = {}
        parts.notes.append(f"training summary: {type(e).__name__}: {e}")

    needs_val = [*VALIDATION_FIGURES, "evaluation"]  # what a validation run makes
    ckpt = parts.attempt(needs_val, _checkpoint_path, run_dir, checkpoint)
    val_path = parts.attempt(needs_val, _val_path, run_dir, val) if ckpt else None
    run = parts.attempt(needs_val, lambda: evaluate_tiles(ckpt, val_path, threshold=threshold,
                                                          device=device)) if val_path else None
    evaluation = parts.attempt(["evaluation"], summarize_metrics, run.metrics) if run is not None else None
    if run is not None:
        _validation_figures(run, run_dir, grid_tiles, parts)

    result = _headline(evaluation, training)
    doc = {"run_dir": str(run_dir), "checkpoint": str(ckpt) if ckpt else None,
           "val": str(val_path) if val_path else None, **result, "training": training,
           "evaluation": evaluation, "files": dict(parts.files), "skipped": dict(parts.skipped),
           "notes": parts.notes}
    if parts.attempt(["metrics.json"], write_json, run_dir / "metrics.json", doc) is not None:
        parts.files["metrics.json"] = str(run_dir / "metrics.json")
    result.update(files=parts.files, skipped=parts.skipped, notes=parts.notes, seconds=time.monotonic() - t0)
    return result
