"""Cut large georeferenced rasters with vector labels into a COCO tile dataset.

Output: ``out_dir/tiles/*.tif`` (one GeoTIFF per tile: the source's dtype, band count, nodata
value, colour interpretation and CRS, with the tile's own window transform) and
``out_dir/dataset.json`` (COCO, file names relative to ``out_dir``).

Tiling: tiles of ``tile_size`` pixels start every ``tile_size - overlap`` pixels; the last
row/column of tiles is shifted back to end at the raster edge, so every tile is full size
(a raster smaller than a tile gives one tile of the raster's size).

Rule for boxes cut by a tile edge: a box goes into a tile, clipped to it, when at least
``min_fraction`` (default 0.5) of the box's area lies inside that tile; otherwise it is left out
of that tile. A box that meets the rule in no tile (an object larger than the overlap, cut at a
tile corner) goes, clipped, into the one tile that holds the largest part of it, provided at
least ``min_fraction`` of it lies inside the raster; so every object inside the raster appears
in at least one tile. Features wholly outside the raster are ignored.

Tiles: a tile with no boxes is an empty tile; a seeded fraction ``keep_empty`` of them is kept
as negatives (the rest are not read at all). Tiles on blocks a sparse GeoTIFF never wrote are
skipped unread, and tiles whose pixels are all nodata (nodata value, internal mask or alpha
band) are skipped. A raster whose header claims more than ``max_megapixels`` is refused.

Memory: the labels are loaded once and assigned to tiles with array arithmetic over the regular
tile grid; pixels are read one tile window at a time (never the whole raster) with GDAL's block
cache capped (``cache_mb``), so peak memory does not grow with the raster's size.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from detector.labels import ImageRecord, LabelSet
from detector.labels.coco import write_coco
from detector.labels.vector import boxes_on_raster, class_index, overlap_error, read_vector
from detector.raster import MAX_MEGAPIXELS, check_size, open_raster, raster_info, read_window, sparse_empty

log = logging.getLogger(__name__)


def tile_starts(n: int, tile: int, overlap: int) -> np.ndarray:
    """Start offsets of tiles along an axis of ``n`` pixels (last tile ends at ``n``)."""
    if n <= tile:
        return np.array([0], np.int64)
    stride = tile - overlap
    starts = list(range(0, n - tile, stride)) + [n - tile]
    return np.asarray(starts, np.int64)


def assign_boxes(boxes: np.ndarray, width: int, height: int, tile: int, overlap: int,
                 min_fraction: float = 0.5):
    """Assign pixel boxes of one raster to its tile grid (see the module docstring's rule).

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2`` raster pixels (NaN rows are ignored).
    Returns:
        xs, ys: tile start offsets along x and y.
        pairs: dict ``(iy, ix) -> (box indices, (k, 4) boxes clipped, in tile pixels)``.
        dropped: indices of boxes inside the raster that appear in no tile (below the rule in
            every tile and less than ``min_fraction`` inside the raster).
    """
    xs, ys = tile_starts(width, tile, overlap), tile_starts(height, tile, overlap)
    tw, th = min(tile, width), min(tile, height)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ok = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    idx = np.flatnonzero(ok)
    b = boxes[idx]
    # Tiles i with xs[i] < x2 and xs[i] + tw > x1 (both sorted): one contiguous index range.
    lox = np.searchsorted(xs + tw, b[:, 0], "right")
    hix = np.searchsorted(xs, b[:, 2], "left")
    loy = np.searchsorted(ys + th, b[:, 1], "right")
    hiy = np.searchsorted(ys, b[:, 3], "left")
    nx, ny = np.maximum(hix - lox, 0), np.maximum(hiy - loy, 0)
    cnt = nx * ny
    bi = np.repeat(np.arange(len(b)), cnt)
    k = np.arange(len(bi)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    ix = lox[bi] + k % np.maximum(nx[bi], 1)
    iy = loy[bi] + k // np.maximum(nx[bi], 1)
    tx, ty = xs[ix].astype(np.float64), ys[iy].astype(np.float64)
    cb = np.stack([np.clip(b[bi, 0] - tx, 0, tw), np.clip(b[bi, 1] - ty, 0, th),
                   np.clip(b[bi, 2] - tx, 0, tw), np.clip(b[bi, 3] - ty, 0, th)], axis=1)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    frac = (cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1]) / area[bi]
    keep = frac >= min_fraction - 1e-9
    # Fallback: boxes kept nowhere go to their best tile if enough of them is in the raster.
    kept_any = np.zeros(len(b), bool)
    kept_any[bi[keep]] = True
    inr = np.clip(b, 0, [width, height, width, height])
    in_frac = (inr[:, 2] - inr[:, 0]).clip(0) * (inr[:, 3] - inr[:, 1]).clip(0) / area
    need = ~kept_any & (in_frac >= min_fraction - 1e-9)
    if need.any() and len(bi):
        order = np.lexsort((-frac, bi))  # by box, best fraction first
        first = order[np.r_[True, bi[order][1:] != bi[order][:-1]]]
        keep[first[need[bi[first]]]] = True
    kept_final = np.zeros(len(b), bool)
    kept_final[bi[keep]] = True
    dropped = idx[(in_frac > 0) & ~kept_final]
    sel = np.flatnonzero(keep)
    pairs: dict = {}
    if len(sel):
        tile_id = iy[sel] * len(xs) + ix[sel]
        order = sel[np.argsort(tile_id, kind="stable")]
        tid = iy[order] * len(xs) + ix[order]
        cuts = np.flatnonzero(np.diff(tid)) + 1
        for grp in np.split(order, cuts):
            pairs[(int(iy[grp[0]]), int(ix[grp[0]]))] = (idx[bi[grp]], cb[grp].astype(np.float32))
    return xs, ys, pairs, dropped


def _tile_profile(ds, window: Window) -> dict:
    w, h = int(window.width), int(window.height)
    profile = dict(driver="GTiff", width=w, height=h, count=ds.count, dtype=ds.dtypes[0],
                   crs=ds.crs, transform=ds.window_transform(window), nodata=ds.nodata,
                   compress="deflate")
    if w % 16 == 0 and h % 16 == 0:
        profile.update(tiled=True, blockxsize=min(256, w), blockysize=min(256, h))
    if ds.count == 3 and ds.dtypes[0] == "uint8" and \
            ds.colorinterp[:3] == (rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                                   rasterio.enums.ColorInterp.blue):
        profile["photometric"] = "RGB"
    return profile


def _write_tile(ds, path: Path, window: Window, image: np.ndarray, valid: np.ndarray) -> None:
    with rasterio.open(path, "w", **_tile_profile(ds, window)) as dst:
        dst.write(np.moveaxis(image, -1, 0))
        try:
            dst.colorinterp = ds.colorinterp
        except Exception:  # some interpretations cannot be stored for this layout; keep GDAL's
            pass
        flags = ds.mask_flag_enums[0]
        if rasterio.enums.MaskFlags.per_dataset in flags and \
                rasterio.enums.MaskFlags.alpha not in flags and ds.nodata is None:
            dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))


def _unique_stems(rasters: list[Path]) -> list[str]:
    stems, seen = [], {}
    for r in rasters:
        s = r.stem
        seen[s] = seen.get(s, 0) + 1
        stems.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return stems


def _check_chip_args(rasters: list[Path], tile_size: int, overlap: int, keep_empty: float,
                     min_fraction: float) -> None:
    if not rasters:
        raise ValueError("no rasters given to chip")
    if tile_size < 16:
        raise ValueError(f"tile_size must be at least 16 pixels, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size={tile_size}), got {overlap}")
    if not 0 <= keep_empty <= 1:
        raise ValueError(f"keep_empty must be a fraction in [0, 1], got {keep_empty}")
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")


def place_labels(vl, rasters: list[Path], tile_size: int, overlap: int,
                 max_megapixels: float | None) -> tuple[list[tuple], np.ndarray]:
    """The cheap first pass (headers only, no pixels): per raster ``(info, boxes, objects
    inside)`` with ``boxes`` the labels in its pixels (unclipped: the ``min_fraction`` rule
    measures the whole object), and which labels fall inside some raster. Raises before any
    tile is written for a raster too large or labels that overlap none of the rasters (wrong
    CRS or wrong images)."""
    per_raster, seen = [], np.zeros(len(vl), bool)
    for raster in rasters:
        with open_raster(raster) as ds:
            info = raster_info(ds)
        n_tiles = len(tile_starts(info.width, tile_size, overlap)) * len(tile_starts(info.height, tile_size, overlap))
        check_size(raster, info.width, info.height, max_megapixels, windows=n_tiles)
        placed = boxes_on_raster(vl, info.crs, info.transform, info.width, info.height, raster=raster)
        seen |= placed.inside
        per_raster.append((info, placed.boxes, int(placed.inside.sum())))
    if len(vl) and not seen.any():
        info = per_raster[0][0]
        raise ValueError(overlap_error(vl, rasters[0] if len(rasters) == 1 else
                                       [str(r) for r in rasters], info.crs, info.width, info.height))
    return per_raster, seen


def write_chip(ds, win: Window, bands: list[int], path: Path, records: list[ImageRecord], hit,
               labels: np.ndarray) -> ImageRecord | None:
    """Read ``win`` of ``ds`` and write it as the GeoTIFF tile ``path``, appending its record
    (image id = its place in ``records``); ``hit`` = (label indices, tile-pixel boxes) of the
    objects it holds (None: an empty tile), ``labels`` the class index of every label. Returns
    the record, or None (nothing written) when every pixel is nodata."""
    image, valid = read_window(ds, win, bands)
    if not valid.any():
        return None
    _write_tile(ds, path, win, image, valid)
    rec = ImageRecord(path, int(win.width), int(win.height), image_id=len(records) + 1)
    if hit is not None:
        rec.boxes, rec.labels = hit[1], labels[hit[0]]
    records.append(rec)
    return rec


def chip_raster(raster: Path, stem: str, info, pairs: dict, xs, ys, feat_labels: np.ndarray, out: Path,
                tile_size: int, keep_empty: float, rng: np.random.Generator,
                records: list[ImageRecord]) -> dict:
    """Write the tiles of one raster: every tile holding labels (``pairs[(iy, ix)]`` = (label
    indices, tile-pixel boxes)) and a ``keep_empty`` fraction of the others, none that is all
    nodata; appends their records. Returns the counts ``tiles, empty_tiles,
    nodata_tiles_skipped``."""
    n_tiles = n_empty = n_nodata = 0
    with open_raster(raster) as ds:
        bands = list(range(1, ds.count + 1))
        for iy, y in enumerate(ys.tolist()):
            for ix, x in enumerate(xs.tolist()):
                hit = pairs.get((iy, ix))
                if hit is None and not rng.random() < keep_empty:
                    continue
                win = Window(x, y, min(tile_size, info.width), min(tile_size, info.height))
                if sparse_empty(ds, win):  # blocks never written: no data, nothing to read
                    n_nodata += 1
                    continue
                path = out / "tiles" / f"{stem}_{y:06d}_{x:06d}.tif"
                if write_chip(ds, win, bands, path, records, hit, feat_labels) is None:
                    n_nodata += 1
                    continue
                n_tiles += 1
                n_empty += hit is None
    return {"tiles": n_tiles, "empty_tiles": n_empty, "nodata_tiles_skipped": n_nodata}


def chip(rasters, labels: str | os.PathLike, out_dir: str | os.PathLike, *, tile_size: int = 512,
         overlap: int = 64, keep_empty: float = 0.1, class_field: str = "class",
         classes: list[str] | None = None, min_fraction: float = 0.5, seed: int = 0,
         layer=None, cache_mb: int = 128, max_megapixels: float | None = MAX_MEGAPIXELS) -> dict:
    """Chip ``rasters`` (paths) with vector ``labels`` into ``out_dir`` (see module docstring).

    ``classes``: class list of the output (default: sorted names found in the labels; features of
    other classes raise). Raises ValueError when the labels overlap none of the rasters (wrong
    CRS), when a raster has no CRS or is larger than ``max_megapixels`` (megapixels; None: no
    limit; checked from every header before any tile is written), or for bad arguments. Tiles on
    blocks a sparse GeoTIFF never wrote are skipped unread (counted as nodata tiles). Returns a summary dict: tiles written,
    empty tiles kept, nodata tiles skipped, objects per class, objects outside every raster.
    """
    rasters = [Path(r) for r in ([rasters] if isinstance(rasters, (str, os.PathLike)) else rasters)]
    _check_chip_args(rasters, tile_size, overlap, keep_empty, min_fraction)
    out = Path(out_dir)
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    vl = read_vector(labels, class_field=class_field, layer=layer)
    classes, feat_labels = class_index(vl, classes)
    per_raster, seen = place_labels(vl, rasters, tile_size, overlap, max_megapixels)
    rng = np.random.default_rng(seed)
    records: list[ImageRecord] = []
    summary = {"out_dir": str(out), "rasters": [], "tiles": 0, "empty_tiles": 0,
               "nodata_tiles_skipped": 0, "objects_dropped_at_edges": 0}
    with rasterio.Env(GDAL_CACHEMAX=int(cache_mb)):
        for raster, stem, (info, boxes, n_inside) in zip(rasters, _unique_stems(rasters), per_raster):
            xs, ys, pairs, dropped = assign_boxes(boxes, info.width, info.height, tile_size,
                                                  overlap, min_fraction)
            summary["objects_dropped_at_edges"] += int(len(dropped))
            counts = chip_raster(raster, stem, info, pairs, xs, ys, feat_labels, out, tile_size, keep_empty,
                                 rng, records)
            summary["rasters"].append({"path": str(raster), "width": info.width, "height": info.height,
                                       "objects": n_inside, **counts})
            for k, v in counts.items():
                summary[k] += v
            log.info("%s: %d tiles (%d empty), %d nodata tiles skipped", raster, counts["tiles"],
                     counts["empty_tiles"], counts["nodata_tiles_skipped"])
    ls = LabelSet(classes, records, Path(labels))
    summary["dataset"] = str(write_coco(ls, out / "dataset.json"))
    summary["classes"] = classes
    summary["objects"] = ls.class_counts()
    summary["labels_outside_rasters"] = int((~seen).sum())
    return summary
