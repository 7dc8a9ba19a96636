"""Scene throughput and peak memory of the runner, and ONNX Runtime against PyTorch eager.

    python benchmarks/bench_scene.py [--model MODEL.onnx] [--sizes 2048 8192 16384] [--repeats 3]

Without --model, the default architecture is built with random weights and exported (speed
does not depend on the weights). Each scene is scored in a fresh subprocess so that its peak
RSS (ru_maxrss) is its own. Prints megapixels/s (median of repeats) and peak memory per scene
size, then tiles/s of ONNX Runtime and of PyTorch eager on the same batches, and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_scene(path: Path, size: int, seed: int = 0) -> Path:
    """A ``size`` x ``size`` 3-band uint8 GeoTIFF (tiled, deflate), written block by block
    from a rendered 1024-px synthetic image mirrored across the scene."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from detector.datasets.synth import render_tile

    if path.exists():
        return path
    base, _, _ = render_tile(seed, size=1024)
    prof = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32637",
                transform=from_origin(500000, 4000000, 0.5, 0.5), tiled=True, blockxsize=512,
                blockysize=512, compress="deflate")
    with rasterio.open(path, "w", **prof) as ds:
        for r in range(0, size, 1024):
            for c in range(0, size, 1024):
                blk = base[:: 1 if (r // 1024) % 2 == 0 else -1, :: 1 if (c // 1024) % 2 == 0 else -1]
                h, w = min(1024, size - r), min(1024, size - c)
                ds.write(np.moveaxis(blk[:h, :w], -1, 0), window=Window(c, r, w, h))
    return path


def default_model(out: Path, arch: str) -> Path:
    import torch

    from detector.export.adapter import build_adapter
    from detector.export.onnx_export import export_onnx
    from detector.spec import ModelSpec
    from detector.train.models import build_model

    torch.manual_seed(0)
    spec = ModelSpec(arch=arch, overlap=128, gsd=0.5)
    export_onnx(build_adapter(build_model(spec), spec).eval(), out)
    return out


def score_once(model: str, scene: str, batch: int, threads: int | None) -> None:
    """Child process: score one scene, print seconds and peak RSS as JSON."""
    import resource

    from detector.runner import Detector

    det = Detector.load(model, device="auto", threads=threads)
    t = time.perf_counter()
    r = det.predict_scene(scene, batch_size=batch)
    dt = time.perf_counter() - t
    print(json.dumps({"seconds": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "detections": len(r), "windows": r.extra["windows"]}))


def onnx_vs_torch(model_path: Path, arch: str, repeats: int, batch: int) -> dict:
    import torch

    from detector.backends import OnnxBackend
    from detector.export.adapter import build_adapter
    from detector.export.torch_backend import TorchBackend
    from detector.train.models import build_model

    ob = OnnxBackend(model_path, device="cpu")
    torch.manual_seed(0)
    tb = TorchBackend(build_adapter(build_model(ob.spec), ob.spec).eval())
    x = np.random.default_rng(0).integers(0, 255, (batch, 3, ob.spec.tile_size, ob.spec.tile_size)).astype(np.float32)
    res = {}
    for name, be in (("onnxruntime", ob), ("torch_eager", tb)):
        be.run(x)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            be.run(x)
            ts.append(time.perf_counter() - t)
        res[name] = batch / statistics.median(ts)
    res["ratio"] = res["onnxruntime"] / res["torch_eager"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", nargs="*", help="one or more .onnx files (e.g. float32 and int8)")
    ap.add_argument("--arch", default="fcos_lite")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "revet_bench_scene"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        score_once(a.child[0], a.child[1], a.batch, a.threads)
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    models = [Path(m) for m in a.model] if a.model else [default_model(work / f"{a.arch}.onnx", a.arch)]
    for model in models:
        print(f"model {model}")
        scenes(model, a, work)
    r = onnx_vs_torch(models[0], a.arch, max(3, a.repeats), a.batch)
    print(f"batch {a.batch} tiles, {models[0].name}: onnxruntime {r['onnxruntime']:.1f} tiles/s, torch eager "
          f"{r['torch_eager']:.1f} tiles/s, ratio {r['ratio']:.2f}x")


def scenes(model: Path, a, work: Path) -> None:
    for size in a.sizes:
        scene = make_scene(work / f"scene_{size}.tif", size)
        runs = []
        for _ in range(a.repeats):
            cmd = [sys.executable, __file__, "--child", str(model), str(scene), "--batch", str(a.batch)]
            if a.threads:
                cmd += ["--threads", str(a.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            runs.append(json.loads(out))
        sec = statistics.median(r["seconds"] for r in runs)
        mp = size * size / 1e6
        print(f"scene {size:>6} px: {mp:7.1f} MP  {mp / sec:6.2f} MP/s (median of {a.repeats}: {sec:.1f} s, "
              f"{runs[0]['windows']} windows)  peak RSS {max(r['rss_mb'] for r in runs):7.1f} MB")


if __name__ == "__main__":
    main()
