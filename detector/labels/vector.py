"""Vector labels (GeoJSON, GeoPackage, shapefile) over a georeferenced raster.

Each feature is one object: a Polygon or MultiPolygon (an outline or a box) in any CRS, with
its class in an attribute (``class_field``, default ``"class"``). Over a raster, features are
reprojected to the raster's CRS (vertex by vertex, with ``rasterio.warp.transform``), mapped to
pixels through the raster's inverse transform, and the label box is the axis-aligned bounds of
the vertices in pixels (``x1, y1, x2, y2`` on pixel edges, see :mod:`detector.labels`).

GeoJSON is read with the standard library (CRS: its legacy ``"crs"`` member if present, else
EPSG:4326 as RFC 7946 says). GeoPackage, shapefile and other OGR formats are read with
``pyogrio`` (an optional dependency), geometries decoded from WKB here.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.labels import ImageRecord, LabelSet, OnError, report_problem

GEOJSON_SUFFIXES = (".geojson", ".json")
_WKB_NAMES = {1: "Point", 2: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString",
              6: "MultiPolygon", 7: "GeometryCollection"}


@dataclass
class VectorLabels:
    """Features of a vector label file, loaded once.

    Attributes:
        path: the file.
        crs: its CRS (``rasterio.crs.CRS``), None when the file declares none.
        xy: (M, 2) float64 all polygon vertices of all features, in ``crs`` units.
        offsets: (F + 1,) int64; feature ``i`` owns ``xy[offsets[i]:offsets[i + 1]]``.
        names: (F,) class name of each feature.
        ids: (F,) feature id for messages (GeoJSON ``id`` or index, OGR fid).
    """

    path: Path
    crs: object
    xy: np.ndarray
    offsets: np.ndarray
    names: list[str]
    ids: list

    def __len__(self) -> int:
        return len(self.names)

    def bounds(self) -> np.ndarray:
        """(F, 4) ``xmin, ymin, xmax, ymax`` of each feature in its own CRS."""
        return _segment_bounds(self.xy, self.offsets)


def _segment_bounds(xy: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    if len(offsets) < 2:
        return np.zeros((0, 4))
    starts = offsets[:-1]
    lo = np.minimum.reduceat(xy, starts, axis=0)
    hi = np.maximum.reduceat(xy, starts, axis=0)
    return np.concatenate([lo, hi], axis=1)


# -- reading ---------------------------------------------------------------------------------

def _geojson_rings(geom: dict) -> tuple[str, list]:
    kind = geom.get("type")
    coords = geom.get("coordinates")
    if kind == "Polygon":
        return kind, [p for ring in coords for p in ring]
    if kind == "MultiPolygon":
        return kind, [p for poly in coords for ring in poly for p in ring]
    if kind == "GeometryCollection":
        pts = []
        for g in geom.get("geometries", []):
            k, p = _geojson_rings(g)
            if k not in ("Polygon", "MultiPolygon", "GeometryCollection"):
                return k, []
            pts += p
        return kind, pts
    return str(kind), []


def _geojson_crs(path: Path, data: dict):
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    member = data.get("crs")
    if not member:
        return CRS.from_epsg(4326)
    name = (member.get("properties") or {}).get("name") if isinstance(member, dict) else None
    if not name:
        raise ValueError(f"{path}: 'crs' member {member!r}: expected "
                         f"{{'type': 'name', 'properties': {{'name': 'EPSG:...'}}}}")
    if "CRS84" in name:
        return CRS.from_epsg(4326)
    try:
        return CRS.from_user_input(name)
    except CRSError as e:
        raise ValueError(f"{path}: 'crs' name {name!r} is not a known CRS ({e})") from None


def _brief(value, n: int = 40) -> str:
    """``repr(value)`` cut to ``n`` characters, for messages."""
    r = repr(value)
    return r if len(r) <= n else r[:n - 3] + "..."


def _read_geojson(path: Path, class_field: str, on_error: OnError):
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid GeoJSON ({e})") from None
    if isinstance(data, dict) and data.get("type") == "Feature":
        data = {"type": "FeatureCollection", "features": [data]}
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection" \
            or not isinstance(data.get("features"), list):
        raise ValueError(f"{path}: expected a GeoJSON FeatureCollection with a 'features' list")
    crs = _geojson_crs(path, data)
    items = []
    for i, f in enumerate(data["features"]):
        if not isinstance(f, dict):
            report_problem(on_error, path, f"feature {i}", f"expected a GeoJSON Feature object, "
                           f"got {type(f).__name__} {_brief(f)}")
            continue
        fid = f.get("id", i)
        props = f.get("properties")
        if props is None:  # RFC 7946 allows null: no attributes, so no class (reported below)
            props = {}
        if not isinstance(props, dict):
            report_problem(on_error, path, f"feature {fid}", f"'properties' must be a JSON object "
                           f"(e.g. {{\"{class_field}\": \"bunker\"}}), got {type(props).__name__} {_brief(props)}")
            continue
        items.append((fid, f.get("geometry"), props.get(class_field), class_field in props))
    return crs, items, lambda g: _geojson_rings(g) if isinstance(g, dict) else ("null", [])


def _parse_wkb(b: bytes, o: int = 0):
    """-> (type name, list of (x, y) vertices, next offset). ISO and EWKB Z/M flavours."""
    e = "<" if b[o] == 1 else ">"
    t = struct.unpack_from(e + "I", b, o + 1)[0]
    o += 5
    z, m = bool(t & 0x80000000), bool(t & 0x40000000)
    if t & 0x20000000:  # EWKB SRID
        o += 4
    t &= 0x0FFFFFFF
    base, dims = t % 1000, t // 1000
    nd = 2 + (dims in (1, 2)) + 2 * (dims == 3) + z + m
    name = _WKB_NAMES.get(base, f"WKB type {t}")
    if base not in _WKB_NAMES:  # curves, surfaces, ...: named, not parsed
        return name, [], o

    def points(o, n):
        arr = np.frombuffer(b, e + "f8", n * nd, o).reshape(n, nd)[:, :2]
        return arr, o + 8 * n * nd

    if base == 1:
        pts, o = points(o, 1)
        return name, [pts], o
    n = struct.unpack_from(e + "I", b, o)[0]
    o += 4
    if base == 2:
        pts, o = points(o, n)
        return name, [pts], o
    if base == 3:
        rings = []
        for _ in range(n):
            k = struct.unpack_from(e + "I", b, o)[0]
            pts, o = points(o + 4, k)
            rings.append(pts)
        return name, rings, o
    parts = []
    for _ in range(n):
        sub, p, o = _parse_wkb(b, o)
        if base == 7 and sub not in ("Polygon", "MultiPolygon", "GeometryCollection"):
            name = sub
        parts += p
    return name, parts, o


def wkb_vertices(b: bytes) -> tuple[str, np.ndarray]:
    """The geometry type name and all vertices ``(M, 2)`` float64 of a WKB geometry (ISO or EWKB,
    2D, Z, M or ZM; a GeoPackage binary header is skipped): the one WKB reader, for labels,
    objects and review candidates. ValueError for geometry types other than the seven of
    simple features (points, lines, polygons, their multi forms, collections)."""
    b = bytes(b)
    if b[:2] == b"GP":  # GeoPackage binary: magic, version, flags, srs id, envelope
        b = b[8 + {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}[(b[3] >> 1) & 7]:]
    name, parts, _ = _parse_wkb(b)
    if name.startswith("WKB type"):
        raise ValueError(f"unsupported {name}")
    return name, (np.concatenate(parts) if parts else np.zeros((0, 2)))


def _wkb_rings(g):
    if g is None:
        return "null", []
    name, parts, _ = _parse_wkb(bytes(g))
    return name, [p for arr in parts for p in arr.tolist()]


def _read_ogr(path: Path, class_field: str, layer):
    try:
        import pyogrio
        import pyogrio.raw
    except ImportError:
        raise ValueError(f"{path}: reading {path.suffix} labels needs the 'pyogrio' package "
                         f"(pip install pyogrio), or convert the file to GeoJSON") from None
    from rasterio.crs import CRS

    try:
        info = pyogrio.read_info(path, layer=layer)
        fields = list(info["fields"])
        if class_field not in fields:
            raise ValueError(f"{path}: features have no attribute {class_field!r}; attributes "
                             f"are {fields} (use --class-field)")
        meta, fids, geoms, values = pyogrio.raw.read(path, layer=layer, columns=[class_field],
                                                     return_fids=True)
    except pyogrio.errors.DataSourceError as e:
        raise ValueError(f"{path}: not a readable vector file ({e})") from None
    except pyogrio.errors.DataLayerError as e:
        raise ValueError(f"{path}: cannot read layer {layer!r} ({e})") from None
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    col = values[0]
    items = [(int(fid), g, col[i], True) for i, (fid, g) in enumerate(zip(fids, geoms))]
    return crs, items, _wkb_rings


def read_vector(path: str | os.PathLike, *, class_field: str = "class", layer=None,
                on_error: OnError = None) -> VectorLabels:
    """Read polygon labels and their classes from GeoJSON, GeoPackage, shapefile (any OGR
    vector format via pyogrio). Raises ValueError naming the file and feature for a feature
    without geometry, a non-polygon geometry, a missing class attribute; with ``on_error``
    those features are reported and skipped instead."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: label file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path}: label file is empty (0 bytes)")
    if path.suffix.lower() in GEOJSON_SUFFIXES:
        crs, items, rings = _read_geojson(path, class_field, on_error)
    else:
        crs, items, rings = _read_ogr(path, class_field, layer)
    chunks, offsets, names, ids = [], [0], [], []
    for fid, geom, cls, has_field in items:
        item = f"feature {fid}"
        if not has_field or cls is None or (isinstance(cls, float) and np.isnan(cls)) or cls == "":
            report_problem(on_error, path, item, f"has no {class_field!r} attribute (set --class-field "
                           f"to the attribute that holds the class)")
            continue
        try:
            kind, pts = rings(geom)
        except (TypeError, ValueError, IndexError, struct.error, KeyError):
            kind, pts = "malformed", []
        if kind not in ("Polygon", "MultiPolygon", "GeometryCollection"):
            report_problem(on_error, path, item, f"expected a Polygon or MultiPolygon (an outline or a "
                           f"box), got {kind}")
            continue
        try:
            arr = np.asarray([p[:2] for p in pts], np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            arr = np.zeros((0, 2))
        if len(arr) == 0 or not np.isfinite(arr).all():
            report_problem(on_error, path, item, "has an empty or non-finite geometry")
            continue
        chunks.append(arr)
        offsets.append(offsets[-1] + len(arr))
        names.append(str(cls).strip())
        ids.append(fid)
    xy = np.concatenate(chunks) if chunks else np.zeros((0, 2))
    return VectorLabels(path, crs, xy, np.asarray(offsets, np.int64), names, ids)


# -- over a raster ---------------------------------------------------------------------------

def pixel_boxes(vl: VectorLabels, crs, transform, *, raster=None) -> np.ndarray:
    """(F, 4) float64 pixel boxes ``x1, y1, x2, y2`` of the features over a raster with ``crs``
    and affine ``transform``: vertices reprojected, mapped to pixels, bounded. Rows are NaN for
    features that cannot be reprojected. ``raster`` names the raster in errors."""
    from rasterio.warp import transform as warp

    if crs is None:
        raise ValueError(f"{raster}: raster has no CRS; vector labels {vl.path} need a "
                         f"georeferenced raster")
    if vl.crs is None:
        raise ValueError(f"{vl.path}: label file declares no CRS (a shapefile needs its .prj); "
                         f"expected labels in a known CRS to reproject onto {raster} ({crs})")
    if len(vl) == 0:
        return np.zeros((0, 4))
    xs, ys = vl.xy[:, 0], vl.xy[:, 1]
    if vl.crs != crs:
        try:
            xs, ys = (np.asarray(v, np.float64) for v in warp(vl.crs, crs, xs, ys))
        except Exception:  # some vertex cannot be projected: per feature, NaN for the failures
            xs, ys = _warp_per_feature(vl, crs)
    inv = ~transform
    col = inv.a * xs + inv.b * ys + inv.c
    row = inv.d * xs + inv.e * ys + inv.f
    pix = np.stack([col, row], axis=1)
    boxes = _segment_bounds(pix, vl.offsets)
    bad = ~np.isfinite(boxes).all(axis=1)
    boxes[bad] = np.nan
    return boxes


def _warp_per_feature(vl: VectorLabels, crs) -> tuple[np.ndarray, np.ndarray]:
    from rasterio.warp import transform as warp

    xs, ys = np.full(len(vl.xy), np.nan), np.full(len(vl.xy), np.nan)
    for a, b in zip(vl.offsets[:-1], vl.offsets[1:]):
        try:
            x, y = warp(vl.crs, crs, vl.xy[a:b, 0], vl.xy[a:b, 1])
            xs[a:b], ys[a:b] = x, y
        except Exception:
            pass
    return xs, ys


def overlap_error(vl: VectorLabels, raster, crs, width: int, height: int) -> str:
    """The message for labels that do not overlap a raster: both extents, both CRSs."""
    b = vl.bounds()
    ext = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()) if len(b) else ()
    return (f"{vl.path}: none of the {len(vl)} labels overlap raster {raster} ({width}x{height} "
            f"pixels, {crs}); label extent {tuple(round(float(v), 6) for v in ext)} in "
            f"{vl.crs}. Check the labels' CRS (.prj / 'crs') and that they belong to this image")


