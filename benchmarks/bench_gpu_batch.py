"""Throughput of a batch job: generated GeoTIFF scenes scored by ``detector.predict.predict_files``.

Uses ONNX Runtime's CUDA provider when it is installed and a GPU is present, the CPU otherwise
(and says so). Prints, as the median of ``--repeats`` runs after one warm-up:

- job: tiles/s and megapixels/s of the whole job (read, score, merge, write GeoJSON);
- model: tiles/s of the model alone on in-memory batches of ``--batch-size`` tiles.

With no ``--model`` an untrained network of ``--arch`` is exported first (needs revet[train];
speed does not depend on the weights). Scenes are rendered by the synthetic generator once and
cached in ``--work``.

    python benchmarks/bench_gpu_batch.py --scenes 8 --scene-size 2048 --batch-size 16
    python benchmarks/bench_gpu_batch.py --model run/model.onnx --device cuda --repeats 5
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_scenes(work: Path, n: int, size: int) -> list[str]:
    from detector.datasets.synth import render_image, scene_transform, write_geotiff

    paths = []
    for i in range(n):
        p = work / f"scene_{size}_{i:03d}.tif"
        if not p.exists():
            r = render_image(1000 + i, size, size, contain=False)
            tmp = p.with_name(".tmp." + p.name)
            write_geotiff(tmp, r.image, scene_transform(0.5))
            tmp.replace(p)
        paths.append(str(p))
    return paths


def export_untrained(path: Path, arch: str, tile: int) -> Path:
    if path.exists():
        return path
    try:
        from detector.export.adapter import build_adapter
        from detector.export.onnx_export import export_onnx
        from detector.train.models import build_model
    except ImportError as e:
        sys.exit(f"no --model given and the training extra is missing ({e}); pass --model MODEL.onnx "
                 "or pip install 'revet[train]'")
    from detector.spec import ModelSpec

    spec = ModelSpec(arch=arch, tile_size=tile)
    print(f"exporting an untrained {arch!r} (tile {tile}) to {path} ...", file=sys.stderr)
    export_onnx(build_adapter(build_model(spec), spec).eval(), path)
    return path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="exported .onnx (default: an untrained --arch, exported once)")
    p.add_argument("--arch", default="ssdlite")
    p.add_argument("--tile", type=int, default=512, help="tile size of the untrained model")
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--scene-size", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"])
    p.add_argument("--threads", type=int)
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "revet_bench_gpu_batch"))
    p.add_argument("--json", help="also write the figures to this JSON file")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import onnxruntime as ort

    from detector.predict import predict_files
    from detector.runner import Detector

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(a.model) if a.model else export_untrained(work / f"untrained_{a.arch}_{a.tile}.onnx", a.arch, a.tile)
    det = Detector.load(model, device=a.device, threads=a.threads)
    providers = getattr(det.backend, "providers", ["?"])
    on_gpu = providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    if not on_gpu:
        print(f"note: no GPU provider in use (available: {ort.get_available_providers()}); "
              "measuring on the CPU", file=sys.stderr)
    scenes = make_scenes(work, a.scenes, a.scene_size)
    t = det.spec.tile_size

    # model alone
    rng = np.random.default_rng(0)
    per = det.windows_per_batch(a.batch_size)  # what the runner puts in one call
    batch = rng.integers(0, 255, (per, det.spec.num_bands, t, t)).astype(np.float32)
    det.backend.run(batch)
    model_rates = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        det.backend.run(batch)
        model_rates.append(per / (time.perf_counter() - t0))

    # whole job
    job_tiles, job_mpx = [], []
    out = work / "out"
    for r in range(a.repeats + 1):
        t0 = time.perf_counter()
        s = predict_files(det, scenes, out, batch_size=a.batch_size, formats="geojson")
        dt = time.perf_counter() - t0
        if s["failed"]:
            sys.exit(f"scenes failed: {s['failed']}")
        if r:  # the first run warms caches and the provider
            job_tiles.append(s["tiles"] / dt)
            job_mpx.append(s["megapixels"] / dt)

    fig = {"device": "gpu" if on_gpu else "cpu", "providers": providers, "model": str(model),
           "arch": det.spec.arch, "tile": t, "batch_size": a.batch_size, "scenes": a.scenes,
           "scene_size": a.scene_size, "tiles_per_job": s["tiles"], "repeats": a.repeats,
           "job_tiles_per_s": round(statistics.median(job_tiles), 2),
           "job_megapixels_per_s": round(statistics.median(job_mpx), 3),
           "model_tiles_per_s": round(statistics.median(model_rates), 2)}
    print(f"{fig['device'].upper()} ({providers[0]}), {det.spec.arch} tile {t}, batch {a.batch_size}, "
          f"{a.scenes} scenes of {a.scene_size} px ({s['tiles']} tiles), median of {a.repeats}:")
    print(f"  job:   {fig['job_tiles_per_s']:.1f} tiles/s, {fig['job_megapixels_per_s']:.2f} megapixels/s")
    print(f"  model: {fig['model_tiles_per_s']:.1f} tiles/s")
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=2))
    return fig


if __name__ == "__main__":
    main()
