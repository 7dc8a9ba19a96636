"""Detections to review, in scene pixels, each with a stable id. Torch-free.

Input: a GeoJSON FeatureCollection as ``revet predict`` writes it (RFC 7946, EPSG:4326, or the
CRS named by a legacy ``crs`` member; properties ``class``, ``score``, optional ``pixel_box``,
``id``/``det_id``, ``model``) or a GeoPackage layer (any CRS; fields ``class``, ``score``,
optional ``x1 y1 x2 y2``). A feature's box in scene pixels is its ``pixel_box`` (or
``x1..y2``) when present, else the pixel bounds of its geometry's vertices reprojected into
the scene's CRS (``rasterio.warp.transform``) and mapped through the inverse transform.

Stable id: the feature's own (``det_id``, ``detection_id`` or ``id``: ``revet predict`` writes
``id``), else :func:`detector.outputs.detection_id` (``d`` + 12 hex digits of SHA-1 over ``scene
name | class | box rounded to 0.1 px``, what ``revet predict`` writes); so scoring the same scene
with the same model gives the same ids, and a review can be matched to a later run.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.warp import transform as warp_transform

from detector.labels.vector import wkb_vertices
from detector.outputs import detection_id, geojson_scene_metadata, read_scene_metadata, scene_model, unique_ids


@dataclass
class Candidates:
    """Detections over one scene, sorted by score, highest first.

    ids: (N,) str; classes: (N,) str; scores: (N,) float64 (NaN when the input had none);
    boxes: (N, 4) float64 ``x1, y1, x2, y2`` scene pixels; model: the model id from the input
    (``model`` property / field, or the detections file's name).
    """

    ids: list[str]
    classes: list[str]
    scores: np.ndarray
    boxes: np.ndarray
    model: str

    def __len__(self) -> int:
        return len(self.ids)


def _geojson_crs(data: dict):
    name = ((data.get("crs") or {}).get("properties") or {}).get("name")
    return name or "EPSG:4326"


def _rings_xy(geom: dict | None) -> np.ndarray:
    if not geom:
        return np.zeros((0, 2))
    coords = geom.get("coordinates") or []
    if geom.get("type") == "Polygon":
        coords = [coords]
    elif geom.get("type") != "MultiPolygon":
        return np.zeros((0, 2))
    pts = [p[:2] for poly in coords for ring in poly for p in ring]
    return np.asarray(pts, np.float64).reshape(-1, 2)


def _wkb_xy(b: bytes) -> np.ndarray:
    """All vertices of a (Multi)Polygon WKB / GeoPackage blob as (M, 2)."""
    kind, xy = wkb_vertices(b)
    if kind not in ("Polygon", "MultiPolygon"):
        raise ValueError(f"unsupported geometry type {kind} (expected Polygon or MultiPolygon)")
    return xy


def _read_features(path: Path) -> tuple[list[dict], list[np.ndarray], object, list[dict]]:
    """(properties per feature, vertices per feature, CRS of the vertices, the file's scene
    records: :func:`detector.outputs.read_scene_metadata`)."""
    if path.suffix.lower() in (".geojson", ".json"):
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("features"), list):
            raise ValueError(f"{path}: expected a GeoJSON FeatureCollection of detections")
        feats = data["features"]
        props = []
        for f in feats:
            p = dict(f.get("properties") or {})
            if "id" in f and "id" not in p:
                p["id"] = f["id"]
            props.append(p)
        return (props, [_rings_xy(f.get("geometry")) for f in feats], _geojson_crs(data),
                geojson_scene_metadata(data))
    import pyogrio.raw

    meta, _fids, geoms, fields = pyogrio.raw.read(path)[:4]
    names = list(meta["fields"])
    props = [{n: fields[j][i] for j, n in enumerate(names)} for i in range(len(geoms))]
    return props, [_wkb_xy(g) for g in geoms], meta.get("crs"), read_scene_metadata(path)


def read_candidates(path: str | os.PathLike, scene_crs, scene_transform, scene_name: str) -> Candidates:
    """Read detections (see the module docstring) as :class:`Candidates` over one scene.

    Raises ValueError naming the file and feature when a feature has no class or no box.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: detections file does not exist")
    props, verts, src_crs, scene_records = _read_features(path)
    n = len(props)
    boxes = np.full((n, 4), np.nan)
    need = []
    for i, p in enumerate(props):
        pb = p.get("pixel_box")
        if pb is None and all(k in p for k in ("x1", "y1", "x2", "y2")):
            pb = [p["x1"], p["y1"], p["x2"], p["y2"]]
        if pb is not None and len(pb) == 4 and all(v is not None for v in pb):
            boxes[i] = [float(v) for v in pb]
        else:
            need.append(i)
    if need:
        if scene_crs is None:
            raise ValueError(f"{path}: features without a pixel box and a scene without a CRS")
        inv = ~scene_transform
        for i in need:
            xy = verts[i]
            if not len(xy):
                raise ValueError(f"{path}: feature {i} has neither a polygon nor a pixel box")
            if src_crs is not None and str(src_crs) != str(scene_crs):
                xs, ys = warp_transform(src_crs, scene_crs, xy[:, 0].tolist(), xy[:, 1].tolist())
            else:
                xs, ys = xy[:, 0], xy[:, 1]
            cols = inv.a * np.asarray(xs) + inv.b * np.asarray(ys) + inv.c
            rows = inv.d * np.asarray(xs) + inv.e * np.asarray(ys) + inv.f
            boxes[i] = [cols.min(), rows.min(), cols.max(), rows.max()]
    classes, ids, scores = [], [], np.full(n, np.nan)
    for i, p in enumerate(props):
        c = p.get("class")
        if c is None or c == "":
            raise ValueError(f"{path}: feature {i} has no 'class' property")
        classes.append(str(c))
        if p.get("score") is not None:
            scores[i] = float(p["score"])
        own = p.get("det_id") or p.get("detection_id") or p.get("id")
        ids.append(str(own) if own else detection_id(scene_name, classes[-1], boxes[i]))
    ids = unique_ids(ids)  # duplicate boxes of one class: keep ids unique, still stable
    model = (scene_model(scene_records, scene_name) or next((str(p["model"]) for p in props if p.get("model")), None)
             or path.name)
    order = np.argsort(-np.nan_to_num(scores, nan=-1.0), kind="stable")
    return Candidates([ids[i] for i in order], [classes[i] for i in order], scores[order],
                      boxes[order], model)
