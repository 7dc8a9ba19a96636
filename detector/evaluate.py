"""Evaluation of a model (``.onnx`` or ``.ckpt``), what ``revet evaluate`` does: tile level on a
COCO dataset (:mod:`detector.tile_eval`), scene level on a raster with vector labels
(:mod:`detector.scene_eval`), one model or two side by side; and the terminal text.

Both levels score through the same :class:`detector.runner.Detector` as prediction (valid-pixel
masks, resampling to the model's pixel size). Dataset categories are matched to the model's
classes by name. Detections are kept down to ``EVAL_MIN_SCORE`` so the PR curves and AP are
complete; precision, recall and the confusion matrix are read at the operating threshold (the
model spec's ``score_threshold`` unless one is given). See
:func:`detector.metrics.evaluate_full` for every number and ``docs/evaluate.md`` for the rules.

    m = evaluate_model("model.onnx", "test.json", report="report/")   # tile level
    r = run_evaluation(["a.onnx", "b.onnx"], data="test.json")       # two models compared

The shared run model (:class:`EvalRun`, :func:`write_json`, ...) lives in :mod:`detector.eval_run`
and the evaluators in their modules; they are importable from here too.
"""
from __future__ import annotations

from detector.eval_run import (EVAL_MIN_SCORE, EvalRun, Source, finish_run, load_detector,  # noqa: F401
                               operating_threshold, write_json)
from detector.metrics import format_value, operating_rule
from detector.scene_eval import evaluate_scene, evaluate_scene_run  # noqa: F401
from detector.tile_eval import evaluate_model, evaluate_tiles  # noqa: F401


# -- comparing two runs ----------------------------------------------------------------------

_TOP = [("mAP50", ("mAP50",)), ("mAP50_95", ("mAP50_95",)),
        ("precision", ("operating", "precision")), ("recall", ("operating", "recall")),
        ("f1", ("operating", "f1")), ("fp", ("operating", "fp")), ("fn", ("operating", "fn")),
        ("best_f1", ("sweep", "best", "f1")), ("best_f1_threshold", ("sweep", "best", "threshold")),
        ("fp_per_km2", ("scene", "fp_per_km2")),
        ("recall_crossing", ("scene", "boundary", "crossing", "recall")),
        ("recall_inside", ("scene", "boundary", "inside", "recall"))]
_PER_CLASS = ("AP50", "AP", "precision", "recall", "fp_per_km2")


