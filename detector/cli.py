"""``revet`` command line. Each subcommand parses arguments and calls one library function.

Training-side commands (train, export, demo, and evaluate on a .ckpt) import torch lazily, so
``revet predict`` works with the base (torch-free) install.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from detector.cli_args import Parser

log = logging.getLogger("revet")


def _synth(a) -> int:
    from detector.datasets.synth import generate_dataset
    from detector.datasets.synth.style import Style

    summary = generate_dataset(a.out_dir, n_train=a.train, n_val=a.val, n_test=a.test,
                               scene_size=a.scene_size, gsd=a.gsd, seed=a.seed, workers=a.workers,
                               negatives=not a.no_negatives, preview=a.preview, multiband16=a.multiband16,
                               targets=not a.no_targets, style=Style.from_name(a.style, a.holdout),
                               gsd_range=tuple(a.gsd_range) if a.gsd_range else None, pairs=a.pairs)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _train(a) -> int:
    from detector.train.config import flag_overrides
    from detector.train.fit import config_from_file, resume_config, train

    overrides = flag_overrides(a)
    if a.resume:
        best = train(resume_config(a.resume, {k: v for k, v in overrides.items() if k != "out"}), resume=True)
    else:
        best = train(config_from_file(a.config, overrides), overwrite=a.overwrite)
    print(best)
    return 0


def _export(a) -> int:
    from detector.export.onnx_export import ParityError, export_checkpoint, export_scene_model

    try:
        report = export_checkpoint(a.checkpoint, a.out, verify=a.verify, fp16=a.fp16, int8=a.int8,
                                   calibrate=a.calibrate, tile_size=a.tile_size)
        if a.scene_window:
            report["scene"] = export_scene_model(a.checkpoint, a.out, a.scene_window, verify=a.verify,
                                                 fp16=a.fp16, int8=a.int8, calibrate=a.calibrate)
    except ParityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(json.dumps(report, indent=2))
    return 0


def _demo(a) -> int:
    from detector.pipeline import run_demo

    out = run_demo(a.out, minutes=a.minutes, n_train=a.train, seed=a.seed, model=a.model,
                   from_scratch=a.from_scratch)
    print(f"results in {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="revet", description="Find bunkers, revetments and shelters in overhead imagery.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="generate a synthetic tile dataset (COCO) and a GeoTIFF scene")
    s.add_argument("out_dir")
    s.add_argument("--train", type=int, default=300)
    s.add_argument("--val", type=int, default=60)
    s.add_argument("--test", type=int, default=100)
    s.add_argument("--scene-size", type=int, default=2048)
    s.add_argument("--gsd", type=float, default=0.5, help="metres per pixel")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--no-negatives", action="store_true", help="leave out hard-negative look-alikes")
    s.add_argument("--no-targets", action="store_true",
                   help="negatives-only images (no labels): a set to count false positives on")
    s.add_argument("--preview", action="store_true", help="also write PNG previews with boxes")
    s.add_argument("--multiband16", action="store_true",
                   help="16-bit 4-band (R, G, B, NIR) imagery with nodata borders instead of 8-bit RGB")
    s.add_argument("--style", choices=("standard", "varied"), default="standard",
                   help="varied: terrain, materials, light and sensor as wide as the generator goes")
    s.add_argument("--holdout", choices=("spring", "summer", "autumn", "winter", "arid"),
                   help="never draw this season (a leave-one-style-out training set)")
    s.add_argument("--gsd-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="draw each tile's metres per pixel from this range (the scene keeps --gsd)")
    s.add_argument("--pairs", type=int, default=0,
                   help="also write this many two-date scene pairs (OUT/pairs/pair_NNN, docs/sites.md)")
    s.set_defaults(func=_synth)

    t = sub.add_parser("train", help="train a detector on COCO datasets")
    from detector.train.config import add_config_flags  # torch-free: the options' one home

    t.add_argument("--config", help="YAML file of training options (the names below, with _); flags override it")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from RUN_DIR/last.ckpt")
    t.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out (refused without)")
    add_config_flags(t)
    t.set_defaults(func=_train)

    e = sub.add_parser("export", help="checkpoint -> ONNX, with a parity check")
    e.add_argument("checkpoint")
    e.add_argument("--out", required=True)
    e.add_argument("--verify", help="COCO JSON of tiles for the parity check (default: the run's val set)")
    e.add_argument("--fp16", action="store_true", help="also write MODEL.fp16.onnx (for GPUs) and report its mAP change")
    e.add_argument("--int8", action="store_true", help="also write a static int8 MODEL.int8.onnx and report its mAP change")
    e.add_argument("--calibrate", help="COCO JSON of tiles for int8 calibration (default: the verification set)")
    e.add_argument("--tile-size", type=int,
                   help="window of the exported model in pixels (default: the training tile size); "
                        "1024 scores scenes about 1.3x faster than 512, smaller tiles are padded")
    e.add_argument("--scene-window", type=int, metavar="PX",
                   help="also write MODEL.scene.onnx (and its --int8/--fp16 variants): the same network in "
                        "PX-pixel windows, which revet predict uses for scenes large enough to gain "
                        "(1536 recommended: about 1.5x the scene throughput of 512 px at overlap 128)")
    e.set_defaults(func=_export)

    d = sub.add_parser("demo", help="the whole path on synthetic data: synth, train, export, predict, evaluate")
    d.add_argument("--out", default="revet-demo")
    d.add_argument("--minutes", type=float, default=None,
                   help="training time budget (default: 5 fine-tuning revet-base, 10 from scratch)")
    d.add_argument("--from-scratch", action="store_true",
                   help="train a new model instead of fine-tuning the shipped base model revet-base")
    d.add_argument("--train", type=int, default=400, help="synthetic training tiles")
    d.add_argument("--model", default=None)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)

    from detector.datasets.data_cli import add_data_commands
    from detector.evaluate_cli import add_evaluate_command
    from detector.predict_cli import add_predict_command

    add_predict_command(sub)
    from detector.review_cli import add_review_command
    from detector.sites_cli import add_sites_commands

    add_review_command(sub)
    add_sites_commands(sub)
    add_evaluate_command(sub)
    add_data_commands(sub)
    return p


# modules of the ``train`` extra: a base (scoring-only) install lacks them
TRAIN_EXTRAS = {"torch", "torchvision", "lightning", "albumentations", "cv2", "onnx", "onnxscript", "tensorboard"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").propagate = False
    try:
        return args.func(args)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TRAIN_EXTRAS:
            raise
        print(f"error: `revet {args.command}` needs the training extras (module {e.name!r} is not installed): "
              "pip install 'revet[train]'", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
