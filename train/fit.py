"""One training run: config -> spec, data, module, Lightning trainer -> ``RUN_DIR/best.ckpt``.

The options are :class:`~detector.train.config.TrainConfig` (:mod:`detector.train.config`: YAML
and command-line flags from the same fields). The resolved config is saved in the run folder.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

from detector import raster
from detector.datasets.coco import read_coco
from detector.datasets.labels import LabelSet
from detector.spec import ModelSpec
from detector.train.config import TrainConfig, config_from_file  # noqa: F401 - config_from_file: callers import it here

log = logging.getLogger("revet.train")

# Fewest optimizer steps a run should get (batch 16): from scratch the default model needs a few
# thousand on the synthetic tiles; a fine-tune from revet-base adapts to a new seed in tens
# (the demo's fine-tune: test mAP@0.5 0.989 after 41 steps, 0.985 after 124, AVX2-emulated CPU).
MIN_STEPS = {"from-scratch": 2000, "fine-tune": 40}


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` -> ``bf16-mixed`` on GPUs with bf16 and on CPUs with native bf16
    (:func:`~detector.train.callbacks.cpu_bf16`; about 2x faster training there, weights kept
    in float32), else ``32-true``."""
    if precision != "auto":
        return precision
    import torch

    from detector.train.callbacks import cpu_bf16

    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_bf16() else "32-true"


def _default_bands(path) -> list[int]:
    with raster.open_raster(path) as ds:
        alpha = raster.alpha_band(ds)
        return [b for b in range(1, ds.count + 1) if b != alpha]


def band_stretch(labels: LabelSet, bands, *, samples: int = 32, low: float = 1.0, high: float = 99.0,
                 seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-band percentile stretch (offset, scale) from up to ``samples`` training images,
    ignoring nodata: ``x01 = (raw - p_low) / (p_high - p_low)``."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(labels.images), size=min(samples, len(labels.images)), replace=False)
    values = [[] for _ in bands]
    for i in idx:
        image, valid, _ = raster.read_image(labels.images[i].path, bands)
        px = image[valid]
        if len(px) > 20000:
            px = px[rng.choice(len(px), 20000, replace=False)]
        for b in range(len(bands)):
            values[b].append(px[:, b].astype(np.float64))
    offset, scale = [], []
    for b, v in enumerate(values):
        v = np.concatenate(v) if v else np.zeros(1)
        lo, hi = np.percentile(v, [low, high]) if len(v) else (0.0, 1.0)
        offset.append(float(lo))
        scale.append(float(max(hi - lo, 1e-6)))
    return offset, scale


def make_spec(cfg: TrainConfig, labels: LabelSet) -> ModelSpec:
    """Derive the model spec from the config and the training set's first image."""
    if not labels.images:
        raise ValueError(f"{labels.source}: training set has no images")
    first = labels.images[0].path
    with raster.open_raster(first) as ds:
        info = raster.raster_info(ds)
    bands = list(cfg.bands) if cfg.bands else _default_bands(first)
    raster.check_bands(first, info.count, bands)
    if info.dtype == "uint8":
        offset, scale = [0.0] * len(bands), [255.0] * len(bands)
    else:
        offset, scale = band_stretch(labels, bands, seed=cfg.seed)
    rgb_mean, rgb_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    mean = [rgb_mean[i] if i < 3 else 0.45 for i in range(len(bands))]
    std = [rgb_std[i] if i < 3 else 0.225 for i in range(len(bands))]
    return ModelSpec(classes=tuple(labels.classes), arch=cfg.arch, bands=tuple(bands), dtype=info.dtype,
                     offset=tuple(offset), scale=tuple(scale), mean=tuple(mean), std=tuple(std),
                     tile_size=cfg.tile_size, overlap=cfg.overlap, gsd=cfg.gsd or info.gsd)


def load_labels(cfg: TrainConfig) -> tuple[LabelSet, LabelSet]:
    """Read train/val COCO files; classes matched by name (``cfg.classes`` or the train set's)."""
    train = read_coco(cfg.train, check_files=True)
    val = read_coco(cfg.val, check_files=True)
    classes = cfg.classes or train.classes
    return train.remap(classes), val.remap(classes)


def _loggers(out: Path) -> list:
    """CSV logs always (``logs/metrics.csv``); TensorBoard too when it is installed."""
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(out, name="logs", version="")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        import tensorboard  # noqa: F401

        loggers.append(TensorBoardLogger(out, name="tensorboard", version=""))
    except ImportError:
        pass
    return loggers


def _read_csv(path: Path) -> list[dict]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _merge_csv(path: Path, earlier: list[dict]) -> None:
    """Write ``earlier`` rows (those before the resumed run's first step) then the new ones."""
    import csv

    new = _read_csv(path)
    first = min((int(r["step"]) for r in new if r.get("step")), default=None)
    rows = [r for r in earlier if first is None or not r.get("step") or int(r["step"]) < first] + new
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def resume_config(run_dir: str | os.PathLike, overrides: dict) -> TrainConfig:
    """The config of an earlier run (``RUN_DIR/config.yaml``) with ``overrides`` applied."""
    run = Path(run_dir)
    if not (run / "last.ckpt").exists():
        raise FileNotFoundError(f"{run}: no last.ckpt to resume from")
    return config_from_file(run / "config.yaml", {**overrides, "out": str(run)})


def world_size(cfg: TrainConfig) -> int:
    """Training processes the run will have: ``devices`` when it is a count (or a list of
    devices), every visible GPU for ``auto`` on a GPU machine, else 1."""
    import torch

    d = cfg.devices
    if isinstance(d, int) and d > 0:
        return d
    if isinstance(d, str) and "," in d:
        return len([x for x in d.split(",") if x.strip()])
    if isinstance(d, str) and d.strip().isdigit():
        return max(1, int(d))
    gpu = cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.cuda.device_count() if gpu and d in ("auto", -1, "-1") else 1


RUN_FILES = ("best.ckpt", "last.ckpt")  # a folder holding one of these is an earlier run


def check_resumable(path: Path) -> None:
    """Refuse a ``last.ckpt`` that is not a readable Revet training checkpoint (truncated,
    tampered, or needing arbitrary unpickling: read with ``weights_only=True``), in one line."""
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means the file cannot be resumed
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a readable training checkpoint ({first}); expected the last.ckpt "
                         "a Revet run wrote") from None
    if not isinstance(ck, dict) or "state_dict" not in ck or "optimizer_states" not in ck:
        raise ValueError(f"{path}: not a Lightning training checkpoint (no state_dict/optimizer_states); "
                         "expected the last.ckpt a Revet run wrote")


