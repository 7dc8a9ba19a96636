"""Objects of one date (detections or labels) read from vector files, measured in metres.

Torch-free; needs numpy, rasterio and pyogrio only. Used by :mod:`detector.sites` and
:mod:`detector.changes`.

Input: GeoJSON (RFC 7946 lon/lat, or a legacy ``crs`` member naming another CRS), GeoPackage,
shapefile or anything else GDAL reads, with Polygon, MultiPolygon or Point geometries and a
``class`` attribute (``score``, ``id`` and ``source`` are optional). This is what
``revet predict`` writes (:mod:`detector.outputs`) and what ``revet synth`` writes for labels.

Coordinates: every analysis works in a *local frame*: the UTM zone (WGS 84, EPSG:326zz north /
327zz south) of the centroid of all inputs read together, so distances and areas are in metres
whatever the input CRS. An object is kept as the axis-aligned box ``xmin, ymin, xmax, ymax``
(metres, in the local frame) of its geometry's vertices; its centre is the centre of that box.
A point gives a zero-size box.
"""
from __future__ import annotations

import json
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from detector.labels.vector import wkb_vertices

WGS84 = CRS.from_epsg(4326)


@dataclass
class Objects:
    """Objects of one date in a local metric frame.

    boxes: ``(N, 4)`` float64 ``xmin, ymin, xmax, ymax`` metres in ``crs`` (x east, y north).
    classes: ``(N,)`` object array of class names. scores: ``(N,)`` float64, NaN where the file
    gives none. ids: ``(N,)`` object array (the feature ``id``, an ``id`` property, or the feature
    index). sources: ``(N,)`` object array (the ``source`` property or None).
    crs: the local frame (a UTM CRS). path: the file read. src_crs: the file's own CRS.
    thresholds: ``(N,)`` float64, the model's operating (calibrated) threshold of each object's
    class when the file records one (the ``threshold`` property of ``revet predict``), else NaN.
    """

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    ids: np.ndarray
    sources: np.ndarray
    crs: CRS
    path: str = ""
    src_crs: CRS | None = None
    extra: dict = field(default_factory=dict)
    thresholds: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.thresholds is None:
            self.thresholds = np.full(len(self.classes), np.nan)

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def centres(self) -> np.ndarray:
        """``(N, 2)`` box centres x, y in metres (local frame)."""
        b = self.boxes
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)

    def subset(self, keep) -> "Objects":
        k = np.asarray(keep)
        return Objects(self.boxes[k], self.classes[k], self.scores[k], self.ids[k], self.sources[k],
                       self.crs, self.path, self.src_crs, dict(self.extra), self.thresholds[k])

    def shifted(self, dx: float, dy: float) -> "Objects":
        """A copy moved by ``(dx, dy)`` metres."""
        out = self.subset(np.arange(len(self)))
        out.boxes = self.boxes + np.array([dx, dy, dx, dy])
        return out


@dataclass
class _Raw:
    """Vertices of every feature in the file's CRS: ``x, y`` flat, ``start[i]`` the first vertex
    of feature ``i`` (``len(start) == N``), plus attributes."""

    x: np.ndarray
    y: np.ndarray
    start: np.ndarray
    props: dict
    fids: list
    crs: CRS
    path: str


