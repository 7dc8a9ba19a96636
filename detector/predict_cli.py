"""``revet predict``: parse arguments, call :func:`detector.predict.predict_files`. Torch-free.

Registered by ``detector.cli`` through :func:`add_predict_command`; also runnable on its own as
``python -m detector.predict_cli MODEL INPUT... --out OUT``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

EPILOG = """\
inputs: image files, folders, glob patterns (quote them), manifests (.txt, one path per line,
relative to the manifest) and COCO dataset JSON files (COCO results then use its image and
category ids).

--out FILE (ends in .geojson, .gpkg, .csv, or .json for COCO results): every scene in that one
file, written at the end. --out FOLDER (anything else): one file per scene and format
(<name>.geojson, .gpkg, .csv, .coco.json, .quicklook.png), written atomically, a journal of
finished scenes (resumable with --resume), coco_results.json / all_detections.csv for the whole
job, and summary.json.

GDAL paths are inputs too: /vsis3/bucket/scene.tif, /vsicurl/https://host/scene.tif (cloud-optimized
GeoTIFFs: only the blocks the windows need are fetched), s3:// and https:// URLs.

engines: --engine single (default: this process) or --engine ray (revet[ray]): windows read by Ray
tasks, scored by --actors Detector actors (--gpus-per-actor G each, --threads T each), merged and
written here, on a new local Ray instance or the cluster at --address (host:port, or auto).
--shard K/N (no Ray needed): this job's share of the inputs for job arrays; give every shard the same
inputs and --out; each writes only its own files, the last one the job-wide files.

exit status: 0 all scenes scored; 2 some inputs could not be read (listed in the summary);
1 the job could not start (bad model, options or --out, a GPU asked for that cannot be used);
64 the command line is wrong.

examples:
  revet predict model.onnx scene.tif --out scene.geojson
  revet predict revet-base scene.tif --out scene.geojson      # the shipped base model
  revet predict model.onnx 'scenes/*.tif' --out results/ --format geojson,gpkg,csv --quicklook
  revet predict model.onnx manifest.txt --out results/ --resume --device cuda --batch-size 32
  revet predict model.onnx data/test.json --out preds/ --format coco --min-score 0.01
  revet predict model.onnx manifest.txt --out results/ --engine ray --address auto --gpus-per-actor 1 --device cuda
  revet predict model.onnx manifest.txt --out results/ --shard $((SLURM_ARRAY_TASK_ID + 1))/16 --resume
