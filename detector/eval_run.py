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
        return float(self.metrics["threshold"])


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