# ------------------------------------------------------------------ local frame
def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS 84 UTM zone holding ``lon, lat`` (degrees): EPSG:326zz (north) or 327zz (south)."""
    if not (np.isfinite(lon) and np.isfinite(lat)) or abs(lat) > 90:
        raise ValueError(f"cannot choose a UTM zone for lon={lon}, lat={lat}")
    zone = int(np.floor((((lon + 180.0) % 360.0) / 6.0))) + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + min(zone, 60))


def local_crs(raws: list[_Raw]) -> CRS:
    """UTM zone of the centroid (lon/lat mean of all box centres) of the given inputs."""
    lon, lat = [], []
    for r in raws:
        if len(r.start) == 0:
            continue
        # subsample: the zone only needs the centroid
        step = max(1, len(r.x) // 5000)
        lo, la = warp_transform(r.crs, WGS84, r.x[::step].tolist(), r.y[::step].tolist())
        lon.append(np.asarray(lo))
        lat.append(np.asarray(la))
    if not lon:
        return utm_crs(0.0, 0.0)
    lo, la = np.concatenate(lon), np.concatenate(lat)
    # a mean of longitudes across the antimeridian would land on the wrong side of the globe
    lo = np.where(lo - lo[0] > 180, lo - 360, np.where(lo - lo[0] < -180, lo + 360, lo))
    return utm_crs(float(((lo.mean() + 180) % 360) - 180), float(la.mean()))


def to_local(x, y, src: CRS, dst: CRS) -> tuple[np.ndarray, np.ndarray]:
    if src == dst or len(x) == 0:
        return np.asarray(x, np.float64), np.asarray(y, np.float64)
    xx, yy = warp_transform(src, dst, np.asarray(x, np.float64).tolist(), np.asarray(y, np.float64).tolist())
    return np.asarray(xx, np.float64), np.asarray(yy, np.float64)


# ------------------------------------------------------------------ reading
def _geojson_coords(geom, path, i) -> list:
    if geom is None:
        raise ValueError(f"{path}: feature {i} has no geometry; expected Point or Polygon")
    t, c = geom.get("type"), geom.get("coordinates")
    if t == "Point":
        return [c[:2]]
    if t in ("Polygon", "MultiPoint", "LineString"):
        pts = c[0] if t == "Polygon" else c
        return [p[:2] for p in pts]
    if t == "MultiPolygon":
        return [p[:2] for poly in c for p in poly[0]]
    raise ValueError(f"{path}: feature {i} has geometry type {t!r}; expected Point, Polygon or MultiPolygon")


def _read_geojson(path: Path) -> _Raw:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected a GeoJSON FeatureCollection") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise ValueError(f"{path}: expected a GeoJSON FeatureCollection")
    if "crs_note" in doc:
        raise ValueError(f"{path}: {doc['crs_note']}; distances in metres need georeferenced detections")
    crs = WGS84
    name = ((doc.get("crs") or {}).get("properties") or {}).get("name")
    if name:
        crs = CRS.from_user_input(name.replace("urn:ogc:def:crs:OGC:1.3:CRS84", "EPSG:4326"))
    xs, ys, start, props, fids = [], [], [], [], []
    for i, f in enumerate(doc.get("features") or []):
        pts = _geojson_coords(f.get("geometry"), path, i)
        start.append(len(xs))
        xs += [p[0] for p in pts]
        ys += [p[1] for p in pts]
        props.append(f.get("properties") or {})
        fids.append(f.get("id", i))
    keys = {k for p in props for k in p}
    cols = {k: [p.get(k) for p in props] for k in keys}
    return _Raw(np.asarray(xs, np.float64), np.asarray(ys, np.float64), np.asarray(start, np.int64),
                cols, fids, crs, str(path))


def _read_ogr(path: Path, layer: str | None) -> _Raw:
    import pyogrio.raw

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            meta, fids, geoms, data = pyogrio.raw.read(path, layer=layer, return_fids=True)[:4]
    except Exception as e:  # pyogrio raises its own DataSourceError / DataLayerError
        raise ValueError(f"{path}: cannot read as a vector file ({e})") from None
    if not meta.get("crs"):
        raise ValueError(f"{path}: the layer has no CRS; distances in metres need georeferenced objects")
    xs, ys, start = [], [], []
    for i, g in enumerate(geoms):
        if g is None:
            raise ValueError(f"{path}: feature {i} has no geometry; expected Point or Polygon")
        pts = wkb_vertices(g)[1]
        start.append(len(xs))
        xs += [p[0] for p in pts]
        ys += [p[1] for p in pts]
    cols = {name: list(col) for name, col in zip(meta["fields"], data)}
    return _Raw(np.asarray(xs, np.float64), np.asarray(ys, np.float64), np.asarray(start, np.int64),
                cols, [int(f) for f in fids], CRS.from_user_input(meta["crs"]), str(path))


def read_raw(path: str | os.PathLike, layer: str | None = None) -> _Raw:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected GeoJSON or GeoPackage objects)")
    if path.suffix.lower() in (".geojson", ".json"):
        return _read_geojson(path)
    return _read_ogr(path, layer)


def _objects(raw: _Raw, crs: CRS, class_field: str, score_field: str) -> Objects:
    n = len(raw.start)
    if class_field not in raw.props and n:
        raise ValueError(f"{raw.path}: no {class_field!r} attribute; expected one class name per feature "
                         f"(attributes found: {sorted(raw.props)})")
    classes = np.array([str(c) if c is not None else "" for c in raw.props.get(class_field, [])], dtype=object)
    if n and (classes == "").any():
        i = int(np.nonzero(classes == "")[0][0])
        raise ValueError(f"{raw.path}: feature {i} has no {class_field!r}; expected a class name")
    sc = raw.props.get(score_field)
    scores = np.full(n, np.nan) if sc is None else np.array([np.nan if s is None else float(s) for s in sc])
    th = raw.props.get("threshold")
    thresholds = np.full(n, np.nan) if th is None else np.array(
        [np.nan if t is None else float(t) for t in th], np.float64)
    ids = raw.props.get("id") or raw.fids
    ids = np.array([i if i is not None else k for k, i in enumerate(ids)], dtype=object)
    src = np.array(raw.props.get("source") or [None] * n, dtype=object)
    x, y = to_local(raw.x, raw.y, raw.crs, crs)
    if n:
        boxes = np.stack([np.minimum.reduceat(x, raw.start), np.minimum.reduceat(y, raw.start),
                          np.maximum.reduceat(x, raw.start), np.maximum.reduceat(y, raw.start)], 1)
    else:
        boxes = np.zeros((0, 4))
    if not np.isfinite(boxes).all():
        raise ValueError(f"{raw.path}: some coordinates could not be transformed from {raw.crs} to {crs}")
    return Objects(boxes, classes, scores, ids, src, crs, raw.path, raw.crs, thresholds=thresholds)


def read_objects(paths, *, crs: CRS | str | None = None, class_field: str = "class",
                 score_field: str = "score", layer: str | None = None) -> list[Objects]:
    """Read one or more vector files into one shared local frame (metres).

    ``crs``: the frame; by default the UTM zone of the centroid of all files together, so two
    dates read in one call are directly comparable. Returns one :class:`Objects` per path.
    """
    single = isinstance(paths, (str, os.PathLike))
    raws = [read_raw(p, layer) for p in ([paths] if single else paths)]
    frame = CRS.from_user_input(crs) if crs is not None else local_crs(raws)
    if not frame.is_projected:
        raise ValueError(f"the analysis frame must be a projected CRS in metres, got {frame}")
    return [_objects(r, frame, class_field, score_field) for r in raws]


def objects_from_arrays(boxes, classes, *, crs: CRS | str, scores=None, ids=None, sources=None,
                        path: str = "") -> Objects:
    """Objects from in-memory arrays: ``boxes`` ``(N, 4)`` metres in the projected ``crs``
    (or ``(N, 2)`` points)."""
    b = np.asarray(boxes, np.float64)
    if b.ndim == 2 and b.shape[1] == 2:
        b = np.concatenate([b, b], 1)
    b = b.reshape(-1, 4)
    n = len(b)
    return Objects(b, np.asarray(list(classes), dtype=object),
                   np.full(n, np.nan) if scores is None else np.asarray(scores, np.float64),
                   np.asarray(list(range(n)) if ids is None else list(ids), dtype=object),
                   np.asarray([None] * n if sources is None else list(sources), dtype=object),
                   CRS.from_user_input(crs), path, CRS.from_user_input(crs))


# ------------------------------------------------------------------ writing
def box_ring(box) -> np.ndarray:
    """Closed ring ``(5, 2)`` counter-clockwise (x east, y north) of ``xmin, ymin, xmax, ymax``."""
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], np.float64)


def _jsonable(v):
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else round(float(v), 6)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def write_features(path: str | os.PathLike, geoms: list, props: list[dict], crs: CRS, *,
                   layer: str = "features") -> Path:
    """Write features atomically: GeoJSON (``.geojson``/``.json``, EPSG:4326 lon/lat, RFC 7946)
    or GeoPackage (anything else; layer ``layer`` in ``crs``).

    geoms: per feature, a closed ring ``(K, 2)`` (Polygon) or a point ``(2,)``, in metres in
    ``crs``. props: per feature, a flat dict (lists and dicts become JSON text in a GeoPackage).
    """
    from detector.outputs import atomic_write, atomic_write_text

    path = Path(path)
    if path.suffix.lower() in (".geojson", ".json"):
        # one transform call for every vertex (a call per feature dominates large files)
        arrs = [np.asarray(g, np.float64).reshape(-1, 2) for g in geoms]
        sizes = [len(a) for a in arrs]
        allxy = np.concatenate(arrs) if arrs else np.zeros((0, 2))
        lo, la = warp_transform(crs, WGS84, allxy[:, 0].tolist(), allxy[:, 1].tolist()) if len(allxy) else ([], [])
        ll = np.round(np.stack([np.asarray(lo), np.asarray(la)], 1), 9) if len(allxy) else allxy
        feats, k = [], 0
        for g, p, n in zip(geoms, props, sizes):
            ring = ll[k:k + n]
            k += n
            if np.asarray(g).ndim == 1:
                geom = {"type": "Point", "coordinates": ring[0].tolist()}
            else:
                x, y = ring[:, 0], ring[:, 1]
                if (x[:-1] * y[1:] - x[1:] * y[:-1]).sum() < 0:  # RFC 7946: counter-clockwise
                    ring = ring[::-1]
                geom = {"type": "Polygon", "coordinates": [ring.tolist()]}
            feats.append({"type": "Feature", "geometry": geom, "properties": _jsonable(p)})
        return atomic_write_text(path, json.dumps({"type": "FeatureCollection", "features": feats}))

    import pyogrio.raw

    from detector.outputs import _polygon_wkb

    keys = list(dict.fromkeys(k for p in props for k in p))
    cols = []
    for k in keys:
        vals = [p.get(k) for p in props]
        if all(isinstance(v, (int, float, np.number)) or v is None for v in vals) and \
                any(v is not None for v in vals) and not all(isinstance(v, (bool, np.bool_)) for v in vals if v is not None):
            cols.append(np.array([np.nan if v is None else float(v) for v in vals]))
        else:
            cols.append(np.array([None if v is None else (json.dumps(_jsonable(v)) if isinstance(v, (list, dict))
                                                          else str(v)) for v in vals], dtype=object))
    wkb = np.empty(len(geoms), dtype=object)
    kinds = set()
    for i, g in enumerate(geoms):
        g = np.asarray(g, np.float64)
        if g.ndim == 1:
            wkb[i] = struct.pack("<BIdd", 1, 1, float(g[0]), float(g[1]))
            kinds.add("Point")
        else:
            wkb[i] = _polygon_wkb(g.tolist())
            kinds.add("Polygon")
    if len(kinds) > 1:
        raise ValueError(f"{path}: a GeoPackage layer holds one geometry type, got {sorted(kinds)}")

    def write(tmp: Path) -> None:
        pyogrio.raw.write(tmp, wkb, cols, keys, layer=layer, driver="GPKG",
                          geometry_type=(kinds.pop() if kinds else "Polygon"), crs=crs.to_wkt())

    return atomic_write(path, write)
