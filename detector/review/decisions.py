"""Review decisions: validation and the files they are saved as. Torch-free.

A decision is one JSON object:

``id`` (the detection's stable id, or ``drawn-...`` for a box the analyst drew),
``review_status`` (``accepted``, ``rejected``, ``relabelled``, ``drawn``), ``class`` (the
model's class; null for drawn boxes), ``reviewed_class`` (the analyst's class; null when
rejected), ``note``, ``reviewed_at`` (ISO 8601 UTC), ``score`` (the model's; null for drawn),
``box`` (``x1, y1, x2, y2`` scene pixels) and ``seconds`` (time spent on it, optional).

Files in the review folder (each written atomically, all three on every change):

- ``decisions.json``: ``{"review": <review.json>, "decisions": [...]}``, the record of truth
  (also what the page's Export button downloads when there is no server);
- ``decisions.geojson``: polygons in the **scene's CRS** (named by a legacy ``crs`` member, as
  the review issue asks; not RFC 7946's lon/lat), fields as above plus ``model``, ``scene``,
  ``pixel_box``;
- ``decisions.gpkg``: layer ``decisions``, the same fields, CRS the scene's, with its QGIS
  style in ``layer_styles``; ``decisions.qml`` is the sidecar of both.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from detector.outputs import atomic_write, atomic_write_text, box_polygons, _polygon_wkb
from detector.styles import review_qml, write_gpkg_style, write_qml

STATUSES = ("accepted", "rejected", "relabelled", "drawn")
FIELDS = ["det_id", "review_status", "class", "reviewed_class", "note", "reviewed_at", "model", "score",
          "seconds", "scene", "x1", "y1", "x2", "y2"]
GPKG_LAYER = "decisions"


def validate(d: dict, classes: list[str]) -> dict:
    """A clean copy of decision ``d``; ValueError naming the id and the field otherwise."""
    if not isinstance(d, dict):
        raise ValueError(f"decision: expected an object, got {type(d).__name__}")
    did = d.get("id")
    if not isinstance(did, str) or not did or len(did) > 64:
        raise ValueError(f"decision: 'id' must be a non-empty string, got {did!r}")
    st = d.get("review_status")
    if st not in STATUSES:
        raise ValueError(f"decision {did}: review_status must be one of {STATUSES}, got {st!r}")
    rc = d.get("reviewed_class")
    if st == "rejected":
        rc = None
    elif rc not in classes:
        raise ValueError(f"decision {did}: reviewed_class must be one of {classes}, got {rc!r}")
    box = d.get("box")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
            and box[2] > box[0] and box[3] > box[1]):
        raise ValueError(f"decision {did}: box must be [x1, y1, x2, y2] pixels with x2 > x1, y2 > y1, got {box!r}")
    score = d.get("score")
    sec = d.get("seconds")
    return {"id": did, "review_status": st, "class": d.get("class") if st != "drawn" else None,
            "reviewed_class": rc, "note": str(d.get("note") or "")[:2000],
            "reviewed_at": str(d.get("reviewed_at") or ""),
            "score": float(score) if isinstance(score, (int, float)) and math.isfinite(score) else None,
            "box": [float(v) for v in box],
            "seconds": float(sec) if isinstance(sec, (int, float)) and math.isfinite(sec) else None}


def _crs(review: dict):
    from rasterio.crs import CRS

    return CRS.from_wkt(review["crs_wkt"]) if review.get("crs_wkt") else None


def _transform(review: dict):
    from affine import Affine

    return Affine(*review["transform"][:6])


def _rings(review: dict, boxes: np.ndarray) -> list:
    if len(boxes) == 0:
        return []
    if review.get("crs_wkt"):
        return box_polygons(boxes, _transform(review))
    return [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]] for x1, y1, x2, y2 in boxes.tolist()]


def _props(review: dict, d: dict) -> dict:
    return {"det_id": d["id"], "review_status": d["review_status"], "class": d["class"],
            "reviewed_class": d["reviewed_class"], "note": d["note"], "reviewed_at": d["reviewed_at"],
            "model": review.get("model"), "score": d["score"], "seconds": d["seconds"],
            "scene": review.get("scene")}


def decisions_geojson(review: dict, decisions: list[dict]) -> dict:
    boxes = np.array([d["box"] for d in decisions], np.float64).reshape(-1, 4)
    feats = []
    for d, ring in zip(decisions, _rings(review, boxes)):
        feats.append({"type": "Feature", "id": d["id"],
                      "geometry": {"type": "Polygon", "coordinates": [ring]},
                      "properties": {**_props(review, d), "pixel_box": d["box"]}})
    doc = {"type": "FeatureCollection", "features": feats,
           "revet": {k: review.get(k) for k in ("scene", "detections", "model", "revet_version", "created")}}
    crs = _crs(review)
    if crs is not None:
        epsg = crs.to_epsg()
        doc["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}" if epsg
                                                     else crs.to_string()}}
    return doc


def write_gpkg(review: dict, decisions: list[dict], path: str | os.PathLike) -> Path:
    """Layer ``decisions`` in the scene CRS, styled (``layer_styles``), written atomically."""
    import pyogrio.raw

    boxes = np.array([d["box"] for d in decisions], np.float64).reshape(-1, 4)
    geometry = np.empty(len(decisions), dtype=object)
    geometry[:] = [_polygon_wkb(r) for r in _rings(review, boxes)]
    props = [_props(review, d) for d in decisions]
    data = []
    for f in FIELDS:
        if f in ("x1", "y1", "x2", "y2"):
            data.append(np.ascontiguousarray(boxes[:, "x1 y1 x2 y2".split().index(f)]))
        elif f in ("score", "seconds"):
            data.append(np.array([np.nan if p[f] is None else p[f] for p in props], np.float64))
        else:
            data.append(np.array(["" if p[f] is None else str(p[f]) for p in props], dtype=object))
    crs = _crs(review)
    meta = {k: str(review.get(k)) for k in ("scene", "detections", "model", "revet_version", "created")}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            pyogrio.raw.write(tmp, geometry, data, FIELDS, layer=GPKG_LAYER, driver="GPKG",
                              geometry_type="Polygon", crs=crs.to_wkt() if crs is not None else None,
                              layer_metadata=meta)
        write_gpkg_style(tmp, GPKG_LAYER, review_qml(), name="revet review")

    return atomic_write(path, write)


def save_decisions(review_dir: str | os.PathLike, review: dict, decisions: list[dict]) -> dict:
    """Write ``decisions.json``, ``.geojson``, ``.gpkg`` and ``.qml`` into ``review_dir``."""
    root = Path(review_dir)
    atomic_write_text(root / "decisions.json", json.dumps({"review": review, "decisions": decisions}))
    atomic_write_text(root / "decisions.geojson", json.dumps(decisions_geojson(review, decisions)))
    write_gpkg(review, decisions, root / "decisions.gpkg")
    if not (root / "decisions.qml").exists():
        write_qml(root / "decisions.geojson", review_qml())
    return counts(decisions)


def load_decisions(review_dir: str | os.PathLike) -> list[dict]:
    """The decisions saved in ``review_dir`` (``decisions.json``), or [] when none are."""
    p = Path(review_dir) / "decisions.json"
    if not p.exists():
        return []
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    if isinstance(data, list):
        return data
    if not isinstance(data, dict) or not isinstance(data.get("decisions"), list):
        raise ValueError(f"{p}: expected {{'review': ..., 'decisions': [...]}}")
    return data["decisions"]


def counts(decisions: list[dict]) -> dict:
    out: dict = {"reviewed": len(decisions), "by_status": {}, "by_class": {}}
    for d in decisions:
        out["by_status"][d["review_status"]] = out["by_status"].get(d["review_status"], 0) + 1
        if d["reviewed_class"]:
            out["by_class"][d["reviewed_class"]] = out["by_class"].get(d["reviewed_class"], 0) + 1
    return out
