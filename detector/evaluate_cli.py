"""``revet evaluate``: tile-level or scene-level metrics of one model, or two side by side.

    revet evaluate MODEL --data TEST.json [--threshold T] [--out m.json] [--report DIR]
    revet evaluate MODEL --scene SCENE.tif --labels LABELS.gpkg [--class-field class]
    revet evaluate MODEL_A MODEL_B --data TEST.json
    revet evaluate MODEL --data VAL.json --calibrate OUT.onnx   # per-class thresholds (revet[train])

The handler parses and calls :func:`detector.evaluate.run_evaluation`. Torch is imported only
to load a ``.ckpt``; ``--calibrate`` calls :func:`detector.export.calibrate.calibrate_model`
(it writes ONNX metadata with the ``onnx`` package of revet[train]).
"""
from __future__ import annotations

import argparse


def _evaluate(a) -> int:
    from detector.evaluate import format_comparison, format_metrics, run_evaluation

    if a.calibrate:
        if len(a.model) != 1 or a.data is None or a.scene is not None or a.threshold is not None:
            raise ValueError("--calibrate: give one model and --data VAL.json (tiles), without --scene "
                             "or --threshold")
        from detector.export.calibrate import calibrate_model, format_calibration

        r = calibrate_model(a.model[0], a.data, a.calibrate, device=a.device, batch_size=a.batch_size,
                            min_score=a.min_score)
        print(format_calibration(r))
        if a.out:
            from detector.eval_run import write_json

            write_json(a.out, r)
            print(f"metrics written to {a.out}")
        return 0

    result = run_evaluation(a.model, data=a.data, scene=a.scene, labels=a.labels, class_field=a.class_field,
                            layer=a.layer, threshold=a.threshold, out=a.out, report=a.report,
                            device=a.device, batch_size=a.batch_size, min_score=a.min_score)
    print(format_comparison(result) if "comparison" in result else format_metrics(result))
    for w in (result.get("scene") or {}).get("warnings", []):
        print(f"warning: {w}")
    if a.out:
        print(f"metrics written to {a.out}")
    return 0


def add_evaluate_command(subparsers) -> None:
    """Register ``evaluate`` on an ``argparse`` subparsers object."""
    v = subparsers.add_parser(
        "evaluate", help="metrics of a .ckpt or .onnx model: tiles (COCO) or a scene (vector labels)",
        description="Tile level: --data TEST.json (COCO). Scene level: --scene SCENE.tif --labels "
                    "LABELS (GeoJSON, GeoPackage, shapefile; any CRS). Two models: compared side by side.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    v.add_argument("model", nargs="+", metavar="MODEL", help="a .onnx or .ckpt model, or a shipped model by name (revet-base, revet-base:int8); give two to compare")
    v.add_argument("--data", help="COCO JSON of test tiles (tile-level evaluation)")
    v.add_argument("--scene", help="GeoTIFF scene (scene-level evaluation, with --labels)")
    v.add_argument("--labels", help="vector labels of the scene: polygons with a class attribute")
    v.add_argument("--class-field", default="class", help="label attribute holding the class name")
    v.add_argument("--layer", help="layer of a multi-layer vector file (GeoPackage)")
    v.add_argument("--threshold", type=float,
                   help="operating score threshold for precision/recall (default: the model spec's)")
    v.add_argument("--min-score", type=float, default=0.001,
                   help="lowest score kept for AP and the PR curves (raise it to speed up huge scenes)")
    v.add_argument("--out", help="metrics JSON")
    v.add_argument("--calibrate", metavar="OUT_MODEL",
                   help="write a copy of MODEL (.onnx or .ckpt) whose spec holds one threshold per class: "
                        "each class's best F1 on --data (a validation set); needs revet[train]")
    v.add_argument("--report", metavar="DIR", help="write an HTML report with figures and galleries here")
    v.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"])
    v.add_argument("--batch-size", type=int, default=8)
    v.set_defaults(func=_evaluate)