def prepare_run(cfg: TrainConfig, *, resume: bool, overwrite: bool) -> Path:
    """Check ``cfg.out`` may take this run, create it, save ``config.yaml``; returns it."""
    out = Path(cfg.out)
    if resume:
        check_resumable(out / "last.ckpt")
    elif not overwrite and any((out / f).exists() for f in RUN_FILES):
        raise ValueError(f"{out}: holds an earlier run ({', '.join(f for f in RUN_FILES if (out / f).exists())}); "
                         "continue it with --resume, replace it with --overwrite, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return out


def build_data(cfg: TrainConfig, spec: ModelSpec, train_labels: LabelSet, val_labels: LabelSet):
    """The Lightning data module (augmentation from ``cfg.augment``) and the optimizer steps
    per epoch (global: each of the world's processes takes its share of the images)."""
    from detector.datasets.augment import from_config
    from detector.datasets.torchdata import DetectionDataModule, DetectionDataset
    from detector.train.models import BACKGROUND_OFFSET

    off = BACKGROUND_OFFSET[cfg.arch]
    cache = cfg.num_workers == 0  # workers would each hold their own copy
    tf = from_config(cfg.augment, photometric=cfg.photometric)
    data = DetectionDataModule(DetectionDataset(train_labels, spec, transform=tf, label_offset=off,
                                                crop=cfg.crop, cache=cache),
                               DetectionDataset(val_labels, spec, label_offset=off, cache=cache),
                               batch_size=cfg.batch_size, num_workers=cfg.num_workers, balance=cfg.balance)
    steps_per_epoch = max(1, len(train_labels.images) // (cfg.batch_size * world_size(cfg)))
    return data, steps_per_epoch


def build_module(cfg: TrainConfig, spec: ModelSpec, max_steps: int, out: Path, *, resume: bool):
    """The LightningModule, with ``cfg.weights`` loaded (report in ``weights_report.json``;
    not on resume: the checkpoint holds the weights) and ``cfg.freeze`` stages frozen."""
    from detector.train.module import DetectionModule

    module = DetectionModule(spec.to_json(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             optimizer=cfg.optimizer, warmup_steps=cfg.warmup_steps,
                             max_steps=max_steps, max_minutes=cfg.max_time)
    if cfg.weights and cfg.weights != "none" and not resume:
        from detector.train.weights import format_report, load_weights

        report = load_weights(module.model, spec, cfg.weights)
        (out / "weights_report.json").write_text(json.dumps(report, indent=2, default=str))
        log.info("%s", format_report(report))
    if cfg.freeze:
        from detector.train.weights import freeze

        log.info("froze %d parameters", freeze(module.model, backbone_stages=cfg.freeze))
    return module


def build_callbacks(cfg: TrainConfig, out: Path, max_steps: int, steps_per_epoch: int, *, resume: bool) -> list:
    """``[best, last, budget, ...]``: best.ckpt (by val mAP@0.5), last.ckpt (every epoch, for
    --resume), the step budget, then early stopping and timed checkpoints when asked for."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from detector.train.callbacks import StepBudget

    best = ModelCheckpoint(dirpath=out, filename="best", monitor="val/mAP50", mode="max",
                           save_top_k=1, auto_insert_metric_name=False)
    # monitor=None + top_k=1: overwritten at the end of every training epoch (for --resume)
    last = ModelCheckpoint(dirpath=out, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                           save_on_train_epoch_end=True, enable_version_counter=False)
    start = "fine-tune" if bool(cfg.weights and cfg.weights not in ("none", "imagenet")) or resume else "from-scratch"
    budget = StepBudget(max_minutes=cfg.max_time, max_steps=max_steps, steps_per_epoch=steps_per_epoch,
                        min_steps=MIN_STEPS[start], start=start)
    callbacks: list = [best, last, budget]
    if cfg.patience:
        from lightning.pytorch.callbacks import EarlyStopping

        callbacks.append(EarlyStopping(monitor="val/mAP50", mode="max", patience=cfg.patience))
    if cfg.save_at_minutes:
        from detector.train.callbacks import TimedCheckpoints

        callbacks.append(TimedCheckpoints(out, cfg.save_at_minutes))
    return callbacks


def build_trainer(cfg: TrainConfig, out: Path, callbacks: list, steps_per_epoch: int):
    """The Lightning trainer: limits (epochs, steps, minutes), devices, precision, loggers."""
    import lightning as L

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    return L.Trainer(
        default_root_dir=out, max_epochs=cfg.epochs, max_steps=cfg.steps or -1,
        max_time={"minutes": cfg.max_time} if cfg.max_time else None,
        accelerator=cfg.accelerator, devices=cfg.devices,
        precision=resolve_precision(cfg.precision, cfg.accelerator),
        callbacks=callbacks, logger=_loggers(out),
        check_val_every_n_epoch=cfg.val_every, log_every_n_steps=max(1, min(10, steps_per_epoch)),
        enable_progress_bar=os.isatty(1), enable_model_summary=False, deterministic=False,
    )


def validate_last(trainer, module, data, best, out: Path) -> None:
    """A run stopped by its time or step limit between validations: its last (most annealed)
    weights were never compared with best.ckpt; validate them and keep them if better."""
    import torch

    if module.validated_step == trainer.global_step or trainer.global_step == 0:
        return
    score = trainer.validate(module, datamodule=data, verbose=False)[0].get("val/mAP50")
    prev = best.best_model_score
    log.info("final validation at step %d: mAP@0.5 %.4f (best so far %s)", trainer.global_step, score,
             "none" if prev is None else f"{float(prev):.4f}")
    if score is not None and (prev is None or score > float(prev)):
        trainer.save_checkpoint(out / "best.ckpt")
        best.best_model_path, best.best_model_score = str(out / "best.ckpt"), torch.tensor(score)


def calibrate(cfg: TrainConfig, path: Path, out: Path, seconds: float) -> None:
    """The run report (``cfg.report``) and the operating points written into ``path``'s spec:
    the pooled best-F1 score threshold on validation and one per class (each class's own best
    F1; the pooled one where a class has no validation objects or is never found)."""
    thr = f1 = None
    per_class: dict = {}  # per class of the validation metrics: its own best F1 ("best_f1")
    if cfg.report:
        from detector.train.run_report import write_run_report

        summary = write_run_report(out, checkpoint=path, train_seconds=seconds)
        thr, f1 = summary.get("best_f1_threshold"), summary.get("best_f1")
        per_class = summary.get("per_class") or {}
    elif cfg.calibrate_threshold and cfg.val:
        from detector.evaluate import evaluate_tiles

        metrics = evaluate_tiles(path, cfg.val, device="cpu").metrics
        best_f1 = metrics["sweep"]["best"]
        thr, f1 = best_f1.get("threshold"), best_f1.get("f1")
        per_class = metrics["per_class"]
    # NaN when nothing was found on validation: keep the default threshold then
    usable = thr is not None and f1 is not None and math.isfinite(thr) and math.isfinite(f1)
    if not (cfg.calibrate_threshold and usable and f1 > 0 and 0 < thr <= 1):
        return
    from detector.eval_run import calibrated_thresholds
    from detector.train.checkpoint import set_class_thresholds, set_score_threshold

    # The best-F1 score on the validation set becomes the default operating point; users lower
    # it with --min-score for a high-recall first pass. One threshold for all classes keeps a
    # class the model scores lower (bunkers) at low recall, so the runner keeps a detection at
    # its class's threshold; score_threshold stays the pooled one (reports, sweeps) and
    # --min-score / --threshold still set one for every class.
    spec = set_score_threshold(path, thr)
    log.info("operating score threshold set to %.3f (best F1 %.3f on validation)", thr, f1)
    cls = calibrated_thresholds(per_class, spec.classes, spec.score_threshold)
    set_class_thresholds(path, cls)
    log.info("per-class thresholds set: %s", ", ".join(f"{c} {t:.3f}" for c, t in zip(spec.classes, cls)))


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Run training; returns the path of ``best.ckpt`` (best validation mAP@0.5).

    With ``resume``, training continues from ``cfg.out/last.ckpt`` (saved at the end of every
    epoch) with the optimizer, schedule and epoch counter restored. A new run into a folder
    that holds an earlier run's checkpoints is refused unless ``overwrite`` (they would be
    deleted before the new run had anything to replace them with).
    """
    import lightning as L
    import torch

    from detector.train.callbacks import hardware
    from detector.train.models import available

    if cfg.arch not in available():
        raise ValueError(f"unknown architecture {cfg.arch!r}; available: {available()}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    out = prepare_run(cfg, resume=resume, overwrite=overwrite)
    train_labels, val_labels = load_labels(cfg)
    spec = make_spec(cfg, train_labels)
    (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))

    data, steps_per_epoch = build_data(cfg, spec, train_labels, val_labels)
    max_steps = cfg.steps or steps_per_epoch * cfg.epochs
    module = build_module(cfg, spec, max_steps, out, resume=resume)
    if not resume:  # the inputs all read: now the earlier run's checkpoints go
        for stale in RUN_FILES:
            (out / stale).unlink(missing_ok=True)
    callbacks = build_callbacks(cfg, out, max_steps, steps_per_epoch, resume=resume)
    best, budget = callbacks[0], callbacks[2]
    trainer = build_trainer(cfg, out, callbacks, steps_per_epoch)

    t0 = time.monotonic()
    earlier = _read_csv(out / "logs" / "metrics.csv") if resume else []
    trainer.fit(module, datamodule=data, ckpt_path=str(out / "last.ckpt") if resume else None)
    validate_last(trainer, module, data, best, out)
    seconds = time.monotonic() - t0
    if trainer.global_rank != 0:  # what follows writes the run's files: once, by rank zero
        return out / "best.ckpt"
    if earlier:  # Lightning's CSV logger starts the file afresh on resume: keep the earlier rows
        _merge_csv(out / "logs" / "metrics.csv", earlier)
    (out / "budget.json").write_text(json.dumps({
        **budget.record, "steps_done": trainer.global_step, "train_seconds": module.train_seconds(),
        "precision": resolve_precision(cfg.precision, cfg.accelerator), "hardware": hardware()}, indent=2))
    log.info("trained %d epochs in %.1f min", trainer.current_epoch, seconds / 60)
    path = Path(best.best_model_path) if best.best_model_path else out / "last.ckpt"
    if path.exists() and path.resolve() != (out / "best.ckpt").resolve():
        shutil.copyfile(path, out / "best.ckpt")
        path = out / "best.ckpt"
    calibrate(cfg, path, out, seconds)
    return path
