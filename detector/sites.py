"""Sites: group the objects of one date into candidate bases. Torch-free.

Rules (all distances in metres, measured in the local UTM frame of :mod:`detector.objects`,
whatever the input CRS):

- **Linking.** Single linkage: two objects belong to the same site when a chain of objects
  joins them in which consecutive box centres are at most ``link_distance`` apart (default
  250 m). A site needs at least ``min_objects`` members (default 3); smaller groups are not
  sites and their objects get no site id.
- **Polygon.** The convex hull of the members' boxes, grown by ``buffer`` metres (default
  25 m; a Minkowski sum with a 32-gon), so a single row of objects still has an area.
- **Centroid** (of the polygon's area), **area** (m², of the polygon), **counts** per class,
  **members** (the input ids).
- **Site score** in (0, 1]: ``mean_score * size_term * mix_term`` where ``mean_score`` is the
  mean of the members' scores (an object without a score counts 1.0), ``size_term =
  1 - 0.5 * exp(-(n - 1) / 4)`` (0.5 for one object, 0.8 for 3, 0.95 for 8) and
  ``mix_term`` is 0.75 for one class, 0.9 for two, 1.0 for three or more: a base holds
  several kinds of structure, a lone row of one kind is weaker evidence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, cKDTree

from detector.objects import Objects

LINK_DISTANCE_M = 250.0
MIN_OBJECTS = 3
BUFFER_M = 25.0


@dataclass
class Site:
    """One candidate site in the local frame (metres).

    polygon: closed ring ``(K, 2)`` counter-clockwise. centroid: ``(2,)``. area_m2: float.
    counts: class -> members. members: indices into the :class:`Objects` grouped.
    member_ids: the objects' ids. score: see the module docstring. site_id: 1-based.
    """

    site_id: int
    polygon: np.ndarray
    centroid: np.ndarray
    area_m2: float
    counts: dict
    members: np.ndarray
    member_ids: list
    score: float


def link_components(points: np.ndarray, link_distance: float) -> np.ndarray:
    """Single-linkage groups of ``points`` ``(N, 2)`` metres: ``(N,)`` group labels 0..G-1."""
    n = len(points)
    if n == 0:
        return np.zeros(0, np.int64)
    pairs = cKDTree(points).query_pairs(float(link_distance), output_type="ndarray")
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)[1]


def buffered_hull(points: np.ndarray, buffer: float, segments: int = 32) -> np.ndarray:
    """Convex hull of ``points`` ``(N, 2)`` grown by ``buffer`` metres: closed CCW ring."""
    t = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1) * max(float(buffer), 1e-3)
    pts = np.unique(np.asarray(points, np.float64).reshape(-1, 2), axis=0)
    if len(pts) > 8:  # only hull vertices matter; grow those (much faster for large sites)
        try:
            pts = pts[ConvexHull(pts).vertices]
        except Exception:  # collinear points: keep them all  # noqa: BLE001
            pass
    pts = (pts[:, None, :] + circle[None]).reshape(-1, 2)
    hull = ConvexHull(pts)
    ring = pts[hull.vertices]  # counter-clockwise for 2-D input
    return np.concatenate([ring, ring[:1]])


def ring_area_centroid(ring: np.ndarray) -> tuple[float, np.ndarray]:
    """Area (m², positive for CCW) and area centroid of a closed ring."""
    x, y = ring[:, 0], ring[:, 1]
    # shift to the first vertex for precision with UTM-sized coordinates
    x0, y0 = x[0], y[0]
    x, y = x - x0, y - y0
    cr = x[:-1] * y[1:] - x[1:] * y[:-1]
    a = cr.sum() / 2
    if abs(a) < 1e-12:
        return 0.0, np.array([x0 + x.mean(), y0 + y.mean()])
    cx = ((x[:-1] + x[1:]) * cr).sum() / (6 * a)
    cy = ((y[:-1] + y[1:]) * cr).sum() / (6 * a)
    return float(abs(a)), np.array([cx + x0, cy + y0])


def points_in_ring(points: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: which ``points`` ``(N, 2)`` lie inside the closed ``ring`` (even-odd rule)."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    x, y = p[:, 0:1], p[:, 1:2]
    x1, y1 = ring[:-1, 0][None], ring[:-1, 1][None]
    x2, y2 = ring[1:, 0][None], ring[1:, 1][None]
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = ((y1 > y) != (y2 > y)) & (x < (x2 - x1) * (y - y1) / (y2 - y1) + x1)
    return cross.sum(1) % 2 == 1


def site_score(scores: np.ndarray, classes) -> float:
    """The site score rule of the module docstring."""
    s = np.where(np.isfinite(scores), scores, 1.0)
    n = len(s)
    size = 1 - 0.5 * np.exp(-(n - 1) / 4)
    k = len(set(classes))
    mix = 0.75 if k <= 1 else (0.9 if k == 2 else 1.0)
    return float(s.mean() * size * mix)


def find_sites(objs: Objects, *, link_distance: float = LINK_DISTANCE_M, min_objects: int = MIN_OBJECTS,
               buffer: float = BUFFER_M) -> tuple[list[Site], np.ndarray]:
    """Group ``objs`` into sites. Returns ``(sites, site_of)``: sites sorted by score (best
    first, ids 1..S in that order) and ``site_of`` ``(N,)`` int64, each object's site id or 0."""
    if link_distance <= 0 or buffer < 0 or min_objects < 1:
        raise ValueError(f"link_distance > 0 m, buffer >= 0 m, min_objects >= 1 expected, "
                         f"got {link_distance}, {buffer}, {min_objects}")
    groups = link_components(objs.centres, link_distance)
    site_of = np.zeros(len(objs), np.int64)
    found = []
    if len(groups) == 0:
        return [], site_of
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    for members in np.split(order, bounds):
        if len(members) < min_objects:
            continue
        b = objs.boxes[members]
        corners = np.concatenate([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]])
        ring = buffered_hull(corners, buffer)
        area, centroid = ring_area_centroid(ring)
        cls = objs.classes[members]
        counts = {c: int((cls == c).sum()) for c in sorted(set(cls))}
        found.append(Site(0, ring, centroid, area, counts, members, objs.ids[members].tolist(),
                          site_score(objs.scores[members], cls)))
    found.sort(key=lambda s: (-s.score, s.centroid[0], s.centroid[1]))
    for k, s in enumerate(found, start=1):
        s.site_id = k
        site_of[s.members] = k
    return found, site_of


