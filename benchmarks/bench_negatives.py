"""Do the synthetic hard negatives matter? Two equal-budget training runs, one experiment.

    python benchmarks/bench_negatives.py [--epochs 20] [--arch fcos_lite] [--work /tmp/revet_negatives]

1. Writes the generator's default tiles twice with the same seed: with hard negatives (houses,
   barns, greenhouses, ponds, tanks, ring berms, dykes, spoil heaps, hay bales) and without.
   The targets and their boxes are identical in both (independent random streams).
2. Writes a negatives-only set (another seed, ``targets=False``): look-alikes, no labels, so
   every detection on it is a false positive.
3. Trains the same model, seed and number of optimizer steps (equal epochs over equal-sized
   sets: the same compute budget) on each, each alone on the machine, one after the other.
4. Prints, for both models: false positives per tile on the negatives-only set at fixed score
   thresholds and at each model's own calibrated threshold, and test mAP@0.5 and false
   positives on the full test set (which has negatives), plus training wall time.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


THRESHOLDS = (0.3, 0.5, 0.7)


def _fp_per_tile(run, thr: float) -> float:
    """Detections with score >= ``thr`` per tile that match no label (all of them on a
    negatives-only set)."""
    from detector.metrics import match_image

    n = 0
    for im in run.images:
        keep = im.scores >= thr
        if not len(im.gt_labels):
            n += int(keep.sum())
            continue
        m = match_image(im, len(run.classes), 0.5, max_dets=None)
        n += int(((m.det_gt == -1) & keep).sum())
    return n / max(1, len(run.images))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--arch", default="fcos_lite")
    ap.add_argument("--n-negonly", type=int, default=150)
    ap.add_argument("--work", default="/tmp/revet_negatives")
    a = ap.parse_args()

    from detector.datasets.synth import generate_dataset
    from detector.evaluate import evaluate_tiles
    from detector.train.fit import TrainConfig, train

    work = Path(a.work)
    sets = {"with_negatives": True, "without_negatives": False}
    for name, neg in sets.items():
        if not (work / name / "test.json").exists():
            t = time.monotonic()
            generate_dataset(work / name, n_train=400, n_val=60, n_test=100, scene_size=0, seed=0,
                             workers=2, negatives=neg)
            print(f"wrote {name} in {time.monotonic() - t:.0f} s", flush=True)
    negonly = work / "negatives_only"
    if not (negonly / "test.json").exists():
        generate_dataset(negonly, n_train=0, n_val=0, n_test=a.n_negonly, scene_size=0, seed=1234,
                         workers=2, targets=False)

    results = {}
    for name in sets:
        run_dir = work / f"run_{name}"
        best = run_dir / "best.ckpt"
        if not best.exists():
            cfg = TrainConfig(train=str(work / name / "train.json"), val=str(work / name / "val.json"),
                              out=str(run_dir), arch=a.arch, epochs=a.epochs, val_every=4, report=False,
                              seed=0)
            t = time.monotonic()
            best = Path(train(cfg))
            (run_dir / "wall_s.txt").write_text(f"{time.monotonic() - t:.1f}")
        wall = float((run_dir / "wall_s.txt").read_text())
        ck = run_dir / "best.ckpt"  # what each run hands its user (best val mAP, calibrated threshold)
        neg_run = evaluate_tiles(ck, negonly / "test.json", device="cpu")
        test_run = evaluate_tiles(ck, work / "with_negatives" / "test.json", device="cpu")
        own = neg_run.threshold
        r = {"train_wall_s": wall, "own_threshold": own,
             "negonly_fp_per_tile": {str(t): _fp_per_tile(neg_run, t) for t in THRESHOLDS + (own,)},
             "test_fp_per_tile": {str(t): _fp_per_tile(test_run, t) for t in THRESHOLDS + (own,)},
             "test_mAP50": test_run.metrics["mAP50"],
             "test_per_class_AP50": {k: v["AP50"] for k, v in test_run.metrics["per_class"].items()}}
        results[name] = r
        print(json.dumps({name: r}, indent=1), flush=True)

    w, wo = results["with_negatives"], results["without_negatives"]
    print(f"\n{a.arch}, {a.epochs} epochs x 400 tiles each, negatives-only set: {a.n_negonly} tiles")
    print(f"{'':>28}{'with negatives':>16}{'without':>10}{'ratio':>8}")
    for t in THRESHOLDS:
        x, y = w["negonly_fp_per_tile"][str(t)], wo["negonly_fp_per_tile"][str(t)]
        print(f"{'FP/tile (neg-only) @' + str(t):>28}{x:>16.3f}{y:>10.3f}{y / max(x, 1e-9):>8.2f}")
    print(f"{'FP/tile @ own threshold':>28}{w['negonly_fp_per_tile'][str(w['own_threshold'])]:>16.3f}"
          f"{wo['negonly_fp_per_tile'][str(wo['own_threshold'])]:>10.3f}   "
          f"(thresholds {w['own_threshold']:.2f} / {wo['own_threshold']:.2f})")
    print(f"{'test mAP@0.5 (full test)':>28}{w['test_mAP50']:>16.4f}{wo['test_mAP50']:>10.4f}")
    print(f"{'train wall s':>28}{w['train_wall_s']:>16.0f}{wo['train_wall_s']:>10.0f}")
    (work / "negatives_experiment.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
