"""Site-level and change-level metrics against labels. Torch-free.

**Sites.** A predicted site P and a labelled site L *touch* when L's area centroid lies inside
P's polygon or P's centroid inside L's. Touching pairs are matched one to one, closest
centroids first. Site recall = matched L / all L; precision = matched P / all P. A labelled
site touched by two or more predicted sites is *split*; a predicted site touching two or more
labelled sites is a *merge*.

**Changes.** For each status in ``appeared``, ``disappeared``, ``changed``: a predicted record
and a truth object of that status match when their centres (before-date frame, metres) are at
most ``tolerance`` apart (default 10 m), one to one, closest first. Precision = matched
predictions / predictions, recall = matched truth / truth objects (truth objects marked
``not_covered`` are left out of both). *False changes per km²*: predicted appeared,
disappeared or changed records matching no truth object of their status, per km² of the
records' hull grown by 100 m. ``changes_on_hidden`` counts predicted changes on truth objects
hidden under foliage on one date (they exist on both: false changes a detector cannot avoid
without an occlusion check).

:func:`stand_in_detections` turns labels into imperfect detections (jitter, misses, false
boxes, scores) so the change rules can be checked before a trained model exists;
:func:`evaluate_pair` runs ``changes`` on a synthetic pair folder with any detections (labels,
stand-ins or a model's) and scores it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from detector.objects import Objects, read_objects, read_raw, _objects
from detector.sites import Site, points_in_ring, ring_area_centroid

CHANGE_STATUSES = ("appeared", "disappeared", "changed")


def _greedy_pairs(a: np.ndarray, b: np.ndarray, tol: float) -> list[tuple[int, int, float]]:
    if len(a) == 0 or len(b) == 0:
        return []
    sd = cKDTree(a).sparse_distance_matrix(cKDTree(b), tol, output_type="ndarray")
    order = np.argsort(sd["v"], kind="stable")
    ua, ub, out = set(), set(), []
    for k in order.tolist():
        i, j = int(sd["i"][k]), int(sd["j"][k])
        if i in ua or j in ub:
            continue
        ua.add(i), ub.add(j)
        out.append((i, j, float(sd["v"][k])))
    return out


# ------------------------------------------------------------------ sites
def site_metrics(pred: list[Site], truth_rings: list[np.ndarray]) -> dict:
    """Metrics of predicted sites against labelled site polygons (closed rings, local metres)."""
    tc = np.array([ring_area_centroid(r)[1] for r in truth_rings]).reshape(-1, 2)
    pc = np.array([s.centroid for s in pred]).reshape(-1, 2)
    touch = np.zeros((len(pred), len(truth_rings)), bool)
    for i, s in enumerate(pred):
        if len(tc):
            touch[i] |= points_in_ring(tc, s.polygon)
    for j, r in enumerate(truth_rings):
        if len(pc):
            touch[:, j] |= points_in_ring(pc, r)
    cand = [(float(np.hypot(*(pc[i] - tc[j]))), i, j) for i, j in zip(*np.nonzero(touch))]
    used_p, used_t, matches = set(), set(), []
    for d, i, j in sorted(cand):
        if i in used_p or j in used_t:
            continue
        used_p.add(i), used_t.add(j)
        matches.append({"pred": int(i), "truth": int(j), "centroid_distance_m": round(d, 1)})
    n_t, n_p = len(truth_rings), len(pred)
    return {"truth_sites": n_t, "pred_sites": n_p, "matched": len(matches),
            "recall": len(matches) / n_t if n_t else None, "precision": len(matches) / n_p if n_p else None,
            "split": [int(j) for j in range(n_t) if touch[:, j].sum() >= 2],
            "merged": [int(i) for i in range(n_p) if touch[i].sum() >= 2], "matches": matches}


def read_site_rings(path, frame) -> list[np.ndarray]:
    """Labelled site polygons (any vector file, any CRS) as closed rings in ``frame`` (metres):
    each feature's bounding box when it is not a polygon ring we can keep exactly."""
    from detector.objects import to_local

    raw = read_raw(path)
    x, y = to_local(raw.x, raw.y, raw.crs, frame)
    ends = list(raw.start[1:]) + [len(x)]
    return [np.stack([x[s:e], y[s:e]], 1) for s, e in zip(raw.start, ends)]


# ------------------------------------------------------------------ changes
def read_truth_changes(path, frame) -> Objects:
    """A truth change file (``revet synth --pairs``: ``changes_truth.geojson``) in ``frame``:
    Objects whose ``classes`` are the truth statuses; ``extra`` holds ``class_before`` and
    ``class_after`` arrays."""
    raw = read_raw(path)
    objs = _objects(raw, frame if not isinstance(frame, str) else __import__("rasterio").crs.CRS.from_user_input(frame),
                    "status", "score")
    for k in ("class_before", "class_after"):
        objs.extra[k] = np.array(raw.props.get(k, [None] * len(objs)), dtype=object)
    return objs


