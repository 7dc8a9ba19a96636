"""The one display stretch and the one class palette: how raw pixels of any dtype and band count
and the classes drawn over them are shown to people (quicklooks, QGIS styles, evaluation reports,
the run report, the change report, the review page, the augmentation and synth previews).
Torch-free.

Each band is stretched linearly between the 2nd and 98th percentile (``PERCENTILES``) of its
valid, finite pixels (all pixels when none is valid) and clipped to [0, 1]; no-data pixels are
black. Three or more bands show their first three as RGB, one or two bands the first as grey.
"""
from __future__ import annotations

import numpy as np

PERCENTILES = (2, 98)

# Class colours (RGB 0-255) in the model's class order (bunker, revetment, shelter for Revet's
# models), cycled for models with more classes: every picture, style and page uses these.
CLASS_COLOURS = [(255, 60, 60), (255, 220, 0), (0, 200, 255), (80, 255, 80), (255, 0, 255), (255, 140, 0),
                 (160, 120, 255), (255, 255, 255)]


# ground truth and detections where both are drawn in one colour each (report crops, val grid)
GT_COLOUR, DET_COLOUR = (40, 220, 60), (255, 40, 200)


def class_colour(index: int) -> tuple[int, int, int]:
    """The colour of class ``index`` (0-based, in the model's class order)."""
    return CLASS_COLOURS[int(index) % len(CLASS_COLOURS)]


def stretch_limits(image: np.ndarray, valid: np.ndarray | None = None, percentiles=PERCENTILES) -> np.ndarray:
    """``(H, W, C)`` image -> ``(C, 2)`` float64 low, high of each band (high > low)."""
    valid = np.ones(image.shape[:2], bool) if valid is None else valid
    lims = np.zeros((image.shape[-1], 2))
    for c in range(image.shape[-1]):
        band = image[..., c]
        ok = np.isfinite(band)
        v = band[ok & valid] if (ok & valid).any() else band[ok]
        lo, hi = np.percentile(v, percentiles) if v.size else (0.0, 1.0)
        lims[c] = lo, hi if hi > lo else lo + 1
    return lims


def apply_stretch(image: np.ndarray, valid: np.ndarray | None, lims: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` image -> float32 ``(H, W, C)`` in [0, 1] by the limits ``lims`` (``(C, 2)``,
    e.g. from a whole scene); no-data and non-finite pixels 0."""
    lo = np.asarray(lims, np.float32)[:, 0]
    span = np.asarray(lims, np.float32)[:, 1] - lo
    out = np.clip(np.nan_to_num((image.astype(np.float32) - lo) / span), 0, 1)
    if valid is not None:
        out[~valid] = 0
    return out


def stretch(image: np.ndarray, valid: np.ndarray | None = None, percentiles=PERCENTILES) -> np.ndarray:
    """``(H, W, C)`` raw image -> float32 [0, 1], each band by its own limits (module rule)."""
    return apply_stretch(image, valid, stretch_limits(image, valid, percentiles))


def to_rgb8(unit: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` values in [0, 1] -> ``(H, W, 3)`` uint8: the first three bands, or the first
    band as grey when there are fewer than three."""
    rgb = unit[..., :3] if unit.shape[-1] >= 3 else np.repeat(unit[..., :1], 3, axis=-1)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def display_rgb(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """``(H, W, C)`` raw image -> ``(H, W, 3)`` uint8 for display: :func:`stretch` then :func:`to_rgb8`."""
    return to_rgb8(stretch(image, valid))
