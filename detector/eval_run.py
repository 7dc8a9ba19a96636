"""What every evaluation shares: the run it produces (:class:`EvalRun`, :class:`Source`), how the
model and its operating threshold are chosen, the metadata stamped on the metrics, and writing
(JSON, the HTML report). Tile-level evaluation is :mod:`detector.tile_eval`, scene-level
:mod:`detector.scene_eval`; :mod:`detector.evaluate` dispatches between them and compares two
models.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detector.metrics import ImageEval
from detector.outputs import atomic_write_text
from detector.runner import Detector
from detector.spec import ModelSpec

EVAL_MIN_SCORE = 0.001  # COCO practice: keep low-score detections so the PR curve is complete


@dataclass
class Source:
    """Where an evaluated image's pixels come from, for crops and map coordinates.

    ``transform`` maps pixel (col, row) to map coordinates in ``crs`` (None for plain images).
    """

    path: Path
    crs: object = None
    transform: object = None


@dataclass
class EvalRun:
    """One evaluation: the metrics and the per-image data behind them (what the report draws).

    ``images[i]`` holds ground truth and every detection (score >= ``EVAL_MIN_SCORE``) of
    ``sources[i]`` in that image's pixels. ``mode`` is ``"tiles"`` or ``"scene"``;
    ``max_dets`` the per-image, per-class cap on evaluated detections (None: no cap).
    """

    metrics: dict
    images: list[ImageEval]
    sources: list[Source]
    spec: ModelSpec
    mode: str = "tiles"
    max_dets: int | None = 100
    extra: dict = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    @property
    def threshold(self) -> float:
        """The one operating threshold (``metrics["threshold"]``); see :attr:`thresholds`."""
        return float(self.metrics["threshold"])

    @property
    def thresholds(self) -> np.ndarray:
        """(K,) the operating threshold of each class: the spec's ``class_thresholds`` when the
        run used them (``metrics["class_thresholds"]``), else :attr:`threshold` for every class.
        Apply with :func:`detector.spec.above_threshold`, as the runner does."""
        ct = self.metrics.get("class_thresholds")
        if ct:
            return np.array([ct[c] for c in self.classes], np.float64)
        return np.full(len(self.classes), self.threshold, np.float64)


def load_detector(model: str | os.PathLike | Detector, device: str = "auto") -> Detector:
    """``model`` itself when it is a :class:`Detector`, else :meth:`Detector.load` of the path or name."""
    return model if isinstance(model, Detector) else Detector.load(model, device=device)


def operating_threshold(spec: ModelSpec, threshold: float | None, min_score: float = EVAL_MIN_SCORE) -> float:
    """The spec's score threshold, or ``threshold`` (checked to lie in [min_score, 1])."""
    t = spec.score_threshold if threshold is None else float(threshold)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"threshold: expected a score between 0 and 1, got {t}")
    if t < min_score:
        raise ValueError(f"threshold {t} is below min_score {min_score}: detections under min_score "
                         f"are not kept; lower min_score or raise the threshold")
    return t


def operating_class_thresholds(spec: ModelSpec, threshold: float | None,
                               min_score: float = EVAL_MIN_SCORE) -> np.ndarray | None:
    """(K,) the spec's ``class_thresholds`` when it has them and no ``threshold`` is given (the
    runner's rule, :meth:`ModelSpec.thresholds`), else None: one threshold for every class."""
    if threshold is not None or spec.class_thresholds is None:
        return None
    t = spec.thresholds()
    low = [c for c, v in zip(spec.classes, t) if v < min_score]
    if low:
        raise ValueError(f"the model's thresholds of {low} are below min_score {min_score}: detections under "
                         f"min_score are not kept; lower min_score or give --threshold")
    return t


def calibrated_thresholds(per_class: dict, classes, fallback: float) -> tuple[float, ...]:
    """One threshold per class of ``classes``, for ``ModelSpec.class_thresholds``: the class's
    best-F1 threshold on an evaluated set (``per_class[c]["best_f1"]["rounded"]``: the
    ``per_class`` of :func:`detector.metrics.evaluate_full`, :func:`detector.metrics.best_f1`),
    or ``fallback`` (the model's one threshold) where the class has no ground truth there or
    its best F1 is 0 (nothing found)."""
    out = []
    for name in classes:
        b = (per_class.get(name) or {}).get("best_f1") or {}
        t, f1 = b.get("rounded"), b.get("f1")
        ok = t is not None and f1 is not None and math.isfinite(t) and math.isfinite(f1) and f1 > 0 and 0 < t <= 1
        out.append(float(t) if ok else float(fallback))
    return tuple(out)


def stamp_metrics(metrics: dict, *, mode: str, min_score: float, model, data) -> dict:
    """Add what was evaluated to a metrics dict: ``mode`` (``"tiles"`` or ``"scene"``),
    ``min_score``, ``model`` (:func:`model_name`) and ``data``; returns ``metrics``."""
    metrics["mode"] = mode
    metrics["min_score"] = float(min_score)
    metrics["model"] = model_name(model)
    metrics["data"] = str(data)
    return metrics


def model_name(model) -> str:
    """How a model is named in the metrics: its path, or ``<in-memory>`` for a :class:`Detector`."""
    return "<in-memory>" if isinstance(model, Detector) else str(model)


def finish_run(run: EvalRun, out=None, report=None) -> dict:
    """Write ``run``'s HTML report to the folder ``report`` and its metrics as JSON to ``out``
    (each when given); returns the metrics (with ``report``, the report's path added)."""
    if report is not None:
        from detector.report import write_report

        run.metrics["report"] = str(write_report(run, report))
    if out is not None:
        write_json(out, run.metrics)
    return run.metrics


def write_json(path: str | os.PathLike, obj) -> Path:
    """JSON with NaN written as null (strict JSON; NaN means 'undefined', e.g. AP of a class
    without ground truth)."""
    atomic_write_text(Path(path), json.dumps(_jsonable(obj), indent=2))
    return Path(path)


def _jsonable(o):
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    return o
