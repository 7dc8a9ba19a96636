"""An image pyramid of a scene for the review page: JPEG tiles, bounded memory. Torch-free.

Layout: ``tiles/{z}/{y}_{x}.jpg``, ``tile`` pixels square (edge tiles smaller). Level
``z = levels - 1`` is the scene at full resolution; each lower level halves it, down to level
0 whose longer side is at most ``tile`` pixels. A level-``z`` pixel covers
``2 ** (levels - 1 - z)`` scene pixels.

Reading: each level is read in strips of one tile row with rasterio ``out_shape`` (GDAL uses
the file's overviews where they exist, else decimates), so memory is one strip of the level
(``tile x level width x bands``), whatever the scene's size.

Display: any band count and dtype. Three or more bands: the given bands (default 1, 2, 3) as
RGB; one or two: the first as grey. Each band is stretched linearly between its 2nd and 98th
percentile of valid pixels, measured once on a <= 1024 px overview, so every level and tile
uses the same stretch. No-data pixels are black.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from detector import display, raster


def display_bands(count: int, bands=None) -> list[int]:
    """1-based bands shown: ``bands`` (first three, or the first), else 1,2,3 or 1."""
    bands = list(bands) if bands else ([1, 2, 3] if count >= 3 else [1])
    bands = bands[:3] if len(bands) >= 3 else bands[:1]
    raster.check_bands("scene", count, bands)
    return bands


def stretch_limits(ds, bands, size: int = 1024, percentiles=(2, 98)) -> np.ndarray:
    """(C, 2) low, high display limits per band from an overview read of ``ds``."""
    s = min(1.0, size / max(ds.width, ds.height))
    h, w = max(1, round(ds.height * s)), max(1, round(ds.width * s))
    data = ds.read(bands, out_shape=(len(bands), h, w), resampling=Resampling.nearest).astype(np.float64)
    valid = ds.read_masks(bands[0], out_shape=(h, w), resampling=Resampling.nearest) > 0
    return display.stretch_limits(np.moveaxis(data, 0, -1), valid, percentiles)


def to_display(data: np.ndarray, valid: np.ndarray, lims: np.ndarray) -> np.ndarray:
    """(C, h, w) raw values -> (h, w, 3) uint8 stretched by ``lims`` (no data black)."""
    return display.to_rgb8(display.apply_stretch(np.moveaxis(data, 0, -1), valid, lims))


def n_levels(width: int, height: int, tile: int) -> int:
    return max(1, math.ceil(math.log2(max(width, height) / tile)) + 1) if max(width, height) > tile else 1


def write_pyramid(scene: str | os.PathLike, out_dir: str | os.PathLike, *, bands=None, tile: int = 512,
                  quality: int = 85, max_level_px: int | None = None) -> dict:
    """Write the pyramid of ``scene`` under ``out_dir/tiles`` (see the module docstring).

    ``max_level_px``: leave out full-resolution levels so the finest level's longer side is at
    most this many pixels (faster for a first look at a huge scene; None: full resolution).
    Returns ``{"tile", "levels", "width", "height", "bands", "stretch", "top_scale"}`` where
    ``top_scale`` is scene pixels per pixel of the finest level written.
    """
    from PIL import Image

    out = Path(out_dir) / "tiles"
    with raster.open_raster(scene) as ds:
        bands = display_bands(ds.count, bands)
        lims = stretch_limits(ds, bands)
        levels = n_levels(ds.width, ds.height, tile)
        skip = 0
        if max_level_px:
            while skip < levels - 1 and max(ds.width, ds.height) / 2 ** skip > max_level_px:
                skip += 1
        written = levels - skip
        for z in range(written):
            f = 2 ** (levels - 1 - z)  # scene px per level px
            lw, lh = max(1, math.ceil(ds.width / f)), max(1, math.ceil(ds.height / f))
            (out / str(z)).mkdir(parents=True, exist_ok=True)
            for ty in range(math.ceil(lh / tile)):
                rows = min(tile, lh - ty * tile)
                r0 = ty * tile * f
                win = Window(0, r0, ds.width, min(rows * f, ds.height - r0))
                data = ds.read(bands, window=win, out_shape=(len(bands), rows, lw),
                               resampling=Resampling.nearest)
                valid = ds.read_masks(bands[0], window=win, out_shape=(rows, lw),
                                      resampling=Resampling.nearest) > 0
                rgb = to_display(data, valid, lims)
                for tx in range(math.ceil(lw / tile)):
                    im = Image.fromarray(np.ascontiguousarray(rgb[:, tx * tile:(tx + 1) * tile]))
                    im.save(out / str(z) / f"{ty}_{tx}.jpg", format="JPEG", quality=quality)
    return {"tile": tile, "levels": written, "width": int(ds.width), "height": int(ds.height),
            "bands": bands, "stretch": lims.round(4).tolist(), "top_scale": 2 ** skip}
