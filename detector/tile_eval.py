"""Tile-level evaluation: every image of a COCO file scored through the runner, against its boxes.

Each image goes through :meth:`detector.runner.Detector.predict_tiles` with its valid-pixel
mask, after resampling to the model's ground sample distance as scenes are
(:func:`detector.raster.read_image_at`), so nodata and pixel size are handled as
``revet predict`` handles them; tile-sized images are batched, other sizes are scored as small
scenes. Dataset categories are matched to the model's classes by name. See
:mod:`detector.eval_run` for the run, the threshold and the writing.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detector import raster
from detector.eval_run import (EVAL_MIN_SCORE, EvalRun, Source, finish_run, load_detector,
                               operating_class_thresholds, operating_threshold, stamp_metrics)
from detector.labels.coco import read_coco
from detector.metrics import ImageEval, evaluate_full
from detector.runner import Detector


def evaluate_tiles(model: str | os.PathLike | Detector, data: str | os.PathLike, *,
                   threshold: float | None = None, device: str = "auto", batch_size: int = 8,
                   min_score: float = EVAL_MIN_SCORE) -> EvalRun:
    """Score every image of the COCO file ``data`` and compute the metrics (max 100
    detections per image and class, as COCO; detections below ``min_score`` dropped).
    Images whose pixel size differs from the model's ``spec.gsd`` are resampled to it first
    (:func:`detector.raster.read_image_at`); boxes are compared in the image's own pixels.
    The operating point is read at ``threshold`` for every class when given, else at the
    spec's thresholds (per class where it has ``class_thresholds``), as ``revet predict`` keeps."""
    det = load_detector(model, device)
    thr = operating_threshold(det.spec, threshold, min_score)
    cls_thr = operating_class_thresholds(det.spec, threshold, min_score)  # None: thr for every class
    labels = read_coco(data).remap(det.spec.classes)
    evals: list[ImageEval | None] = [None] * len(labels.images)
    sources: list[Source] = []
    t = det.spec.tile_size
    pending: list[tuple[int, np.ndarray, np.ndarray, float]] = []

    def flush() -> None:
        if pending:
            res = det.predict_tiles([p[1] for p in pending], valid=[p[2] for p in pending],
                                    min_score=min_score, batch_size=batch_size)
            for (i, _, _, f), r in zip(pending, res):
                rec = labels.images[i]
                evals[i] = ImageEval(rec.boxes, rec.labels, (r.boxes * np.float32(f)).astype(np.float32),
                                     r.scores, r.labels)
            pending.clear()

    for i, rec in enumerate(labels.images):
        # read at the model's pixel size, as scenes are; boxes mapped back to the image's pixels
        image, valid, info, f = raster.read_image_at(rec.path, det.spec.bands, det.spec.gsd)
        raster.check_dtype(rec.path, info.dtype, det.spec.dtype)
        sources.append(Source(Path(rec.path), info.crs, info.transform if info.crs is not None else None))
        pending.append((i, image, valid, f))
        # Tile-sized images are batched; others are scored alone as small scenes.
        if image.shape[:2] != (t, t) or len(pending) == batch_size:
            flush()
    flush()
    metrics = evaluate_full(evals, det.spec.classes, threshold=thr, class_thresholds=cls_thr)
    stamp_metrics(metrics, mode="tiles", min_score=min_score, model=model, data=data)
    return EvalRun(metrics, evals, sources, det.spec, "tiles", 100)


def evaluate_model(model: str | os.PathLike | Detector, data: str | os.PathLike, *,
                   out: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 8,
                   threshold: float | None = None, report: str | os.PathLike | None = None,
                   min_score: float = EVAL_MIN_SCORE) -> dict:
    """Tile-level metrics of ``model`` on the COCO file ``data``.

    Returns the metrics dict of :func:`detector.metrics.evaluate_full` with ``mode``, ``model``
    and ``data`` added; written to ``out`` as JSON and an HTML report to ``report`` when given.
    """
    run = evaluate_tiles(model, data, threshold=threshold, device=device, batch_size=batch_size,
                         min_score=min_score)
    return finish_run(run, out, report)
