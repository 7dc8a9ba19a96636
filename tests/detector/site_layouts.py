"""Synthetic object layouts for the sites and changes tests (metres, EPSG:32637).

The geometry: ``n_bases`` bases whose anchors lie on a grid ``spacing`` metres apart (default
3 km) around (620 km E, 4250 km N). A base is a chain of 4 rows (random walk, 150 m between
consecutive row centres); a row holds 3-6 objects 25 m apart along a random heading, all of
one class, each object a box 12-30 m wide. So within a base every object has a neighbour of
the next row within 150 + 2 * 25 m (< 250 m, the default link distance) even with one object
missing, and objects of different bases are more than 2 km apart. ``close_pair`` adds one more
base whose nearest object is ``close_gap`` metres (default 400 m) from base 0's nearest one.
"""
from __future__ import annotations

import numpy as np

CRS = "EPSG:32637"
CLASSES = ("bunker", "revetment", "shelter")
ORIGIN = (620000.0, 4250000.0)


def make_base(rng, anchor, n_rows: int = 4) -> tuple[np.ndarray, list]:
    centres, classes = [], []
    p = np.asarray(anchor, float)
    for r in range(n_rows):
        if r:
            a = rng.uniform(0, 2 * np.pi)
            p = p + 150.0 * np.array([np.cos(a), np.sin(a)])
        n = int(rng.integers(3, 7))
        h = rng.uniform(0, np.pi)
        d = np.array([np.cos(h), np.sin(h)])
        cls = CLASSES[int(rng.integers(0, 3))]
        for k in range(n):
            centres.append(p + (k - (n - 1) / 2) * 25.0 * d)
            classes.append(cls)
    return np.array(centres), classes


def boxes_of(centres: np.ndarray, rng) -> np.ndarray:
    half = rng.uniform(6, 15, (len(centres), 2))
    return np.concatenate([centres - half, centres + half], 1)


def layout(seed: int = 0, n_bases: int = 6, spacing: float = 3000.0, close_pair: bool = False,
           close_gap: float = 400.0):
    """``(boxes (N, 4) metres, classes, base_of (N,))`` in EPSG:32637."""
    rng = np.random.default_rng(seed)
    cents, classes, base_of = [], [], []
    for b in range(n_bases):
        anchor = (ORIGIN[0] + (b % 3) * spacing, ORIGIN[1] + (b // 3) * spacing)
        c, k = make_base(rng, anchor)
        cents.append(c)
        classes += k
        base_of += [b] * len(c)
    if close_pair:
        c0 = cents[0]
        c, k = make_base(rng, (0.0, 0.0))
        # put it west of base 0 with exactly close_gap between the nearest objects in x
        c = c - [c[:, 0].max(), 0] + [c0[:, 0].min() - close_gap, c0[:, 1].mean() - c[:, 1].mean()]
        cents.append(c)
        classes += k
        base_of += [n_bases] * len(c)
    centres = np.concatenate(cents)
    return boxes_of(centres, rng), np.array(classes, dtype=object), np.array(base_of)


def perturb(boxes, classes, rng, *, jitter: float = 2.0, p_drop: float = 0.1, n_false: int = 15,
            far_from=None, min_far: float = 600.0):
    """Stand-in detections: jittered boxes, some dropped, ``n_false`` isolated false boxes at
    least ``min_far`` metres from every object of ``far_from`` (default: the input boxes)."""
    keep = rng.random(len(boxes)) >= p_drop
    b = boxes[keep] + np.repeat(rng.normal(0, jitter, (int(keep.sum()), 2)), 2, 0).reshape(-1, 4)
    ref = (boxes if far_from is None else far_from)
    rc = (ref[:, :2] + ref[:, 2:]) / 2
    lo, hi = rc.min(0) - 2000, rc.max(0) + 2000
    false = []
    while len(false) < n_false:
        p = rng.uniform(lo, hi)
        if np.hypot(*(rc - p).T).min() >= min_far and all(np.hypot(*(p - q)) >= min_far for q in false):
            false.append(p)
    fb = boxes_of(np.array(false).reshape(-1, 2), rng)
    cls = np.concatenate([classes[keep], rng.choice(CLASSES, n_false)]).astype(object)
    return np.concatenate([b, fb]), cls, keep