def site_features(sites: list[Site]) -> tuple[list, list[dict]]:
    """Geometries (rings, local metres) and properties for :func:`detector.objects.write_features`."""
    geoms, props = [], []
    for s in sites:
        geoms.append(s.polygon)
        props.append({"site_id": s.site_id, "score": round(s.score, 4), "objects": int(len(s.members)),
                      "area_m2": round(s.area_m2, 1), "centroid_x": round(float(s.centroid[0]), 2),
                      "centroid_y": round(float(s.centroid[1]), 2),
                      **{f"n_{c}": n for c, n in s.counts.items()},
                      "counts": s.counts, "members": s.member_ids})
    return geoms, props


def run_sites(detections, out, *, link_distance: float = LINK_DISTANCE_M, min_objects: int = MIN_OBJECTS,
              buffer: float = BUFFER_M, class_field: str = "class", layer: str | None = None) -> dict:
    """``revet sites``: read ``detections`` (any CRS), find sites, write ``out`` (GeoJSON in
    EPSG:4326 or GeoPackage in the local UTM frame; layer ``sites``). Returns a summary."""
    from detector.objects import read_objects, write_features

    (objs,) = read_objects([detections], class_field=class_field, layer=layer)
    sites, site_of = find_sites(objs, link_distance=link_distance, min_objects=min_objects, buffer=buffer)
    geoms, props = site_features(sites)
    write_features(out, geoms, props, objs.crs, layer="sites")
    return {"detections": str(detections), "objects": len(objs), "sites": len(sites),
            "objects_in_sites": int((site_of > 0).sum()), "frame": objs.crs.to_string(),
            "link_distance_m": link_distance, "min_objects": min_objects, "buffer_m": buffer,
            "out": str(out),
            "top": [{"site_id": s.site_id, "score": round(s.score, 3), "objects": len(s.members),
                     "area_km2": round(s.area_m2 / 1e6, 3), "counts": s.counts} for s in sites[:10]]}
