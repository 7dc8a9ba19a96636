"""Pixel evidence for an object seen on one date only. Torch-free.

When ``revet changes`` has both scenes, an object that is confident on one date and has no
match on the other is looked at in both images before it is called ``appeared`` or
``disappeared``. Each date's patch is read over the same ground (the object's box grown by
``margin`` metres, the misregistration removed), resampled to ``size`` x ``size`` pixels,
so two sensors of different GSD compare on one grid:

- ``similarity``: normalised cross-correlation of the two patches' gradient magnitudes (each
  patch's luminance standardised first, so gain, gamma, haze and a different sun elevation
  hardly move it). A built or demolished object changes the structure of its patch (berm,
  walls, shadow); a detector's miss on an unchanged patch does not. At or above
  ``SAME_STRUCTURE`` the object is ``uncertain`` with reason ``unchanged_pixels``.
- ``greener``: how much greener (excess green ``(2G - R - B) / (R + G + B)``, bands 1-3) the
  box is on the date that misses the object than on the date that has it. At or above
  ``OCCLUDED_GREEN`` the object is ``uncertain`` with reason ``occluded`` (hidden under summer
  foliage, not demolished). Needs three bands or more.

Patches with less than half their pixels valid on either date give no evidence (NaN).
"""
from __future__ import annotations

import numpy as np

from detector.objects import to_local

SAME_STRUCTURE = 0.6
OCCLUDED_GREEN = 0.1
MARGIN_M = 10.0
PATCH_PX = 48


def read_patch(ds, frame, box, *, margin: float = MARGIN_M, size: int = PATCH_PX) -> tuple[np.ndarray, np.ndarray]:
    """``(bands, size, size)`` float32 pixels and ``(size, size)`` bool valid mask of the open
    rasterio dataset ``ds`` over ``box`` (``xmin, ymin, xmax, ymax`` metres in the local
    ``frame``) grown by ``margin`` metres. Outside the raster: invalid."""
    from rasterio.windows import from_bounds

    x0, y0, x1, y1 = box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin
    xs, ys = to_local([x0, x1, x1, x0], [y0, y0, y1, y1], frame, ds.crs)
    win = from_bounds(min(xs), min(ys), max(xs), max(ys), ds.transform)
    data = ds.read(window=win, out_shape=(ds.count, size, size), boundless=True, fill_value=0).astype(np.float32)
    valid = ds.dataset_mask(window=win, out_shape=(size, size), boundless=True) > 0
    return data, valid


def _structure(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the standardised luminance, ``(size, size)``."""
    lum = data[:3].mean(0) if len(data) >= 3 else data[0]
    v = lum[valid]
    lum = (lum - v.mean()) / (v.std() + 1e-6)
    gy, gx = np.gradient(lum)
    return np.hypot(gx, gy)


def _excess_green(data: np.ndarray, valid: np.ndarray, inner: np.ndarray) -> float:
    r, g, b = data[0], data[1], data[2]
    eg = (2 * g - r - b) / np.maximum(r + g + b, 1e-6)
    m = valid & inner
    return float(eg[m].mean()) if m.any() else float("nan")


def evidence(ds_have, ds_miss, frame, box_have, box_miss, *, margin: float = MARGIN_M,
             size: int = PATCH_PX) -> tuple[float, float]:
    """``(similarity, greener)`` of one object (module docstring): ``ds_have`` the dataset of
    the date that has it, at ``box_have``; ``ds_miss`` the other, at ``box_miss`` (the same
    ground in that date's frame). NaN where the patches are not valid enough."""
    a, va = read_patch(ds_have, frame, box_have, margin=margin, size=size)
    b, vb = read_patch(ds_miss, frame, box_miss, margin=margin, size=size)
    both = va & vb
    if both.mean() < 0.5:
        return float("nan"), float("nan")
    sa, sb = _structure(a, both), _structure(b, both)
    x, y = sa[both] - sa[both].mean(), sb[both] - sb[both].mean()
    sim = float((x * y).sum() / (np.sqrt((x * x).sum() * (y * y).sum()) + 1e-9))
    greener = float("nan")
    if len(a) >= 3 and len(b) >= 3:
        w, h = box_have[2] - box_have[0], box_have[3] - box_have[1]
        fx, fy = margin / (w + 2 * margin), margin / (h + 2 * margin)  # the box inside the patch
        yy, xx = np.mgrid[0:size, 0:size] / size
        inner = (xx >= fx) & (xx <= 1 - fx) & (yy >= fy) & (yy <= 1 - fy)
        greener = _excess_green(b, both, inner) - _excess_green(a, both, inner)
    return sim, greener
