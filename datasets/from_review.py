"""Review decisions -> a COCO tile dataset, chipped like ``revet data chip``.

Input: a review folder (``revet review``): ``review.json`` (scene, classes), ``candidates.json``
(every candidate shown) and ``decisions.json`` (:mod:`detector.review.decisions`; or a file the
page exported, given as ``decisions``).

Labels: ``accepted`` boxes keep the model's class, ``relabelled`` and ``drawn`` boxes take the
analyst's ``reviewed_class``. ``rejected`` detections are hard negatives: a tile holding (by
the chipping rule, ``min_fraction`` of) a rejected box and no label is written with zero boxes,
so training sees the look-alike the model fired on as background.

Tiles: the regular grid of :func:`detector.datasets.chip.tile_starts` (tile size, overlap, the
last row and column shifted back to the edge). A tile is written when it holds a label or a
rejected box; boxes cut by tile edges follow :func:`~detector.datasets.chip.assign_boxes`.
With ``skip_unreviewed`` (the default), tiles touching a candidate nobody reviewed are left
out: it may be a real object, and an unlabelled object would teach the model to miss it.
Tiles wholly no-data are skipped. Output: ``out/tiles/*.tif``, ``out/dataset.json`` and
``out/from_review.json`` (this summary, with the review's provenance).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from detector.datasets.chip import assign_boxes, write_chip
from detector.labels import ImageRecord, LabelSet
from detector.labels.coco import write_coco
from detector.raster import open_raster, raster_info

log = logging.getLogger(__name__)
POSITIVE = ("accepted", "relabelled", "drawn")


def _load_json(path: Path, what: str):
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found (is this a folder written by `revet review`?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def _boxes(items: list[dict]) -> np.ndarray:
    return np.array([d["box"] for d in items], np.float64).reshape(-1, 4)


def from_review(review_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                decisions: str | os.PathLike | None = None, scene: str | os.PathLike | None = None,
                tile_size: int = 512, overlap: int = 64, min_fraction: float = 0.5,
                skip_unreviewed: bool = True) -> dict:
    """Write the training tiles of one review (see the module docstring); returns a summary."""
    root, out = Path(review_dir), Path(out_dir)
    review = _load_json(root / "review.json", "review.json")
    dec_path = Path(decisions) if decisions else root / "decisions.json"
    doc = _load_json(dec_path, "decisions file")
    items = doc["decisions"] if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ValueError(f"{dec_path}: expected a list of decisions under 'decisions'")
    classes = list(review["classes"])
    for i, d in enumerate(items):
        st = d.get("review_status")
        if st not in POSITIVE + ("rejected",):
            raise ValueError(f"{dec_path}: decision {i} ({d.get('id')}): unknown review_status {st!r}")
        if st in POSITIVE and d.get("reviewed_class") not in classes:
            raise ValueError(f"{dec_path}: decision {i} ({d.get('id')}): reviewed_class "
                             f"{d.get('reviewed_class')!r} is not one of {classes}")
    pos = [d for d in items if d["review_status"] in POSITIVE]
    neg = [d for d in items if d["review_status"] == "rejected"]
    decided = {d.get("id") for d in items}
    cands = (_load_json(root / "candidates.json", "candidates.json")["candidates"]
             if (root / "candidates.json").exists() else [])
    unrev = [c for c in cands if c["id"] not in decided]

    scene = Path(scene or review["scene"])
    with open_raster(scene) as ds:
        info = raster_info(ds)
    if (info.width, info.height) != (review["width"], review["height"]):
        raise ValueError(f"{scene}: {info.width}x{info.height} pixels, but the review was of a "
                         f"{review['width']}x{review['height']} scene ({review['scene']})")
    W, H = info.width, info.height
    xs, ys, pos_pairs, dropped = assign_boxes(_boxes(pos), W, H, tile_size, overlap, min_fraction)
    _, _, neg_pairs, _ = assign_boxes(_boxes(neg), W, H, tile_size, overlap, min_fraction)
    _, _, unrev_pairs, _ = assign_boxes(_boxes(unrev), W, H, tile_size, overlap, 1e-6)
    labels = np.array([classes.index(d["reviewed_class"]) for d in pos], np.int64)
    keys = sorted(set(pos_pairs) | set(neg_pairs))
    skipped = [k for k in keys if k in unrev_pairs] if skip_unreviewed else []
    keys = [k for k in keys if k not in set(skipped)]

    (out / "tiles").mkdir(parents=True, exist_ok=True)
    records: list[ImageRecord] = []
    n_neg = n_nodata = 0
    with rasterio.Env(GDAL_CACHEMAX=128), open_raster(scene) as ds:
        bands = list(range(1, ds.count + 1))
        for iy, ix in keys:
            x, y = int(xs[ix]), int(ys[iy])
            win = Window(x, y, min(tile_size, W), min(tile_size, H))
            path = out / "tiles" / f"{scene.stem}_{y:06d}_{x:06d}.tif"
            hit = pos_pairs.get((iy, ix))
            if write_chip(ds, win, bands, path, records, hit, labels) is None:
                n_nodata += 1
                continue
            n_neg += hit is None
    ls = LabelSet(classes, records, dec_path)
    summary = {"out_dir": str(out), "dataset": str(write_coco(ls, out / "dataset.json")),
               "scene": str(scene), "classes": classes, "tiles": len(records),
               "positive_tiles": len(records) - n_neg, "hard_negative_tiles": n_neg,
               "objects": ls.class_counts(), "decisions": {s: sum(d["review_status"] == s for d in items)
                                                          for s in POSITIVE + ("rejected",)},
               "unreviewed_candidates": len(unrev), "tiles_skipped_unreviewed": len(skipped),
               "nodata_tiles_skipped": n_nodata, "labels_dropped_at_edges": int(len(dropped)),
               "review": {k: review.get(k) for k in ("scene", "detections", "model", "revet_version", "created")}}
    (out / "from_review.json").write_text(json.dumps(summary, indent=2))
    log.info("%s: %d tiles (%d hard negatives) from %d decisions", out, len(records), n_neg, len(items))
    return summary
