"""Pixel evidence for an object seen on one date only: is it hidden under foliage? Torch-free.

When ``revet changes`` has both scenes, an object that is confident before and has no match
after is looked at in both images before it is called ``disappeared`` (only that direction:
ground is cleared of trees to build on, so crowns where a new object stands prove nothing). Each date's box (the misregistration removed) is read over the same ground and
resampled to ``size`` x ``size`` pixels, so two sensors of different GSD compare on one grid.
On the date that misses the object, the box is **occluded** (the object ``uncertain`` with reason
``occluded``: hidden under tree crowns, not demolished or new) when all three hold:

- vegetated: mean excess green ``(2G - R - B) / (R + G + B)`` (bands 1-3) >= ``GREEN``;
- greener than on the date that has the object by >= ``GREENER`` (foliage on one date only);
- textured like crowns, not smooth like a field: mean luminance gradient magnitude per pixel
  over mean luminance >= ``TEXTURE`` (a structure demolished and grassed over leaves a green,
  smooth box and stays ``disappeared``).

The thresholds were set on synthetic pairs of ``revet synth --pairs`` (seeds 9001 and 9100,
checked on 9200; docs/sites.md); on real imagery they are a heuristic to review, and the rule
needs three bands or more (else no evidence). Boxes with less than half their pixels valid on
either date give no evidence.
"""
from __future__ import annotations

import numpy as np

from detector.objects import to_local

GREEN = 0.12
GREENER = 0.05
TEXTURE = 0.05
PATCH_PX = 24


def read_patch(ds, frame, box, *, size: int = PATCH_PX) -> tuple[np.ndarray, np.ndarray]:
    """``(bands, size, size)`` float32 pixels and ``(size, size)`` bool valid mask of the open
    rasterio dataset ``ds`` over ``box`` (``xmin, ymin, xmax, ymax`` metres in the local
    ``frame``). Outside the raster: invalid."""
    from rasterio.windows import from_bounds

    x0, y0, x1, y1 = box
    xs, ys = to_local([x0, x1, x1, x0], [y0, y0, y1, y1], frame, ds.crs)
    win = from_bounds(min(xs), min(ys), max(xs), max(ys), ds.transform)
    data = ds.read(window=win, out_shape=(ds.count, size, size), boundless=True, fill_value=0).astype(np.float32)
    valid = ds.dataset_mask(window=win, out_shape=(size, size), boundless=True) > 0
    return data, valid


def box_look(data: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """``(excess green, texture)`` of a patch (module docstring); NaN green for < 3 bands."""
    lum = data[:3].mean(0) if len(data) >= 3 else data[0]
    gy, gx = np.gradient(lum)
    tex = float(np.hypot(gx, gy)[valid].mean() / max(float(lum[valid].mean()), 1.0))
    if len(data) < 3:
        return float("nan"), tex
    r, g, b = data[0], data[1], data[2]
    eg = (2 * g - r - b) / np.maximum(r + g + b, 1e-6)
    return float(eg[valid].mean()), tex


def occluded(ds_have, ds_miss, frame, box_have, box_miss, *, size: int = PATCH_PX) -> bool:
    """Whether the object (``box_have`` on the date of ``ds_have``) is hidden under foliage on
    the other date (``box_miss``, the same ground in that date's frame): the rule of the module
    docstring. False when the pixels are not valid enough or have fewer than three bands."""
    a, va = read_patch(ds_have, frame, box_have, size=size)
    b, vb = read_patch(ds_miss, frame, box_miss, size=size)
    both = va & vb
    if both.mean() < 0.5:
        return False
    green_have, _ = box_look(a, both)
    green_miss, tex_miss = box_look(b, both)
    return bool(green_miss >= GREEN and green_miss - green_have >= GREENER and tex_miss >= TEXTURE)