"""


def _checked_by(parse):
    """An argparse ``type`` that keeps the text but refuses what ``parse`` raises ValueError on."""
    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    return check


def _device(text: str) -> str:
    from detector.backends import parse_device

    return _checked_by(parse_device)(text)


def _shard(text: str) -> str:
    from detector.predict import parse_shard

    return _checked_by(parse_shard)(text)


def add_predict_command(subparsers) -> None:
    """Add the ``predict`` subcommand to an ``argparse`` subparsers object."""
    r = subparsers.add_parser(
        "predict", help="score tiles or GeoTIFF scenes with an ONNX model (no torch needed)",
        description="Score images or scenes of any size with an exported model; batch jobs are resumable.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("model", help="exported .onnx model, a shipped model by name (revet-base, revet-base:int8), or a .ckpt (needs revet[train])")
    r.add_argument("inputs", nargs="+", help="files, folders, globs, .txt manifests, COCO dataset .json")
    r.add_argument("--out", required=True, help="output file (.geojson/.gpkg/.csv/.json) or folder")
    r.add_argument("--format", dest="formats", default=None,
                   help="comma-separated: geojson,gpkg,csv,coco (folder --out; default geojson)")
    r.add_argument("--min-score", type=float,
                   help="minimum score, one for every class (default: the model's thresholds, per class where its "
                        "spec has class_thresholds)")
    r.add_argument("--overlap", type=int, help="window overlap in pixels (default: the model's)")
    r.add_argument("--batch-size", type=int, default=8,
                   help="windows per model call, counted as 512-px windows (a 1024-px model takes a quarter)")
    r.add_argument("--device", default="auto", type=_device,
                   help="auto (CUDA if onnxruntime-gpu can use it, else CPU), cpu, cuda, cuda:N, tensorrt, "
                        "tensorrt:N; a GPU asked for by name is used or the job fails (no silent CPU fallback)")
    r.add_argument("--trt-cache", metavar="DIR", help="folder for TensorRT engines (built once per model and GPU)")
    r.add_argument("--threads", type=int,
                   help="CPU threads for ONNX Runtime (default: all; with --engine ray: per actor, default "
                        "the CPUs divided among the actors)")
    r.add_argument("--engine", default="single", choices=["single", "ray"],
                   help="single: this process (default); ray: Ray Data over local cores or a cluster (revet[ray])")
    r.add_argument("--address", help="--engine ray: the Ray cluster to join (host:port or auto; default: "
                                     "start a local Ray instance)")
    r.add_argument("--actors", type=int, help="--engine ray: Detector actors (default: one per --gpus-per-actor "
                                              "share of the GPUs, or one per 8 CPUs)")
    r.add_argument("--gpus-per-actor", type=float, help="--engine ray: GPUs per actor (0.5: two actors share one)")
    r.add_argument("--shard", type=_shard, metavar="K/N",
                   help="score only shard K of N of the inputs (job arrays); folder --out")
    r.add_argument("--resume", action="store_true",
                   help="skip scenes a killed earlier run of this job already finished (folder --out)")
    r.add_argument("--max-megapixels", type=float, default=None, metavar="MP",
                   help="refuse a scene larger than this many megapixels, from its header, before reading it "
                        "(default %.0f: a header can claim 10^6 x 10^6 px with no data behind it)" % 20_000)
    r.add_argument("--allow-network", action="store_true",
                   help="let local VRT inputs read network sources (http://, /vsicurl/, /vsis3/ ...); without it "
                        "only inputs that are network paths themselves are fetched")
    r.add_argument("--no-skip", action="store_true",
                   help="score every window with data: no first pass skipping windows it finds certainly empty "
                        "(water, cloud, flat fields; detector.prescreen)")
    r.add_argument("--one-class", action="store_true",
                   help="one class per object: where boxes of different classes cover the same ground (IoU >= the "
                        "model's NMS IoU) keep the best-scoring and record the other as runner_up / runner_up_score")
    r.add_argument("--quicklook", action="store_true", help="also write a PNG of each scene with its boxes")
    r.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    r.set_defaults(func=run_predict)


def run_predict(a) -> int:
    import os

    from detector.predict import predict_files
    from detector.raster import ALLOW_NETWORK_ENV

    if getattr(a, "allow_network", False):
        os.environ[ALLOW_NETWORK_ENV] = "1"  # read by raster.open_raster here and in Ray workers started after

    summary = predict_files(a.model, a.inputs, a.out, min_score=a.min_score, device=a.device,
                            batch_size=a.batch_size, overlap=a.overlap, formats=a.formats,
                            resume=a.resume, threads=a.threads, quicklook=a.quicklook,
                            progress=not a.no_progress, engine=getattr(a, "engine", "single"),
                            shard=getattr(a, "shard", None), address=getattr(a, "address", None),
                            actors=getattr(a, "actors", None), gpus_per_actor=getattr(a, "gpus_per_actor", None),
                            trt_cache=getattr(a, "trt_cache", None), skip=not getattr(a, "no_skip", False),
                            one_class=getattr(a, "one_class", False),
                            **({"max_megapixels": a.max_megapixels} if getattr(a, "max_megapixels", None) else {}))
    brief = {k: v for k, v in summary.items() if k != "scenes"}
    print(json.dumps(brief, indent=2))
    if summary["failed"]:
        print(f"error: {len(summary['failed'])} of {summary['inputs']} inputs failed: "
              + ", ".join(f["path"] for f in summary["failed"][:10])
              + (" ..." if len(summary["failed"]) > 10 else ""), file=sys.stderr)
    return 0 if not summary["failed"] else 2


def main(argv: list[str] | None = None) -> int:
    from detector.cli_args import Parser

    p = Parser(prog="revet")
    p.add_argument("-v", "--verbose", action="store_true")
    add_predict_command(p.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    if "predict" not in argv[:2]:
        argv.insert(1 if argv and argv[0] in ("-v", "--verbose") else 0, "predict")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return a.func(a)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