def _get(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def compare_metrics(a: dict, b: dict) -> dict:
    """Side-by-side numbers of two metric dicts: ``{name: {"a", "b", "diff" (b - a)}}`` for
    the headline numbers and ``per_class.<class>.<metric>``, where both runs have them."""
    rows = {}
    names = [(n, p) for n, p in _TOP]
    for c in a.get("per_class", {}):
        if c in b.get("per_class", {}):
            names += [(f"per_class.{c}.{k}", ("per_class", c, k)) for k in _PER_CLASS]
    for name, path in names:
        va, vb = _get(a, path), _get(b, path)
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            rows[name] = {"a": va, "b": vb, "diff": vb - va}
    return rows


def run_evaluation(models: list, *, data=None, scene=None, labels=None, class_field: str = "class",
                   layer=None, threshold: float | None = None, out=None, report=None,
                   device: str = "auto", batch_size: int = 8, min_score: float = EVAL_MIN_SCORE) -> dict:
    """What ``revet evaluate`` does: evaluate one or two models on the COCO file ``data``
    (tile level) or on raster ``scene`` with vector ``labels`` (scene level).

    One model: returns its metrics dict. Two: ``{"models": [metrics_a, metrics_b],
    "comparison": compare_metrics(a, b)}``; with ``report``, each model's report goes to
    ``report/a`` and ``report/b`` and ``report/index.html`` holds the comparison.
    """
    models = list(models)
    if not 1 <= len(models) <= 2:
        raise ValueError(f"evaluate: expected one model, or two to compare, got {len(models)}")
    if (data is None) == (scene is None):
        raise ValueError("evaluate: give either --data TEST.json (tiles) or --scene SCENE.tif "
                         "--labels LABELS (a scene), not both or neither")
    if scene is not None and labels is None:
        raise ValueError(f"{scene}: scene evaluation needs --labels (GeoJSON, GeoPackage or shapefile)")
    if data is not None and labels is not None:
        raise ValueError(f"--labels {labels} goes with --scene; with --data the labels are the COCO file")

    def one(model):
        if data is not None:
            return evaluate_tiles(model, data, threshold=threshold, device=device, batch_size=batch_size,
                                  min_score=min_score)
        return evaluate_scene_run(model, scene, labels, class_field=class_field, layer=layer,
                                  threshold=threshold, device=device, batch_size=batch_size,
                                  min_score=min_score)

    if len(models) == 1:
        return finish_run(one(models[0]), out, report)
    runs = [one(m) for m in models]
    result = {"models": [r.metrics for r in runs], "comparison": compare_metrics(runs[0].metrics, runs[1].metrics)}
    if report is not None:
        from detector.report import write_comparison_report

        result["report"] = str(write_comparison_report(runs, result["comparison"], report))
    if out is not None:
        write_json(out, result)
    return result


# -- text ------------------------------------------------------------------------------------

def _f(v, fmt=".4f") -> str:
    return format_value(v, fmt, "   n/a")


def format_metrics(m: dict) -> str:
    """A few lines for the terminal."""
    lines = [f"mAP@0.5      {_f(m['mAP50'])}", f"mAP@0.5:0.95 {_f(m['mAP50_95'])}"]
    if "operating" in m:
        o, b = m["operating"], m["sweep"]["best"]
        lines.append(f"at {operating_rule(m)}: precision {_f(o['precision'])}  recall "
                     f"{_f(o['recall'])}  F1 {_f(o['f1'])}  (TP {o['tp']}, FP {o['fp']}, FN {o['fn']})")
        lines.append(f"best F1 {_f(b['f1'])} at score >= {_f(b['threshold'])} (precision "
                     f"{_f(b['precision'])}, recall {_f(b['recall'])})")
    sc = m.get("scene")
    if sc:
        lines.append(f"scene {sc['valid_km2']:.3f} km2 with data; false positives {_f(sc['fp_per_km2'], '.2f')}"
                     f" per km2; {sc['windows']['count']} windows of {sc['windows']['tile']} px, overlap "
                     f"{sc['windows']['overlap']}")
        bd = sc["boundary"]
        lines.append(f"recall of labels crossing window boundaries {_f(bd['crossing']['recall'])} "
                     f"(n={bd['crossing']['num_gt']}), inside one window {_f(bd['inside']['recall'])} "
                     f"(n={bd['inside']['num_gt']})")
        if "cut" in bd:
            lines.append(f"recall of labels cut by a window edge {_f(bd['cut']['recall'])} (n={bd['cut']['num_gt']}, "
                         f"{bd['cut']['duplicates']} double reports), never cut {_f(bd['uncut']['recall'])} "
                         f"(n={bd['uncut']['num_gt']}, {bd['uncut']['duplicates']} double reports)")
    head = f"  {'class':<12} {'AP@0.5':>7} {'AP':>7}"
    has_op = any("precision" in c for c in m["per_class"].values())
    if has_op:
        head += f" {'prec':>7} {'recall':>7} {'TP':>5} {'FP':>5} {'FN':>5}"
    if sc:
        head += f" {'FP/km2':>7}"
    lines.append(head + f" {'n':>5}")
    for name, c in m["per_class"].items():
        row = f"  {name:<12} {_f(c['AP50']):>7} {_f(c['AP']):>7}"
        if has_op:
            row += (f" {_f(c['precision']):>7} {_f(c['recall']):>7} {c['tp']:>5} {c['fp']:>5} {c['fn']:>5}")
        if sc:
            row += f" {_f(c.get('fp_per_km2'), '.2f'):>7}"
        lines.append(row + f" {c['num_gt']:>5}")
    if m.get("report"):
        lines.append(f"report: {m['report']}")
    return "\n".join(lines)


def format_comparison(result: dict) -> str:
    a, b = result["models"]
    lines = [f"A: {a.get('model')}", f"B: {b.get('model')}", f"{'metric':<32} {'A':>9} {'B':>9} {'B - A':>9}"]
    for name, r in result["comparison"].items():
        lines.append(f"{name:<32} {_f(r['a']):>9} {_f(r['b']):>9} {_f(r['diff'], '+.4f'):>9}")
    if result.get("report"):
        lines.append(f"report: {result['report']}")
    return "\n".join(lines)
