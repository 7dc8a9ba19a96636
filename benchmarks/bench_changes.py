"""Time ``changes`` on N detections per date (default 100,000), synthetic points in bases.

    python benchmarks/bench_changes.py [--n 100000] [--files]

Layout: bases of 50 objects (rows 25 m apart, within about 1 km²) scattered over a
300 x 300 km square in UTM zone 37N; the after date drops 10 %, rebuilds 5 % as another
class, adds 10 % and is shifted by (3, -2) m. Times: the comparison in memory (shift, match,
coverage from the objects' hull, statuses, sites), and with ``--files`` the whole command
(GeoJSON read and written). Prints the CPU flags it ran with.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu_flags() -> str:
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return "unknown"
    model = next((l.split(":")[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{model}; {os.cpu_count()} cpus; avx2={'avx2' in flags} avx512f={'avx512f' in flags}"


def make(n: int, seed: int = 0):
    from detector.objects import objects_from_arrays

    rng = np.random.default_rng(seed)
    classes = np.array(["bunker", "revetment", "shelter"], dtype=object)
    n_bases = n // 50
    anchors = rng.uniform([300000, 4000000], [600000, 4300000], (n_bases, 2))
    c = (anchors[:, None, :] + rng.uniform(-500, 500, (n_bases, 50, 2))).reshape(-1, 2)[:n]
    cls = classes[rng.integers(0, 3, len(c))]
    u = rng.random(len(c))
    keep = u >= 0.10
    cls_a = cls.copy()
    reb = (u >= 0.10) & (u < 0.15)
    cls_a[reb] = classes[(np.searchsorted(classes, cls[reb]) + 1) % 3]
    new = c[rng.integers(0, len(c), n // 10)] + rng.uniform(30, 60, (n // 10, 2))
    ca = np.concatenate([c[keep], new]) + [3.0, -2.0]
    cls_a = np.concatenate([cls_a[keep], classes[rng.integers(0, 3, len(new))]])
    b = objects_from_arrays(np.concatenate([c - 8, c + 8], 1), cls, crs="EPSG:32637",
                            scores=rng.uniform(0.5, 1, len(c)))
    a = objects_from_arrays(np.concatenate([ca - 8, ca + 8], 1), cls_a, crs="EPSG:32637",
                            scores=rng.uniform(0.5, 1, len(ca)))
    return b, a


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--files", action="store_true", help="also time the command on GeoJSON files")
    a = ap.parse_args()
    from detector.changes import compare, run_changes
    from detector.objects import box_ring, write_features

    b, af = make(a.n)
    t = time.perf_counter()
    ch = compare(b, af)
    dt = time.perf_counter() - t
    out = {"cpu": cpu_flags(), "before": len(b), "after": len(af), "compare_s": round(dt, 2),
           "shift": ch.shift.to_dict(), "counts": ch.counts(), "sites": len(ch.sites)}
    if a.files:
        with tempfile.TemporaryDirectory() as tmp:
            for name, o in (("b", b), ("a", af)):
                write_features(Path(tmp) / f"{name}.geojson", [box_ring(x) for x in o.boxes],
                               [{"class": c, "score": float(s)} for c, s in zip(o.classes, o.scores)], o.crs)
            t = time.perf_counter()
            run_changes(Path(tmp) / "b.geojson", Path(tmp) / "a.geojson", Path(tmp) / "c.geojson")
            out["command_geojson_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
