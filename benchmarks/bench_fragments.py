"""One box per object: objects reported more than once, and recall on and off the window grid,
with the fragment join of :func:`detector.tiling.join_fragments` on and off (same run).

    python benchmarks/bench_fragments.py [--model revet-base:int8] [--size 2048] [--seeds 0 1 2]

Each seed renders a ``size`` x ``size`` synthetic scene at 0.5 m (targets anywhere, look-alike
structures included), scores it once per setting at the model's operating threshold, and
matches detections to the true boxes: recall at IoU 0.5 (greedy by score, any class), objects
hit by two or more detections at IoU >= 0.3 ("reported more than once"), and recall of the
objects that cross an interior window edge against the others. Prints the CPU flags.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags)


def score(det, scene: Path, truth: np.ndarray, windows: list, tile: int) -> dict:
    from detector.tiling import box_iou

    r = det.predict_scene(scene)
    iou = box_iou(truth, r.boxes) if len(r) else np.zeros((len(truth), 0))
    hit = np.zeros(len(truth), bool)
    used = np.zeros(len(r), bool)
    for d in np.argsort(-r.scores):  # greedy match at IoU 0.5
        cand = np.where(~hit & (iou[:, d] >= 0.5))[0]
        if len(cand):
            hit[cand[np.argmax(iou[cand, d])]] = True
            used[d] = True
    multi = (iou >= 0.3).sum(axis=1) >= 2
    starts = sorted({c for c, _ in windows} - {0})
    cut = np.zeros(len(truth), bool)
    for s in starts:  # interior window edges at s and s + tile (grid pixels = raster pixels here)
        for e in (s, s + tile):
            cut |= (truth[:, 0] < e) & (truth[:, 2] > e) | (truth[:, 1] < e) & (truth[:, 3] > e)
    return {"detections": len(r), "recall": hit.mean(), "multi": int(multi.sum()),
            "recall_cut": hit[cut].mean() if cut.any() else float("nan"),
            "recall_rest": hit[~cut].mean(), "cut": int(cut.sum()), "objects": len(truth),
            "false": int((~used).sum()), "result": r}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="revet-base:int8")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args(argv)
    from rasterio.transform import from_origin

    from detector.datasets.synth import render_image, write_geotiff
    from detector.runner import Detector

    det = Detector.load(a.model)
    print(f"cpu flags: {cpu_flags()}; model {a.model}; scene {a.size}^2 px at 0.5 m; seeds {a.seeds}")
    rows = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            r = render_image(10_000 + seed, a.size, a.size, gsd=0.5, negatives=True, contain=False)
            path = Path(tmp) / f"scene{seed}.tif"
            write_geotiff(path, r.image, from_origin(500000, 4000000, 0.5, 0.5))
            truth = np.asarray(r.boxes, np.float64).reshape(-1, 4)
            plan = det.plan_scene(path)
            for join in (False, True):
                det.join_fragments = join
                m = score(det, path, truth, plan.windows, plan.tile)
                m.pop("result")
                rows[join].append(m)
                print(f"seed {seed} join={join!s:5}: objects {m['objects']} (on window edges {m['cut']}), "
                      f"detections {m['detections']}, recall {m['recall']:.3f} (edges {m['recall_cut']:.3f}, "
                      f"rest {m['recall_rest']:.3f}), reported more than once {m['multi']}, unmatched {m['false']}")
    for join in (False, True):
        objs = sum(m["objects"] for m in rows[join])
        multi = sum(m["multi"] for m in rows[join])
        rec = np.mean([m["recall"] for m in rows[join]])
        print(f"join={join!s:5} total: {multi}/{objs} objects reported more than once ({100 * multi / objs:.1f} %), "
              f"mean recall {rec:.3f}")


if __name__ == "__main__":
    main()
