"""Quicklook PNGs: a downsampled view of a scene with its detections drawn. Torch-free.

The scene is read once at reduced resolution (rasterio ``out_shape``, which uses the file's
overviews when it has them), in the model's band order (first three bands as RGB, or the first
band as grey), stretched for display by :mod:`detector.display` (per band, 2nd to 98th
percentile of valid pixels).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detector import raster
from detector.display import CLASS_COLOURS, display_rgb
from detector.outputs import atomic_write
from detector.runner import Detections

COLOURS = CLASS_COLOURS  # the one palette (detector.display); this name for older callers


def read_overview(path: str | os.PathLike, bands, max_size: int = 1024) -> tuple[np.ndarray, float]:
    """Read ``path`` scaled so its longer side is at most ``max_size``.

    Returns an ``(h, w, 3)`` uint8 stretched image and the scale (overview px per scene px).
    """
    from rasterio.enums import Resampling

    bands = list(bands)[:3] if len(bands) >= 3 else list(bands)[:1]
    with raster.open_raster(path) as ds:
        raster.check_bands(path, ds.count, bands)
        scale = min(1.0, max_size / max(ds.width, ds.height))
        h, w = max(1, round(ds.height * scale)), max(1, round(ds.width * scale))
        data = ds.read(bands, out_shape=(len(bands), h, w), resampling=Resampling.nearest).astype(np.float32)
        valid = ds.read_masks(bands[0], out_shape=(h, w), resampling=Resampling.nearest) > 0
    return display_rgb(np.moveaxis(data, 0, -1), valid), scale


def render_quicklook(det: Detections, bands, *, max_size: int = 1024, labels: bool = True):
    """A Pillow RGB image of ``det.path`` with ``det``'s boxes drawn in class colours."""
    from PIL import Image, ImageDraw

    image, scale = read_overview(det.path, bands, max_size)
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    # Lowest scores first so the strongest boxes are drawn on top.
    for k in np.argsort(det.scores, kind="stable"):
        x1, y1, x2, y2 = (float(v) * scale for v in det.boxes[k])
        lab = int(det.labels[k])
        colour = COLOURS[lab % len(COLOURS)]
        draw.rectangle([x1, y1, max(x2 - 1, x1), max(y2 - 1, y1)], outline=colour, width=2)
        if labels:
            draw.text((x1 + 2, max(y1 - 11, 0)), f"{det.classes[lab]} {float(det.scores[k]):.2f}", fill=colour)
    return im


def write_quicklook(det: Detections, path: str | os.PathLike, bands, *, max_size: int = 1024) -> Path:
    """Write the quicklook of ``det`` (needs ``det.path``) as a PNG, atomically."""
    if det.path is None:
        raise ValueError("quicklook: detections carry no source path to read the image from")
    im = render_quicklook(det, bands, max_size=max_size)
    return atomic_write(path, lambda tmp: im.save(tmp, format="PNG", compress_level=3))
