"""Changes between two dates: register, match, give every object a status. Torch-free.

All positions are box centres in metres in one local UTM frame (:mod:`detector.objects`)
shared by both dates, whatever CRS each input is in. Steps:

1. **Scores.** Objects scoring below ``low`` (default 0.3) are treated as not detected and
   dropped; an object without a score is taken as confident (score 1). An object is
   *confident* (step 5, hysteresis) at or above its model's operating threshold for its class
   (the ``threshold`` property ``revet predict`` writes, calibrated per class on validation),
   or ``high`` (default 0.5) where the file records none. Hysteresis needs the weak evidence:
   score both dates with ``revet predict --min-score 0.3`` (or lower), so an object kept on one
   date and seen at 0.4 on the other is matched (``persisted``), not ``disappeared``.
2. **Misregistration.** A global shift ``after = before + (dx, dy)`` is estimated from
   candidate pairs (same class, centres within ``max_shift``, default 25 m): every pair votes
   its offset into a 1-m 2-D histogram, the 3 x 3 window with most votes wins, and the shift is
   the median of the offsets within 2 m of that peak. Needs ``min_pairs`` (default 3)
   supporting pairs, else no shift is applied. Outliers (new, removed, false objects) vote
   for scattered offsets and do not move the peak.
3. **Matching.** After removing the shift, objects are paired greedily by cost: centre
   distance, plus ``match_distance`` if the classes differ (so the same class wins a tie);
   only pairs within ``match_distance`` (default 10 m) qualify; each object pairs once.
4. **Coverage.** A date covers a point when its scenes (``--scene-before/--scene-after``, else
   the files named by the detections' ``source`` property when they exist) hold valid pixels
   there (rasterio dataset masks: nodata, alpha, scene extent). An unmatched object's box
   (centre and four corners, moved into the other date's frame) must be covered. With no
   raster at all, coverage is the convex hull of the other date's objects grown by
   ``coverage_buffer`` (default 250 m): ground where that date saw nothing is not claimed.
5. **Statuses.** ``persisted``: matched, same class. ``changed``: matched, classes differ,
   both confident. ``disappeared``/``appeared``: unmatched, confident, and the other date
   covered it, and (``disappeared``, when both scenes are given) its box is not hidden under
   foliage on the after date (:mod:`detector.change_pixels`). Everything else is ``uncertain`` with a
   ``reason``: ``no_coverage``, ``occluded``, ``low_score`` (unmatched but below ``high``) or ``class_low_score``
   (classes differ, one side not confident). Before matching, boxes of one date that overlap
   at IoU >= 0.5 keep only the best-scoring class (:func:`one_class_per_ground`).
6. **Sites.** The change records (at their before-frame positions) are grouped into sites
   (:func:`detector.sites.find_sites`); each site gets a summary like ``+2 bunkers,
   -1 revetment, 1 revetment->shelter``.

Geometries written: the before box for persisted, changed, disappeared and uncertain-before
records; the after box as the after file has it (its own georeferencing) for appeared ones.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from scipy.spatial import cKDTree

from detector import tiling
from detector.objects import Objects, box_ring, read_objects, to_local, write_features
from detector.sites import BUFFER_M, LINK_DISTANCE_M, MIN_OBJECTS, buffered_hull, find_sites, points_in_ring

log = logging.getLogger("revet.changes")

STATUSES = ("persisted", "appeared", "disappeared", "changed", "uncertain")
HIGH, LOW = 0.5, 0.3
MATCH_DISTANCE_M = 10.0
MAX_SHIFT_M = 25.0
COVERAGE_BUFFER_M = 250.0


# ------------------------------------------------------------------ misregistration
@dataclass
class Shift:
    """Estimated misregistration ``after = before + (dx, dy)``, metres in the local frame."""

    dx: float = 0.0
    dy: float = 0.0
    support: int = 0
    candidates: int = 0
    method: str = "none"

    def to_dict(self) -> dict:
        return {"dx_m": round(self.dx, 3), "dy_m": round(self.dy, 3), "support": self.support,
                "candidates": self.candidates, "method": self.method}


def estimate_shift(before: Objects, after: Objects, *, max_shift: float = MAX_SHIFT_M,
                   min_pairs: int = 3, bin_m: float = 1.0) -> Shift:
    """Robust global shift from same-class candidate pairs (the voting rule of the module)."""
    if len(before) == 0 or len(after) == 0:
        return Shift()
    tree = cKDTree(before.centres)
    ca = after.centres
    k = min(8, len(before))
    dist, idx = tree.query(ca, k=k, distance_upper_bound=max_shift)
    dist, idx = dist.reshape(len(ca), k), idx.reshape(len(ca), k)
    ok = np.isfinite(dist)
    ia = np.broadcast_to(np.arange(len(ca))[:, None], idx.shape)[ok]
    ib = idx[ok]
    same = before.classes[ib] == after.classes[ia]
    ia, ib = ia[same], ib[same]
    if len(ia) < min_pairs:
        return Shift(candidates=int(len(ia)))
    off = ca[ia] - before.centres[ib]
    nb = int(np.ceil(max_shift / bin_m))
    edges = np.arange(-nb, nb + 1) * bin_m
    hist, _, _ = np.histogram2d(off[:, 0], off[:, 1], bins=[edges, edges])
    # 3 x 3 window sums: a shift on a bin edge splits its votes between neighbours
    pad = np.pad(hist, 1)
    win = sum(pad[1 + i:1 + i + hist.shape[0], 1 + j:1 + j + hist.shape[1]]
              for i in (-1, 0, 1) for j in (-1, 0, 1))
    pi, pj = np.unravel_index(int(np.argmax(win)), win.shape)
    peak = np.array([edges[pi] + bin_m / 2, edges[pj] + bin_m / 2])
    near = np.hypot(*(off - peak).T) <= 2 * bin_m
    if near.sum() < min_pairs:
        return Shift(candidates=int(len(ia)))
    d = np.median(off[near], axis=0)
    # refine once around the median (the peak bin is coarse)
    near = np.hypot(*(off - d).T) <= 2 * bin_m
    d = np.median(off[near], axis=0)
    return Shift(float(d[0]), float(d[1]), int(near.sum()), int(len(ia)), "objects")


# ------------------------------------------------------------------ coverage
@dataclass
class _Mask:
    valid: np.ndarray  # (h, w) bool
    transform: object  # rasterio Affine of the (possibly decimated) mask
    crs: CRS
    path: str


class Coverage:
    """Where one date has valid pixels: the union of its scenes' dataset masks, or (no scenes)
    the buffered convex hull of its objects. ``covered(points)`` takes local-frame metres."""

    def __init__(self, frame: CRS, masks: list[_Mask] | None = None, hull: np.ndarray | None = None,
                 kind: str = "none"):
        self.frame, self.masks, self.hull, self.kind = frame, masks or [], hull, kind

    @classmethod
    def from_scenes(cls, paths, frame: CRS, max_pixels: int = 4096) -> "Coverage":
        """Read each scene's valid-pixel mask (decimated so no side exceeds ``max_pixels``)."""
        import rasterio
        from rasterio.enums import Resampling

        masks = []
        for p in paths:
            if not Path(p).exists():
                raise FileNotFoundError(f"{p}: scene not found (expected a GeoTIFF to check coverage)")
            with rasterio.open(p) as ds:
                if ds.crs is None:
                    raise ValueError(f"{p}: the scene has no CRS; expected a georeferenced raster")
                f = max(1, int(np.ceil(max(ds.width, ds.height) / max_pixels)))
                h, w = int(np.ceil(ds.height / f)), int(np.ceil(ds.width / f))
                m = ds.dataset_mask(out_shape=(h, w), resampling=Resampling.nearest) > 0
                t = ds.transform @ ds.transform.scale(ds.width / w, ds.height / h)
                masks.append(_Mask(m, t, ds.crs, str(p)))
        return cls(frame, masks, kind="scenes")

    @classmethod
    def from_objects(cls, objs: Objects, buffer: float = COVERAGE_BUFFER_M) -> "Coverage":
        if len(objs) == 0:
            return cls(objs.crs, kind="objects")
        b = objs.boxes
        corners = np.concatenate([b[:, [0, 1]], b[:, [2, 3]], b[:, [0, 3]], b[:, [2, 1]]])
        if len(corners) > 20000:  # only the hull matters: thin the interior cheaply
            from scipy.spatial import ConvexHull
            corners = corners[ConvexHull(corners).vertices]
        return cls(objs.crs, hull=buffered_hull(corners, buffer, segments=16), kind="objects")

    def covered(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        if self.kind == "objects":
            if self.hull is None:
                return np.zeros(len(pts), bool)
            return points_in_ring(pts, self.hull)
        out = np.zeros(len(pts), bool)
        for m in self.masks:
            x, y = to_local(pts[:, 0], pts[:, 1], self.frame, m.crs)
            col, row = ~m.transform @ (x, y)
            col, row = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
            inside = (row >= 0) & (row < m.valid.shape[0]) & (col >= 0) & (col < m.valid.shape[1])
            ok = np.zeros(len(pts), bool)
            ok[inside] = m.valid[row[inside], col[inside]]
            out |= ok
        return out

    def covers_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: centre and the four corners of each box ``(N, 4)`` are covered."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        pts = np.stack([np.stack([cx, cy], 1), b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], 1)
        return self.covered(pts.reshape(-1, 2)).reshape(-1, 5).all(1)


def _source_scenes(objs: Objects) -> list[str]:
    return sorted({str(s) for s in objs.sources if s and Path(str(s)).is_file()})


def coverage_for(objs: Objects, scenes) -> Coverage:
    """Coverage of one date: its ``scenes``, else its detections' existing ``source`` files,
    else the buffered hull of its objects."""
    scenes = list(scenes or []) or _source_scenes(objs)
    if scenes:
        return Coverage.from_scenes(scenes, objs.crs)
    return Coverage.from_objects(objs)


# ------------------------------------------------------------------ matching
def one_class_per_ground(objs: Objects, scores: np.ndarray, *, iou: float = 0.5) -> np.ndarray:
    """Indices of the objects kept when boxes of one date overlap at IoU >= ``iou`` (metres):
    the best-scoring of each overlapping group, whatever its class (:func:`tiling.one_class_per_ground`).
    A detector scored with a low ``--min-score`` often reports one structure as two classes
    (0.87 shelter, 0.3 bunker); left in, the weak twin takes the other date's match and the
    strong one is called disappeared."""
    return tiling.one_class_per_ground(objs.boxes, scores, iou=iou)[0]


def match(before: Objects, after: Objects, shift: Shift, *, match_distance: float = MATCH_DISTANCE_M):
    """Greedy one-to-one matching (rule 3). Returns ``(ib, ia, dist)`` arrays of pairs."""
    if len(before) == 0 or len(after) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    ca = after.centres - [shift.dx, shift.dy]
    k = min(6, len(before))
    dist, idx = cKDTree(before.centres).query(ca, k=k, distance_upper_bound=match_distance)
    dist, idx = dist.reshape(len(ca), k), idx.reshape(len(ca), k)
    ok = np.isfinite(dist)
    ia = np.broadcast_to(np.arange(len(ca))[:, None], idx.shape)[ok]
    ib, d = idx[ok], dist[ok]
    cost = d + np.where(before.classes[ib] != after.classes[ia], match_distance, 0.0)
    order = np.lexsort((ia, ib, cost))
    used_b = np.zeros(len(before), bool)
    used_a = np.zeros(len(after), bool)
    keep = []
    for k_ in order.tolist():
        b, a = ib[k_], ia[k_]
        if used_b[b] or used_a[a]:
            continue
        used_b[b] = used_a[a] = True
        keep.append(k_)
    keep = np.asarray(keep, np.int64)
    return ib[keep], ia[keep], d[keep]


# ------------------------------------------------------------------ statuses
@dataclass
class Changes:
    """One record per matched pair or unmatched object.

    ib, ia: ``(R,)`` indices into ``before`` / ``after`` (-1: none). status, reason: ``(R,)``
    object arrays. distance_m: ``(R,)`` match distance after removing the shift (NaN when
    unmatched). site_of: ``(R,)`` site id or 0. sites: :class:`detector.sites.Site` list over
    the records. position: ``(R, 2)`` before-frame centres (metres).
    """

    before: Objects
    after: Objects
    shift: Shift
    ib: np.ndarray
    ia: np.ndarray
    status: np.ndarray
    reason: np.ndarray
    distance_m: np.ndarray
    position: np.ndarray
    site_of: np.ndarray
    sites: list
    params: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)
    coverage: dict = field(default_factory=dict)

    def counts(self) -> dict:
        return {s: int((self.status == s).sum()) for s in STATUSES}

    def record_classes(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`record_classes` of these changes (for readers that do not import this module)."""
        return record_classes(self)

    def site_summaries(self) -> list[dict]:
        """:func:`site_summaries` of these changes."""
        return site_summaries(self)


def _plural(n: int, name: str) -> str:
    return f"{n} {name}" + ("" if n == 1 or name.endswith("s") else "s")


def site_summary(status, cls_before, cls_after) -> str:
    """``"+2 bunkers, -1 revetment, 1 revetment->shelter"`` for one site's records ('' if none)."""
    parts = []
    for s, sign, cls in (("appeared", "+", cls_after), ("disappeared", "-", cls_before)):
        sel = status == s
        for c in sorted(set(cls[sel])):
            parts.append(sign + _plural(int((cls[sel] == c).sum()), c))
    sel = status == "changed"
    pairs = sorted(set(zip(cls_before[sel], cls_after[sel])))
    for b, a in pairs:
        n = int(((cls_before[sel] == b) & (cls_after[sel] == a)).sum())
        parts.append(f"{n} {b}->{a}")
    return ", ".join(parts)


def compare(before: Objects, after: Objects, *, cov_before: Coverage | None = None,
            cov_after: Coverage | None = None, high: float = HIGH, low: float = LOW,
            match_distance: float = MATCH_DISTANCE_M, max_shift: float = MAX_SHIFT_M,
            min_pairs: int = 3, link_distance: float = LINK_DISTANCE_M, min_objects: int = MIN_OBJECTS,
            shift: Shift | None = None, scenes: tuple | None = None) -> Changes:
    """Statuses of the objects of two dates (the rules of the module docstring).

    ``before`` and ``after`` must be in the same local frame (read them together with
    :func:`detector.objects.read_objects`). ``cov_*``: where each date has valid pixels
    (default: the buffered hull of its objects). ``shift``: a known misregistration instead of
    the estimate. ``scenes``: ``(before scene, after scene)`` raster paths; when given, every
    ``disappeared`` object is checked in both images (:mod:`detector.change_pixels`) and
    becomes ``uncertain`` (``occluded``) where its box is under foliage on the after date.
    """
    if before.crs != after.crs:
        raise ValueError(f"{before.path} and {after.path}: the two dates must share one local frame, "
                         f"got {before.crs} and {after.crs}; read them with one read_objects call")
    if not 0 <= low <= high <= 1:
        raise ValueError(f"thresholds: 0 <= low <= high <= 1 expected, got low={low}, high={high}")
    sb = np.where(np.isfinite(before.scores), before.scores, 1.0)
    sa = np.where(np.isfinite(after.scores), after.scores, 1.0)
    kb, ka = np.flatnonzero(sb >= low), np.flatnonzero(sa >= low)
    dropped = {"before_below_low": int(len(before) - len(kb)), "after_below_low": int(len(after) - len(ka))}
    B, A = before.subset(kb), after.subset(ka)
    sb, sa = sb[kb], sa[ka]
    kb, ka = one_class_per_ground(B, sb), one_class_per_ground(A, sa)
    dropped.update(before_overlapped=int(len(B) - len(kb)), after_overlapped=int(len(A) - len(ka)))
    B, A = B.subset(kb), A.subset(ka)
    sb, sa = sb[kb], sa[ka]
    # confident: at or above the model's operating threshold of the class, else ``high``
    tb = np.where(np.isfinite(B.thresholds), B.thresholds, high)
    ta = np.where(np.isfinite(A.thresholds), A.thresholds, high)
    if shift is None:
        shift = estimate_shift(B, A, max_shift=max_shift, min_pairs=min_pairs)
    pb, pa, dist = match(B, A, shift, match_distance=match_distance)
    cov_before = cov_before or Coverage.from_objects(B)
    cov_after = cov_after or Coverage.from_objects(A)

    nb_, na_ = np.ones(len(B), bool), np.ones(len(A), bool)
    nb_[pb], na_[pa] = False, False
    ub, ua = np.flatnonzero(nb_), np.flatnonzero(na_)
    R = len(pb) + len(ub) + len(ua)
    ib = np.concatenate([pb, ub, np.full(len(ua), -1)]).astype(np.int64)
    ia = np.concatenate([pa, np.full(len(ub), -1), ua]).astype(np.int64)
    status = np.empty(R, dtype=object)
    reason = np.full(R, "", dtype=object)
    distance = np.concatenate([dist, np.full(len(ub) + len(ua), np.nan)])

    # matched pairs
    n = len(pb)
    same = B.classes[pb] == A.classes[pa]
    conf = (sb[pb] >= tb[pb]) & (sa[pa] >= ta[pa])
    status[:n] = np.where(same, "persisted", np.where(conf, "changed", "uncertain"))
    reason[:n] = np.where(same | conf, "", "class_low_score")
    # unmatched before: disappeared if the after date covered the ground (in its own frame)
    s = slice(n, n + len(ub))
    shifted = B.boxes[ub] + [shift.dx, shift.dy, shift.dx, shift.dy]
    cov = cov_after.covers_boxes(shifted)
    confb = sb[ub] >= tb[ub]
    status[s] = np.where(cov & confb, "disappeared", "uncertain")
    reason[s] = np.where(~cov, "no_coverage", np.where(confb, "", "low_score"))
    # unmatched after: appeared if the before date covered it
    s = slice(n + len(ub), R)
    cov = cov_before.covers_boxes(A.boxes[ua] - [shift.dx, shift.dy, shift.dx, shift.dy])
    confa = sa[ua] >= ta[ua]
    status[s] = np.where(cov & confa, "appeared", "uncertain")
    reason[s] = np.where(~cov, "no_coverage", np.where(confa, "", "low_score"))

    if scenes is not None and all(scenes):
        _check_pixels(B, A, shift, ib, ia, status, reason, scenes)

    # positions in the before frame, and sites over the records
    pos = np.zeros((R, 2))
    hb = ib >= 0
    pos[hb] = B.centres[ib[hb]]
    pos[~hb] = A.centres[ia[~hb]] - [shift.dx, shift.dy]
    cls = np.where(hb, B.classes[np.maximum(ib, 0)] if len(B) else "", A.classes[np.maximum(ia, 0)] if len(A) else "")
    from detector.objects import objects_from_arrays
    recs = objects_from_arrays(pos, cls, crs=B.crs)
    sites, site_of = find_sites(recs, link_distance=link_distance, min_objects=min_objects, buffer=BUFFER_M)
    params = {"high": high, "low": low, "match_distance_m": match_distance, "max_shift_m": max_shift,
              "min_pairs": min_pairs, "link_distance_m": link_distance, "min_objects": min_objects}
    return Changes(B, A, shift, ib, ia, status, reason, distance, pos, site_of, sites, params, dropped,
                   {"before": cov_before.kind, "after": cov_after.kind})


def _check_pixels(B: Objects, A: Objects, shift: Shift, ib, ia, status, reason, scenes) -> None:
    """Demote ``disappeared`` records whose box is under foliage on the after date to
    ``uncertain`` / ``occluded`` (in place). Only that direction: an object seen standing cannot
    be grown over by a full crown between two dates, but ground is cleared of trees to build on
    it, so trees where an object now stands are no evidence against ``appeared``."""
    import rasterio

    from detector.change_pixels import occluded

    d = np.array([shift.dx, shift.dy, shift.dx, shift.dy])
    with rasterio.open(scenes[0]) as db, rasterio.open(scenes[1]) as da:
        for r in np.flatnonzero(status == "disappeared").tolist():
            if occluded(db, da, B.crs, B.boxes[ib[r]], B.boxes[ib[r]] + d):
                status[r], reason[r] = "uncertain", "occluded"


def record_classes(ch: Changes) -> tuple[np.ndarray, np.ndarray]:
    """``(class_before, class_after)`` per record ('' where that date has no object)."""
    cb = np.array([ch.before.classes[i] if i >= 0 else "" for i in ch.ib.tolist()], dtype=object)
    ca = np.array([ch.after.classes[i] if i >= 0 else "" for i in ch.ia.tolist()], dtype=object)
    return cb, ca


def site_summaries(ch: Changes) -> list[dict]:
    """Per site: id, centroid, counts of statuses and the ``+2 bunkers, -1 revetment`` text."""
    cb, ca = record_classes(ch)
    out = []
    for s in ch.sites:
        sel = ch.site_of == s.site_id
        st = ch.status[sel]
        out.append({"site_id": s.site_id, "objects": int(sel.sum()),
                    "area_m2": round(s.area_m2, 1),
                    "statuses": {k: int((st == k).sum()) for k in STATUSES if (st == k).any()},
                    "summary": site_summary(st, cb[sel], ca[sel]),
                    "changed": bool(np.isin(st, ("appeared", "disappeared", "changed")).any())})
    return out


def change_features(ch: Changes) -> tuple[list, list[dict]]:
    """Geometries (local metres) and properties of every record, for :func:`write_features`."""
    cb, ca = record_classes(ch)
    geoms, props = [], []
    for r in range(len(ch.status)):
        b, a = int(ch.ib[r]), int(ch.ia[r])
        box = ch.before.boxes[b] if b >= 0 else ch.after.boxes[a]
        geoms.append(box_ring(box))
        d = ch.distance_m[r]
        props.append({
            "status": ch.status[r], "reason": ch.reason[r] or None,
            "class": ca[r] if b < 0 else cb[r],
            "class_before": cb[r] or None, "class_after": ca[r] or None,
            "score_before": float(ch.before.scores[b]) if b >= 0 and np.isfinite(ch.before.scores[b]) else None,
            "score_after": float(ch.after.scores[a]) if a >= 0 and np.isfinite(ch.after.scores[a]) else None,
            "id_before": ch.before.ids[b] if b >= 0 else None,
            "id_after": ch.after.ids[a] if a >= 0 else None,
            "distance_m": round(float(d), 3) if np.isfinite(d) else None,
            "site_id": int(ch.site_of[r]) or None,
        })
    return geoms, props


def changes_summary(ch: Changes) -> dict:
    return {"frame": ch.before.crs.to_string(), "before": ch.before.path, "after": ch.after.path,
            "objects_before": len(ch.before), "objects_after": len(ch.after), "dropped": ch.dropped,
            "shift": ch.shift.to_dict(), "coverage": ch.coverage, "counts": ch.counts(),
            "params": ch.params, "sites": site_summaries(ch)}


def run_changes(before, after, out, *, scene_before=None, scene_after=None, report=None,
                high: float = HIGH, low: float = LOW, match_distance: float = MATCH_DISTANCE_M,
                max_shift: float = MAX_SHIFT_M, link_distance: float = LINK_DISTANCE_M,
                min_objects: int = MIN_OBJECTS, class_field: str = "class", truth=None) -> dict:
    """``revet changes``: read both dates into one frame, compare, write ``out`` (GeoJSON
    EPSG:4326 or GeoPackage in the local frame, layer ``changes``) and ``out``'s
    ``.summary.json``; ``report``: an HTML folder (:mod:`detector.change_report`); ``truth``: a
    labelled change file (``revet synth --pairs``) to score against. Returns the summary."""
    import json

    from detector.outputs import atomic_write_text

    B, A = read_objects([before, after], class_field=class_field)
    sb = [scene_before] if isinstance(scene_before, (str, os.PathLike)) else scene_before
    sa = [scene_after] if isinstance(scene_after, (str, os.PathLike)) else scene_after
    ch = compare(B, A, cov_before=coverage_for(B, sb), cov_after=coverage_for(A, sa), high=high, low=low,
                 match_distance=match_distance, max_shift=max_shift, link_distance=link_distance,
                 min_objects=min_objects, scenes=(sb[0], sa[0]) if sb and sa else None)
    geoms, props = change_features(ch)
    write_features(out, geoms, props, ch.before.crs, layer="changes")
    summary = changes_summary(ch)
    summary["out"] = str(out)
    if truth:
        from detector.change_metrics import change_metrics, read_truth_changes
        summary["metrics"] = change_metrics(ch, read_truth_changes(truth, ch.before.crs))
    if report:
        from detector.change_report import write_change_report
        summary["report"] = str(write_change_report(ch, report, scene_before=(sb or [None])[0],
                                                    scene_after=(sa or [None])[0]))
    p = Path(out)
    atomic_write_text(p.with_name(p.name.rsplit(".", 1)[0] + ".summary.json"),
                      json.dumps(summary, indent=1, default=str))
    return summary


def evaluate_pair(pair_dir, *, before=None, after=None, out_dir=None, scenes: bool = True, **kw) -> dict:
    """Run ``changes`` on a ``revet synth --pairs`` folder and score it against its truth.

    ``before`` / ``after``: detection files of the two dates (default: the pair's labels), e.g.
    ``revet predict MODEL pair/before.tif --out before.geojson``. ``scenes``: check coverage
    with the pair's images. Returns the changes summary with ``metrics``.
    """
    d = Path(pair_dir)
    out = Path(out_dir or d) / "changes.geojson"
    return run_changes(before or d / "labels_before.geojson", after or d / "labels_after.geojson", out,
                       scene_before=d / "before.tif" if scenes else None,
                       scene_after=d / "after.tif" if scenes else None, truth=d / "changes_truth.geojson", **kw)
