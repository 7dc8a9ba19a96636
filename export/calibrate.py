"""Calibrate an existing model: one operating threshold per class, from a labelled tile set.

    revet evaluate MODEL --data VAL.json --calibrate OUT.onnx

scores the COCO file ``VAL.json`` through the runner (:func:`detector.tile_eval.evaluate_tiles`),
takes each class's best-F1 threshold on it (:func:`detector.eval_run.calibrated_thresholds`:
the model's one threshold where a class has no objects there or is never found) and writes a
copy of the model whose spec carries them as ``class_thresholds``. Everything else in the file
(weights, graph, other metadata) is unchanged; ``score_threshold`` stays as it was. The runner,
``revet predict`` and ``revet evaluate`` then keep a detection when its score reaches its
class's threshold; ``--min-score`` / ``--threshold`` still set one threshold for every class.

This is what training does at its end on its validation set (``train/fit.py``), for models
trained before, shipped ones included, or calibrated on data closer to a user's imagery.
Calibrate on a validation split, and measure on another.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx

from detector import zoo
from detector.eval_run import EVAL_MIN_SCORE, calibrated_thresholds
from detector.metrics import evaluate_full
from detector.spec import SPEC_KEY, ModelSpec
from detector.tile_eval import evaluate_tiles

CALIBRATION_KEY = "revet_calibration"  # ONNX metadata: the data the class thresholds came from


def write_onnx_spec(src: str | os.PathLike, out: str | os.PathLike, spec: ModelSpec, note: str | None = None) -> Path:
    """Copy the ONNX model ``src`` to ``out`` with ``spec`` as its ``revet_spec`` metadata
    (and ``note`` as ``revet_calibration``); the graph and other metadata are kept. Atomic."""
    src, out = Path(src), Path(out)
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    if SPEC_KEY not in props:
        raise ValueError(f"{src}: no '{SPEC_KEY}' metadata; not a model exported by Revet")
    props[SPEC_KEY] = spec.to_json()
    if note is not None:
        props[CALIBRATION_KEY] = note
    del model.metadata_props[:]
    for k, v in props.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out


def calibrate_model(model: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *,
                    device: str = "auto", batch_size: int = 8, min_score: float = EVAL_MIN_SCORE) -> dict:
    """Per-class thresholds of ``model`` (``.onnx``, ``.ckpt`` or a shipped name) from the COCO
    file ``data``, written into a copy of the model at ``out`` (same kind of file; never over
    the source).

    Returns ``{"out", "class_thresholds": {class: t}, "threshold": the model's one threshold,
    "before": metrics at the model's thresholds, "after": metrics at the new per-class ones}``,
    both :func:`detector.metrics.evaluate_full` dicts of the same detections on ``data`` (the
    set calibrated on: measure on another split for an unbiased figure).
    """
    src = zoo.resolve(model)
    out = Path(out)
    if src.suffix.lower() not in (".onnx", ".ckpt"):
        raise ValueError(f"{src}: expected a .onnx or .ckpt model to calibrate")
    if out.suffix.lower() != src.suffix.lower():
        raise ValueError(f"{out}: the calibrated copy of {src.name} must be a {src.suffix} file too")
    if out.exists() and out.resolve() == src.resolve():
        raise ValueError(f"{out}: is the model being calibrated; write the calibrated copy to a new file")
    run = evaluate_tiles(src, data, device=device, batch_size=batch_size, min_score=min_score)
    spec = run.spec
    cls = calibrated_thresholds(run.metrics["per_class"], spec.classes, spec.score_threshold)
    new = spec.replace(class_thresholds=cls)
    if src.suffix.lower() == ".onnx":
        write_onnx_spec(src, out, new, note=f"class_thresholds: best F1 per class on {data}")
    else:
        from detector.train.checkpoint import set_class_thresholds

        set_class_thresholds(src, cls, out)
    after = evaluate_full(run.images, spec.classes, threshold=spec.score_threshold, class_thresholds=cls,
                          max_dets=run.max_dets)
    return {"out": str(out), "model": str(src), "data": str(data), "threshold": spec.score_threshold,
            "class_thresholds": dict(zip(spec.classes, cls)), "before": run.metrics, "after": after}


def format_calibration(r: dict) -> str:
    """Per class: the threshold and precision / recall / F1 before and after, for the terminal."""
    b, a = r["before"], r["after"]
    lines = [f"calibrated on {r['data']}: {r['out']}",
             f"  {'class':<12} {'thr':>6} {'prec':>7} {'recall':>7} {'F1':>7}   {'thr':>6} {'prec':>7} "
             f"{'recall':>7} {'F1':>7} {'n':>5}",
             f"  {'':<12} {'(before)':>29}   {'(after)':>29}"]

    def f(v):
        return "   n/a" if v != v else f"{v:.4f}"

    for name, t in r["class_thresholds"].items():
        x, y = b["per_class"][name], a["per_class"][name]
        lines.append(f"  {name:<12} {x['threshold']:>6.3f} {f(x['precision']):>7} {f(x['recall']):>7} "
                     f"{f(x['f1']):>7}   {t:>6.3f} {f(y['precision']):>7} {f(y['recall']):>7} {f(y['f1']):>7} "
                     f"{x['num_gt']:>5}")
    ob, oa = b["operating"], a["operating"]
    lines.append(f"  {'all':<12} {'':>6} {f(ob['precision']):>7} {f(ob['recall']):>7} {f(ob['f1']):>7}   "
                 f"{'':>6} {f(oa['precision']):>7} {f(oa['recall']):>7} {f(oa['f1']):>7}")
    return "\n".join(lines)
