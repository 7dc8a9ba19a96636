"""The analyst's loops measured with a real model (default: the shipped ``revet-base``).

Two measurements, each on freshly generated data of seeds no training used:

``changes``: ``revet synth --pairs`` scenes at two dates; both dates scored by the model
(``predict_files``), then ``revet changes`` with the scenes for coverage, scored against the
pair's truth (:func:`detector.changes.evaluate_pair`): precision and recall of
``appeared`` / ``disappeared`` / ``changed``, false changes per km².

``review``: the review loop of docs/review.md with the ground truth standing in for the analyst.
Scene A is scored, its review folder built (``build_review``), every candidate decided by the
labels (same class at IoU >= 0.5: accepted; another class: relabelled; none: rejected) and every
missed label drawn; ``from_review`` turns the decisions into tiles; the model is fine-tuned on
them for ``--minutes``; scene AP@0.5 of an unseen scene B is measured before and after. Both
scenes are of one style (default the held-out ``winter`` season, where the base model is
weakest), so the loop adapts the model to imagery it has not seen.

    python benchmarks/model_loops.py changes --pairs 6 --seed 9200
    python benchmarks/model_loops.py review --minutes 4

Prints the CPU flags with the figures. Everything lands under ``--out`` (default a temporary
folder).
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "cpu flags: unknown"
    keys = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return "cpu flags: " + " ".join(k for k in keys if k in flags)


def run_changes(out: Path, model: str, n: int, seed: int, size: int, floor: float | None = None,
                low: float | None = None) -> dict:
    from detector.change_metrics import format_change_metrics
    from detector.changes import evaluate_pair
    from detector.datasets.synth.pairs import generate_pairs
    from detector.predict import predict_files

    metas = generate_pairs(out / "pairs", n, seed=seed, size=size)
    totals: dict = {}
    for meta in metas:
        d = Path(meta["dir"])
        for date in ("before", "after"):
            predict_files(model, [str(d / f"{date}.tif")], d / f"det_{date}.geojson", min_score=floor)
        res = evaluate_pair(d, before=d / "det_before.geojson", after=d / "det_after.geojson", out_dir=d,
                            **({} if low is None else {"low": low}))
        m = res["metrics"]
        print(f"\n{d.name} (truth {meta['truth']}):\n{format_change_metrics(m)}")
        for s in ("appeared", "disappeared", "changed"):
            t = totals.setdefault(s, {"pred": 0, "truth": 0, "matched_pred": 0, "matched_truth": 0})
            t["pred"] += m[s]["pred"]
            t["truth"] += m[s]["truth"]
            t["matched_pred"] += m[s]["matched"]
            t["matched_truth"] += m[s]["matched"]
        for k in ("false_changes", "changes_on_hidden", "area_km2"):
            totals[k] = totals.get(k, 0) + m[k]
    print("\nall pairs:")
    for s in ("appeared", "disappeared", "changed"):
        t = totals[s]
        p = t["matched_pred"] / t["pred"] if t["pred"] else float("nan")
        r = t["matched_truth"] / t["truth"] if t["truth"] else float("nan")
        t.update(precision=round(p, 3), recall=round(r, 3))
        print(f"  {s:<12} pred {t['pred']:>4} truth {t['truth']:>4} precision {p:.3f} recall {r:.3f}")
    print(f"  false changes {totals['false_changes']} over {totals['area_km2']:.2f} km², "
          f"{totals['changes_on_hidden']} of them on objects hidden under foliage on one date")
    return totals


def analyst_decisions(cands: list[dict], gt_boxes: np.ndarray, gt_names: list[str]) -> list[dict]:
    """Decisions a perfect analyst makes: candidates matched to labels greedily by IoU (>= 0.5,
    best score first), unmatched labels drawn. Boxes in scene pixels ``[x1, y1, x2, y2]``."""
    from detector.tiling import box_iou

    order = sorted(range(len(cands)), key=lambda i: -(cands[i]["score"] or 0))
    boxes = np.array([cands[i]["box"] for i in order], np.float32).reshape(-1, 4)
    iou = box_iou(boxes, gt_boxes) if len(boxes) and len(gt_boxes) else np.zeros((len(boxes), len(gt_boxes)))
    taken = np.zeros(len(gt_boxes), bool)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = []
    for row, i in enumerate(order):
        c = cands[i]
        j = int(np.argmax(np.where(taken, -1, iou[row]))) if len(gt_boxes) else -1
        hit = j >= 0 and not taken[j] and iou[row, j] >= 0.5
        if hit:
            taken[j] = True
        status = ("accepted" if gt_names[j] == c["class"] else "relabelled") if hit else "rejected"
        out.append({"id": c["id"], "review_status": status, "class": c["class"],
                    "reviewed_class": gt_names[j] if hit else None, "note": "", "reviewed_at": now,
                    "score": c["score"], "box": c["box"], "seconds": None})
    for j in np.flatnonzero(~taken):
        out.append({"id": f"drawn-{j}", "review_status": "drawn", "class": None, "reviewed_class": gt_names[j],
                    "note": "", "reviewed_at": now, "score": None, "box": [float(v) for v in gt_boxes[j]],
                    "seconds": None})
    return out


def run_review(out: Path, model: str, weights: str, minutes: float, seed: int, size: int, style: str) -> dict:
    from detector.datasets.from_review import from_review
    from detector.datasets.synth import generate_dataset
    from detector.datasets.synth.style import Style
    from detector.export.onnx_export import export_checkpoint
    from detector.predict import predict_files
    from detector.review.app import build_review
    from detector.review.decisions import save_decisions
    from detector.runner import Detector
    from detector.scene_eval import evaluate_scene, scene_labels
    from detector.train.fit import TrainConfig, train

    st = Style.varied().only(style) if style != "standard" else Style()
    a, b = out / "scene_a", out / "scene_b"
    generate_dataset(a, n_train=0, n_val=60, n_test=0, scene_size=size, seed=seed, style=st)
    generate_dataset(b, n_train=0, n_val=0, n_test=0, scene_size=size, seed=seed + 1, style=st)
    classes = Detector.load(model).spec.classes

    def scene_ap(m) -> dict:
        r = evaluate_scene(m, b / "scene.tif", b / "scene.geojson", device="cpu")
        return {"mAP50": round(float(r["mAP50"]), 4),
                "per_class": {c: round(float(v["AP50"]), 4) for c, v in r["per_class"].items()}}

    before = scene_ap(model)
    predict_files(model, [str(a / "scene.tif")], a / "detections.geojson")
    build_review(a / "scene.tif", a / "detections.geojson", out / "review")
    cands = json.loads((out / "review" / "candidates.json").read_text())["candidates"]
    gt = scene_labels(a / "scene.geojson", a / "scene.tif", classes)
    decisions = analyst_decisions(cands, gt["boxes"], [classes[i] for i in gt["labels"]])
    review = json.loads((out / "review" / "review.json").read_text())
    counts = save_decisions(out / "review", review, decisions)
    ds = from_review(out / "review", out / "from_review")
    t0 = time.monotonic()
    best = train(TrainConfig(train=str(out / "from_review" / "dataset.json"), val=str(a / "val.json"),
                             out=str(out / "run"), weights=weights, lr=5e-4, warmup_steps=20, steps=400,
                             max_time=minutes, epochs=1000, val_every=2, report=False))
    train_s = time.monotonic() - t0
    export_checkpoint(best, out / "tuned.onnx", int8=False)
    after = scene_ap(out / "tuned.onnx")
    res = {"style": style, "decisions": counts, "from_review": {k: ds[k] for k in ds if k != "paths"},
           "train_seconds": round(train_s, 1), "scene_b_before": before, "scene_b_after": after,
           "gain_mAP50": round(after["mAP50"] - before["mAP50"], 4)}
    print(json.dumps(res, indent=1, default=str))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("changes", "review"))
    ap.add_argument("--model", default="revet-base", help="ONNX model or shipped name to score with")
    ap.add_argument("--weights", default="revet-base", help="review loop: weights to fine-tune from")
    ap.add_argument("--out", default=None)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--size", type=int, default=2048, help="scene side in pixels")
    ap.add_argument("--seed", type=int, default=7000)
    ap.add_argument("--floor", type=float, default=0.3,
                    help="changes: predict's --min-score for both dates (default 0.3, changes' --low, as "
                         "docs/sites.md advises; the model's own thresholds still decide 'confident')")
    ap.add_argument("--low", type=float, default=None,
                    help="changes: revet changes --low (default: its own, detector.changes.LOW)")
    ap.add_argument("--minutes", type=float, default=4.0, help="review loop: fine-tuning budget")
    ap.add_argument("--style", default="winter", help="review loop: 'standard' or a Style.only() name")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(a.out or tempfile.mkdtemp(prefix=f"revet-{a.what}-"))
    print(cpu_flags())
    t0 = time.monotonic()
    res = (run_changes(out, a.model, a.pairs, a.seed, a.size, a.floor, a.low) if a.what == "changes"
           else run_review(out, a.model, a.weights, a.minutes, a.seed, a.size, a.style))
    (out / f"{a.what}.json").write_text(json.dumps(res, indent=1, default=str))
    print(f"\n{a.what}: {time.monotonic() - t0:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