def class_index(vl: VectorLabels, classes: list[str] | None, on_error: OnError = None):
    """-> (classes, (F,) int64 label per feature, -1 where unknown (reported))."""
    if classes is None:
        classes = sorted(set(vl.names))
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index.get(n, -1) for n in vl.names], np.int64)
    for i in np.flatnonzero(labels < 0):
        report_problem(on_error, vl.path, f"feature {vl.ids[i]}",
                       f"unknown class {vl.names[i]!r}; expected one of {list(classes)}")
    return list(classes), labels


@dataclass
class RasterBoxes:
    """Vector features placed on one raster (:func:`boxes_on_raster`).

    Attributes:
        boxes: (F, 4) float64 pixel boxes ``x1, y1, x2, y2`` as :func:`pixel_boxes` gives them
            (not clipped; NaN rows for features that cannot be reprojected).
        clipped: (F, 4) the boxes clipped to the raster (NaN rows stay NaN).
        inside: (F,) bool: the clipped box has positive area, i.e. the feature overlaps the raster.
    """

    boxes: np.ndarray
    clipped: np.ndarray
    inside: np.ndarray


def boxes_on_raster(vl: VectorLabels, crs, transform, width: int, height: int, *, raster=None) -> RasterBoxes:
    """The features of ``vl`` in the pixels of a ``width x height`` raster with ``crs`` and affine
    ``transform``: the one rule for vector labels to pixel boxes (reading, chipping, checking,
    scene evaluation). ``raster`` names the raster in errors."""
    boxes = pixel_boxes(vl, crs, transform, raster=raster)
    clipped = np.clip(boxes, 0, [width, height] * 2)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return RasterBoxes(boxes, clipped, inside)


def read_vector_labels(vector: str | os.PathLike, raster: str | os.PathLike, *,
                       class_field: str = "class", classes: list[str] | None = None,
                       layer=None) -> LabelSet:
    """Vector labels over one raster as a one-image :class:`LabelSet`: boxes in the raster's
    pixels, clipped to the image; features wholly outside the raster are left out. Raises
    ValueError when no feature overlaps the raster (wrong CRS or wrong image)."""
    from detector.raster import open_raster, raster_info

    vl = read_vector(vector, class_field=class_field, layer=layer)
    with open_raster(raster) as ds:
        info = raster_info(ds)
    classes, labels = class_index(vl, classes)
    placed = boxes_on_raster(vl, info.crs, info.transform, info.width, info.height, raster=raster)
    keep = placed.inside
    if len(vl) and not keep.any():
        raise ValueError(overlap_error(vl, raster, info.crs, info.width, info.height))
    rec = ImageRecord(Path(raster), info.width, info.height, placed.clipped[keep], labels[keep], image_id=1)
    return LabelSet(classes, [rec], Path(vector))
