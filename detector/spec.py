"""The model spec: everything needed to use a trained model, and nothing torch.

One :class:`ModelSpec` is stored inside every checkpoint (``ckpt["revet_spec"]``) and in every
exported ONNX file (``metadata_props["revet_spec"]``, JSON). The runner reads it from the
``.onnx`` and never guesses band order, scaling, tile size or class names.

Pixel value convention: the network sees ``x01 = clip((raw - offset) / scale, 0, 1)`` per band,
then ``(x01 - mean) / std``. Both steps are buffers inside the exported graph, so the runner
feeds raw values (as float32) and preprocessing cannot drift between training and inference.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPEC_VERSION = 1
SPEC_KEY = "revet_spec"
DEFAULT_CLASSES = ("bunker", "revetment", "shelter")


# the lowest score a model reports: the export adapter's floor and the model's own post-processing
# in training's validation (train.models.build_model), so validation, which picks best.ckpt,
# ranks the same candidates as revet evaluate
MIN_CANDIDATE_SCORE = 0.001
GSD_LIMITS = (0.01, 1000.0)  # metres per pixel a spec may state (1e-6 would resample scenes to petapixels)


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects and produces.

    Attributes:
        classes: class names; label ``i`` in every output means ``classes[i]``.
        arch: architecture name in the training registry (``detector.train.models``).
        bands: 1-based raster band indexes read, in the order the model sees them.
        dtype: dtype of the raw imagery the model was trained on (``uint8``, ``uint16``, ...).
        offset, scale: per band; ``x01 = clip((raw - offset) / scale, 0, 1)``.
        mean, std: per band, applied to ``x01``.
        tile_size: square input size in pixels (the exported graph has this fixed H = W).
        overlap: default overlap in pixels between neighbouring windows of a scene.
        gsd: ground sample distance in metres per pixel the model was trained at (None: unknown).
        score_threshold: default minimum score of a reported detection.
        class_thresholds: optional minimum score per class, in ``classes`` order (calibrated on
            validation, see :meth:`thresholds`); None: ``score_threshold`` for every class.
        nms_iou: IoU above which same-class boxes are merged.
        max_detections: detections kept per tile.
        version: spec format version.
    """

    classes: tuple[str, ...] = DEFAULT_CLASSES
    arch: str = "ssdlite"
    bands: tuple[int, ...] = (1, 2, 3)
    dtype: str = "uint8"
    offset: tuple[float, ...] = (0.0, 0.0, 0.0)
    scale: tuple[float, ...] = (255.0, 255.0, 255.0)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    tile_size: int = 512
    overlap: int = 64
    gsd: float | None = None
    score_threshold: float = 0.3
    class_thresholds: tuple[float, ...] | None = None
    nms_iou: float = 0.5
    max_detections: int = 100
    version: int = SPEC_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("tile_size", "overlap", "max_detections", "version"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool):
                raise ValueError(f"ModelSpec.{name}: expected an integer, got {v!r}")
        for name in ("classes", "bands", "offset", "scale", "mean", "std"):
            if not isinstance(getattr(self, name), (tuple, list)):
                raise ValueError(f"ModelSpec.{name}: expected a list, got {getattr(self, name)!r}")
        if not all(isinstance(b, numbers.Integral) and not isinstance(b, bool) and b >= 1 for b in self.bands):
            raise ValueError(f"ModelSpec.bands: expected 1-based band numbers, got {list(self.bands)}")
        for name in ("offset", "scale", "mean", "std"):
            if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                       for v in getattr(self, name)):
                raise ValueError(f"ModelSpec.{name}: expected finite numbers, got {list(getattr(self, name))}")
        if self.gsd is not None and not (isinstance(self.gsd, numbers.Real) and GSD_LIMITS[0] <= self.gsd <= GSD_LIMITS[1]):
            raise ValueError(f"ModelSpec.gsd: expected metres per pixel in {list(GSD_LIMITS)} or null, got {self.gsd!r}")
        if self.max_detections < 1:
            raise ValueError(f"ModelSpec.max_detections: expected at least 1, got {self.max_detections}")
        n = len(self.bands)
        if not self.classes:
            raise ValueError("ModelSpec.classes: expected at least one class name")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"ModelSpec.classes: duplicate names in {list(self.classes)}")
        for name in ("offset", "scale", "mean", "std"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"ModelSpec.{name}: expected {n} values (one per band {list(self.bands)}), "
                    f"got {len(getattr(self, name))}"
                )
        if any(s == 0 for s in self.scale) or any(s == 0 for s in self.std):
            raise ValueError("ModelSpec.scale and ModelSpec.std must be non-zero")
        for name in ("score_threshold", "nms_iou"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 1):  # also rejects NaN
                raise ValueError(f"ModelSpec.{name}: expected a number in [0, 1], got {v}")
        if self.class_thresholds is not None:
            ct = self.class_thresholds
            if not isinstance(ct, (tuple, list)) or len(ct) != len(self.classes) or not all(
                    isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v <= 1 for v in ct):
                raise ValueError(f"ModelSpec.class_thresholds: expected {len(self.classes)} numbers in (0, 1] "
                                 f"(one per class {list(self.classes)}) or null, got {ct!r}")
        if self.tile_size < 32 or self.overlap < 0 or self.overlap >= self.tile_size:
            raise ValueError(
                f"ModelSpec: expected tile_size >= 32 and 0 <= overlap < tile_size, "
                f"got tile_size={self.tile_size}, overlap={self.overlap}"
            )

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def thresholds(self, min_score: float | None = None) -> np.ndarray:
        """(K,) float64: the minimum score of a kept detection of each class, in ``classes``
        order. ``min_score`` given: that for every class; else ``class_thresholds`` when the
        spec has them, else ``score_threshold`` for every class. Apply with
        :func:`above_threshold`."""
        if min_score is None and self.class_thresholds is not None:
            return np.asarray(self.class_thresholds, np.float64)
        t = self.score_threshold if min_score is None else float(min_score)
        return np.full(self.num_classes, t, np.float64)

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        if d["class_thresholds"] is None:  # specs without them read as before, also by older Revets
            del d["class_thresholds"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> "ModelSpec":
        if not isinstance(d, dict):
            raise ValueError(f"{source}: model spec must be a JSON object, got {d!r}")
        if not (isinstance(d.get("version", SPEC_VERSION), int) and not isinstance(d.get("version"), bool)):
            raise ValueError(f"{source}: model spec 'version' must be an integer, got {d.get('version')!r}")
        # Forward compatible: a model exported by a newer Revet still scores here. Fields this
        # version does not know are dropped with a warning, as is a newer version number.
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        version = d.get("version", SPEC_VERSION)
        if unknown or version > SPEC_VERSION:
            warnings.warn(f"{source}: model spec version {version} (this Revet reads {SPEC_VERSION})"
                          + (f" has fields {unknown} unknown here; they are ignored" if unknown else "")
                          + "; upgrade revet to use everything the model records", stacklevel=2)
            d = {k: v for k, v in d.items() if k in known and k != "version"}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        try:
            return cls(**kw)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> "ModelSpec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: model spec is not valid JSON ({e})") from None
        return cls.from_dict(d, source)


def above_threshold(scores, labels, thresholds) -> np.ndarray:
    """(N,) bool: ``scores[i] >= thresholds[labels[i]]``. ``thresholds``: one number for every
    class, or (K,) per class (:meth:`ModelSpec.thresholds`). The rule the runner keeps
    detections by and evaluation counts its operating point by; compared in float64, so a
    threshold that is a detection's own (float32) score keeps it."""
    s = np.asarray(scores, np.float64)
    t = np.asarray(thresholds, np.float64)
    if t.ndim:
        t = t[np.asarray(labels, np.int64)] if len(s) else np.zeros(0)
    return s >= t