def change_metrics(ch, truth: Objects, *, tolerance: float = 10.0) -> dict:
    """Precision / recall of appeared, disappeared, changed and false changes per km² of a
    :class:`detector.changes.Changes` against :func:`read_truth_changes` objects (same frame)."""
    tpos = truth.centres
    tst = truth.classes
    out: dict = {"tolerance_m": tolerance}
    false = 0
    for s in CHANGE_STATUSES:
        p = ch.position[ch.status == s]
        t = tpos[tst == s]
        m = _greedy_pairs(p, t, tolerance)
        false += len(p) - len(m)
        out[s] = {"pred": int(len(p)), "truth": int(len(t)), "matched": len(m),
                  "precision": len(m) / len(p) if len(p) else None,
                  "recall": len(m) / len(t) if len(t) else None}
    # diagnostic: predicted changes on objects that stood on both dates under foliage on one
    pc = ch.position[np.isin(ch.status, CHANGE_STATUSES)]
    hid = tpos[tst == "hidden"]
    out["changes_on_hidden"] = len(_greedy_pairs(pc, hid, tolerance))
    area = coverage_area_km2(ch)
    out["false_changes"] = int(false)
    out["area_km2"] = round(area, 4)
    out["false_changes_per_km2"] = round(false / area, 3) if area > 0 else None
    return out


def coverage_area_km2(ch) -> float:
    """Area (km²) the comparison covers: the hull of all records grown like the site polygons."""
    from detector.sites import buffered_hull

    if len(ch.position) < 1:
        return 0.0
    return ring_area_centroid(buffered_hull(ch.position, 100.0))[0] / 1e6


# ------------------------------------------------------------------ stand-ins and pairs
def stand_in_detections(labels_path, out_path, *, seed: int = 0, jitter_m: float = 1.0, p_miss: float = 0.02,
                        p_weak: float = 0.08, false_rate: float = 0.05, score_true=(0.55, 0.98),
                        score_weak=(0.3, 0.5), score_false=(0.3, 0.55)) -> Path:
    """Imperfect detections from labels, written as GeoJSON like ``revet predict`` writes:
    each box moved by ``N(0, jitter_m)`` metres, missed outright with ``p_miss``, found only
    weakly (score in ``score_weak``, below the confident threshold) with ``p_weak``, else scored
    in ``score_true``; plus ``false_rate * N`` false boxes (copies of label boxes moved
    50-300 m, random class) scored in ``score_false``."""
    from detector.objects import box_ring, write_features

    (objs,) = read_objects([labels_path])
    rng = np.random.default_rng(seed)
    n = len(objs)
    keep = rng.random(n) >= p_miss
    boxes = objs.boxes[keep] + np.repeat(rng.normal(0, jitter_m, (int(keep.sum()), 2)), 2, 0).reshape(-1, 4)
    classes = list(objs.classes[keep])
    weak = rng.random(len(boxes)) < p_weak
    scores = list(np.where(weak, rng.uniform(*score_weak, len(boxes)), rng.uniform(*score_true, len(boxes))))
    nf = int(round(false_rate * n))
    if nf and n:
        src = objs.boxes[rng.integers(0, n, nf)]
        r, a = rng.uniform(50, 300, nf), rng.uniform(0, 2 * np.pi, nf)
        d = np.stack([r * np.cos(a), r * np.sin(a)], 1)
        boxes = np.concatenate([boxes, src + np.concatenate([d, d], 1)])
        classes += list(rng.choice(sorted(set(objs.classes)), nf))
        scores += list(rng.uniform(*score_false, nf))
    geoms = [box_ring(b) for b in boxes]
    props = [{"class": str(c), "score": round(float(s), 4)} for c, s in zip(classes, scores)]
    return write_features(out_path, geoms, props, objs.crs)


def format_change_metrics(m: dict) -> str:
    lines = [f"{'status':<12} {'pred':>5} {'truth':>5} {'match':>5} {'prec':>6} {'recall':>6}"]
    for s in CHANGE_STATUSES:
        r = m[s]
        f = lambda v: "   -  " if v is None else f"{v:6.3f}"  # noqa: E731
        lines.append(f"{s:<12} {r['pred']:>5} {r['truth']:>5} {r['matched']:>5} {f(r['precision'])} {f(r['recall'])}")
    lines.append(f"false changes: {m['false_changes']} over {m['area_km2']} km² "
                 f"({m['false_changes_per_km2']} per km²)")
    return "\n".join(lines)


def _dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)
