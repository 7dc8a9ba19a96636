"""Writers for detections. Torch-free; pixel -> map happens here, last, in numpy.

GeoJSON follows RFC 7946: coordinates are EPSG:4326 longitude, latitude. A detection in a
plain image (no CRS) keeps pixel coordinates and the file says so in a ``crs_note`` member.
Writes are atomic (temporary file, then rename), so a killed job never leaves half a file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from rasterio.warp import transform_geom

from detector.runner import Detections


def box_polygons(boxes: np.ndarray, transform) -> list[list[list[float]]]:
    """Pixel boxes (N, 4) -> closed rings in the transform's map coordinates (N rings of 5)."""
    rings = []
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64):
        corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
        rings.append([list(transform * c) for c in corners])
    return rings


def detection_features(det: Detections) -> list[dict]:
    """GeoJSON features (EPSG:4326 when the source has a CRS, pixels otherwise)."""
    feats = []
    georef = det.crs is not None and det.transform is not None
    rings = box_polygons(det.boxes, det.transform) if georef else [
        [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]] for x1, y1, x2, y2 in det.boxes.tolist()]
    for k, ring in enumerate(rings):
        geom = {"type": "Polygon", "coordinates": [ring]}
        if georef:
            geom = transform_geom(det.crs, "EPSG:4326", geom, precision=9)
        x1, y1, x2, y2 = (round(float(v), 2) for v in det.boxes[k])
        feats.append({
            "type": "Feature",
            "geometry": geom,
            "properties": {
                "class": det.classes[int(det.labels[k])],
                "score": round(float(det.scores[k]), 5),
                "source": str(det.path) if det.path else None,
                "pixel_box": [x1, y1, x2, y2],
            },
        })
    return feats


def write_geojson(dets: list[Detections], path: str | os.PathLike) -> Path:
    """One FeatureCollection holding the detections of all ``dets``."""
    path = Path(path)
    feats = [f for d in dets for f in detection_features(d)]
    doc: dict = {"type": "FeatureCollection", "features": feats}
    if any(d.crs is None for d in dets if len(d)):
        doc["crs_note"] = "some sources had no CRS: their geometries are in pixel coordinates"
    atomic_write_text(path, json.dumps(doc))
    return path


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
