"""Build the shipped base model ``revet-base``: corpus -> training -> export -> tests -> package.

One function per stage; :func:`build` runs them in order and each skips what is already done,
so a rebuild interrupted anywhere resumes (training from ``run/last.ckpt``). Layout of ``out``::

    data/corpus/{train,val}.json   varied synthetic corpus, the held-out season never drawn
    data/test_standard/test.json   standard style, a fresh seed, 0.5 m (the headline test set)
    data/test_varied/test.json     varied style, a fresh seed, the training seasons
    data/test_holdout/test.json    varied style, the held-out season alone
    run/                           the training run (best.ckpt, last.ckpt, logs, report)
    model.onnx, model.int8.onnx    exported with parity reports
    model.scene{,.int8}.onnx       the same network in 1536 px windows, for scenes
    metrics_<set>.json             test metrics of model.onnx (and .int8) on each test set

``package`` writes ``detector/zoo/revet-base/`` (see :mod:`detector.zoo`): fp16 weights,
both ONNX files and ``card.json`` (hashes, training record, test metrics).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

log = logging.getLogger("revet.base_model")

STAGES = ("data", "train", "export", "evaluate", "package")
TEST_SEED_OFFSET = 1000  # test sets use corpus seed + this (never drawn in training)


def read_config(path) -> tuple[dict, dict]:
    """``(corpus options, training options)`` from the YAML config."""
    p = Path(path)
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("corpus"), dict):
        raise ValueError(f"{p}: expected a mapping with a 'corpus' section")
    corpus = dict(data.pop("corpus"))
    return corpus, data


def test_sets(corpus: dict) -> dict[str, dict]:
    """The three test sets: name -> ``generate_dataset`` keyword arguments (style, gsd, seed)."""
    from detector.datasets.synth.style import Style

    varied = Style.from_name(corpus.get("style", "varied"))
    holdout = corpus.get("holdout")
    seed = int(corpus["seed"]) + TEST_SEED_OFFSET
    sets = {"standard": dict(style=Style(), gsd=0.5, seed=seed),
            "varied": dict(style=varied.without(holdout) if holdout else varied,
                           gsd_range=tuple(corpus["gsd_range"]), seed=seed + 1)}
    if holdout:
        sets["holdout"] = dict(style=varied.only(holdout), gsd_range=tuple(corpus["gsd_range"]), seed=seed + 2)
    return sets


def stage_data(out: Path, corpus: dict, workers: int = 2) -> None:
    from detector.datasets.synth import generate_dataset
    from detector.datasets.synth.style import Style

    style = Style.from_name(corpus.get("style", "varied"), corpus.get("holdout"))
    if not (out / "data" / "corpus" / "val.json").exists():
        log.info("writing the training corpus (%d + %d tiles, style %s)", corpus["n_train"], corpus["n_val"],
                 style.to_dict())
        generate_dataset(out / "data" / "corpus", n_train=int(corpus["n_train"]), n_val=int(corpus["n_val"]),
                         n_test=0, seed=int(corpus["seed"]), scene_size=0, workers=workers, style=style,
                         gsd_range=tuple(corpus["gsd_range"]))
    for name, kw in test_sets(corpus).items():
        if not (out / "data" / f"test_{name}" / "test.json").exists():
            n = corpus["n_test"][name] if isinstance(corpus["n_test"], dict) else corpus["n_test"]
            log.info("writing test set %s (%d tiles)", name, n)
            generate_dataset(out / "data" / f"test_{name}", n_train=0, n_val=0, n_test=int(n),
                             scene_size=0, workers=workers, **kw)


def build(out, config, *, stages=STAGES, workers: int = 2) -> None:
    out = Path(out)
    corpus, train_opts = read_config(config)
    out.mkdir(parents=True, exist_ok=True)
    if "data" in stages:
        stage_data(out, corpus, workers)
    if "train" in stages:
        stage_train(out, train_opts)
    if "export" in stages:
        stage_export(out)
    metrics = None
    if "evaluate" in stages:
        metrics = stage_evaluate(out, corpus)
        (out / "metrics_all.json").write_text(json.dumps(metrics, indent=2, default=float))
    if "package" in stages:
        if metrics is None:
            metrics = json.loads((out / "metrics_all.json").read_text())
        stage_package(out, corpus, train_opts, metrics)


def stage_train(out: Path, train_opts: dict) -> Path:
    """Train (or resume) ``out/run``; returns ``best.ckpt``. A finished run is left as it is."""
    from detector.train.fit import TrainConfig, resume_config, train

    run = out / "run"
    done = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
    # a budget raised in the config after a run finished extends that run (resumed from
    # last.ckpt; the cosine schedule continues from the time already spent)
    extend = {k: train_opts[k] for k in ("max_time", "steps")
              if train_opts.get(k) and (done.get(k) or 0) < train_opts[k]}
    if (run / "budget.json").exists() and (run / "best.ckpt").exists() and not extend:
        log.info("training already finished: %s", run / "best.ckpt")
        return run / "best.ckpt"
    data = out / "data" / "corpus"
    if (run / "last.ckpt").exists():
        log.info("resuming %s%s", run, f" with the budget raised to {extend}" if extend else "")
        return train(resume_config(run, extend), resume=True)
    cfg = TrainConfig(**{**train_opts, "train": str(data / "train.json"), "val": str(data / "val.json"),
                         "out": str(run)})
    return train(cfg)


def stage_export(out: Path) -> dict:
    from detector.export.onnx_export import export_checkpoint

    from detector.export.onnx_export import export_scene_model

    ckpt = out / "run" / "best.ckpt"
    if (out / "model.int8.onnx").exists():
        report = json.loads((out / "model.onnx.parity.json").read_text())
    else:
        report = export_checkpoint(ckpt, out / "model.onnx", int8=True)
    if not (out / "model.scene.int8.onnx").exists():  # the scene companions (larger windows)
        report["scene"] = export_scene_model(ckpt, out / "model.onnx", int8=True)
    return report


def stage_evaluate(out: Path, corpus: dict) -> dict:
    """Metrics of both ONNX files on every test set: ``{set: {"float32": m, "int8": m}}``."""
    from detector.evaluate import evaluate_model

    result = {}
    for name in test_sets(corpus):
        data = out / "data" / f"test_{name}" / "test.json"
        result[name] = {}
        for variant, model in (("float32", "model.onnx"), ("int8", "model.int8.onnx")):
            m = evaluate_model(out / model, data, out=out / f"metrics_{name}_{variant}.json", device="cpu")
            result[name][variant] = m
            log.info("%s %s: mAP@0.5 %.4f %s", name, variant, m["mAP50"],
                     {c: round(v["AP50"], 4) for c, v in m["per_class"].items()})
    return result


def save_fp16_weights(ckpt: Path, dst: Path) -> Path:
    """The checkpoint's network weights in float16 (half the size) with its spec: a file that
    ``revet train --weights`` and :func:`detector.train.checkpoint.load_checkpoint` read."""
    import torch

    from detector.spec import SPEC_KEY
    from detector.train.checkpoint import model_state, read_checkpoint

    c = read_checkpoint(ckpt)
    state = {f"model.{k}": (v.half() if v.is_floating_point() else v) for k, v in model_state(c).items()}
    tmp = dst.with_name(f".{dst.name}.tmp")
    torch.save({SPEC_KEY: c[SPEC_KEY], "state_dict": state}, tmp)
    tmp.replace(dst)
    return dst


def stage_package(out: Path, corpus: dict, train_opts: dict, metrics: dict, dest: Path | None = None) -> Path:
    """Copy the model into the package (``detector/zoo/revet-base/``) with ``card.json``."""
    import shutil

    from detector import zoo
    from detector.hashing import sha256_file

    dest = Path(dest or zoo.ZOO_DIR / "revet-base")
    dest.mkdir(parents=True, exist_ok=True)
    save_fp16_weights(out / "run" / "best.ckpt", dest / zoo.WEIGHTS)
    for f in (zoo.ONNX, zoo.ONNX_INT8, *zoo.SCENE_FILES):
        shutil.copyfile(out / f, dest / f)
    budget = json.loads((out / "run" / "budget.json").read_text())
    # the exported spec, with the operating threshold calibrated after training (run/spec.json
    # is written when training starts, before calibration)
    import onnx

    from detector.spec import SPEC_KEY
    meta = {p.key: p.value for p in onnx.load(out / zoo.ONNX, load_external_data=False).metadata_props}
    spec = json.loads(meta[SPEC_KEY])

    def brief(m: dict) -> dict:
        return {"mAP50": round(m["mAP50"], 4), "mAP50_95": round(m["mAP50_95"], 4),
                "AP50": {c: round(v["AP50"], 4) for c, v in m["per_class"].items()}}

    card = {"name": "revet-base", "arch": spec["arch"], "classes": spec["classes"], "spec": spec,
            "files": {f: sha256_file(dest / f) for f in (zoo.WEIGHTS, zoo.ONNX, zoo.ONNX_INT8, *zoo.SCENE_FILES)},
            "training": {"corpus": corpus, "options": train_opts, "steps": budget.get("steps_done"),
                         "train_minutes": round(budget.get("train_seconds", 0) / 60, 1),
                         "precision": budget.get("precision"), "hardware": budget.get("hardware")},
            "test": {name: {v: brief(m) for v, m in d.items()} for name, d in metrics.items()},
            "rebuild": "python scripts/build_base_model.py --out runs/revet-base"}
    (dest / zoo.CARD).write_text(json.dumps(card, indent=2) + "\n")
    log.info("packaged revet-base into %s", dest)
    return dest
