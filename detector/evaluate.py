"""Tile-level evaluation of a model (``.onnx`` or ``.ckpt``) on a COCO dataset.

Every image goes through the same :class:`detector.runner.Detector` path as prediction, so
the numbers describe what ``revet predict`` delivers. Dataset categories are matched to the
model's classes by name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from detector import raster
from detector.datasets.coco import read_coco
from detector.metrics import ImageEval, evaluate_detections
from detector.outputs import atomic_write_text
from detector.runner import Detector

EVAL_MIN_SCORE = 0.001  # COCO practice: keep low-score detections so the PR curve is complete


def evaluate_model(model: str | os.PathLike | Detector, data: str | os.PathLike, *,
                   out: str | os.PathLike | None = None, device: str = "auto",
                   batch_size: int = 8) -> dict:
    """Score every image of the COCO file ``data`` and compute COCO metrics.

    Returns the metrics dict (see :func:`detector.metrics.evaluate_detections`) with
    ``model`` and ``data`` added; also written to ``out`` as JSON when given.
    """
    det = model if isinstance(model, Detector) else Detector.load(model, device=device)
    labels = read_coco(data).remap(det.spec.classes)
    evals: list[ImageEval] = []
    t = det.spec.tile_size
    pending: list[tuple[np.ndarray, object]] = []

    def flush():
        if not pending:
            return
        res = det.predict_tiles([p[0] for p in pending], min_score=EVAL_MIN_SCORE, batch_size=batch_size)
        for (img, rec), r in zip(pending, res):
            evals.append(ImageEval(rec.boxes, rec.labels, r.boxes, r.scores, r.labels))
        pending.clear()

    for rec in labels.images:
        image, valid, _ = raster.read_image(rec.path, det.spec.bands)
        if image.shape[:2] == (t, t):
            pending.append((image, rec))
            if len(pending) == batch_size:
                flush()
        else:
            flush()
            r = det.predict_tiles([image], min_score=EVAL_MIN_SCORE)[0]
            evals.append(ImageEval(rec.boxes, rec.labels, r.boxes, r.scores, r.labels))
    flush()
    metrics = evaluate_detections(evals, det.spec.classes)
    metrics["model"] = str(model) if not isinstance(model, Detector) else "<in-memory>"
    metrics["data"] = str(data)
    if out is not None:
        atomic_write_text(Path(out), json.dumps(metrics, indent=2))
    return metrics


def format_metrics(m: dict) -> str:
    lines = [f"mAP@0.5      {m['mAP50']:.4f}", f"mAP@0.5:0.95 {m['mAP50_95']:.4f}"]
    for name, c in m["per_class"].items():
        lines.append(f"  {name:<12} AP@0.5 {c['AP50']:.4f}  recall@0.5 {c['recall50']:.4f}  (n={c['num_gt']})")
    return "\n".join(lines)
