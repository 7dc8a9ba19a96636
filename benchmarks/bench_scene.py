"""Scene scoring per model variant and setting: speed, memory, work skipped, and quality.

    python benchmarks/bench_scene.py [--model revet-base:int8 revet-base ...] [--size 4096] [--sizes 8192] [--repeats 3]
    python benchmarks/bench_scene.py --model m.onnx --sizes 2048 8192 16384      # memory flat with size
    python benchmarks/bench_scene.py --torch --arch fcos_lite                       # ORT against eager

For each model it scores the same scene with the scene companion (``X.scene.onnx``, larger
windows, when it exists) and without it (the model's own windows), and with the first pass
(``detector.prescreen``) on and off. Each run is a fresh process, so its peak RSS (VmHWM)
and whole-process time (imports, model load, reading, scoring, merging) are its own. Prints per
setting: window size, MP/s of the whole process and of predict_scene alone (median of
``--repeats``), peak RSS, windows scored and skipped, and on the rendered scene (``--size``, at
0.5 m, targets and look-alikes placed anywhere, truth known) recall at the operating threshold
(IoU 0.5), objects reported more than once (two or more detections at IoU >= 0.3), recall of
objects across interior window edges against the others, and the CPU's SIMD flags.
``--sizes`` scores mirrored synthetic scenes of those sizes (no truth) for memory against size.
``--max-isa AVX2 --device openvino`` runs OpenVINO's AVX2 kernels on an AVX-512 machine: an
estimate of an AVX2-only CPU (same clock and memory, which a real one may not have).
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


def median_seconds(call, repeats: int) -> float:
    """Median wall seconds of ``call()`` over ``repeats`` runs, after one warm-up run."""
    call()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


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
    res = {name: batch / median_seconds(lambda: be.run(x), repeats)
           for name, be in (("onnxruntime", ob), ("torch_eager", tb))}
    res["ratio"] = res["onnxruntime"] / res["torch_eager"]
    return res



def score_once(model: str, scene: str, batch: int, threads: int | None, companion: bool, skip: bool,
               truth: str | None, device: str = "auto") -> None:
    """Child process: score one scene, print its figures as JSON."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fragments import score

    from detector.runner import Detector

    det = Detector.load(model, device=device, threads=threads)
    if not companion:
        det.scene = None
    if not skip:
        det.prescreen = None
    plan = det.plan_scene(scene)
    t = time.perf_counter()
    if truth:
        m = score(det, Path(scene), np.load(truth), plan.windows, plan.tile)
        r = m.pop("result")
    else:
        r, m = det.predict_scene(scene, batch_size=batch), {}
    dt = time.perf_counter() - t
    print(json.dumps({"seconds": dt,
                      "rss_mb": peak_rss_mb(), "detections": len(r), "windows": r.extra["windows"], "window": r.extra.get("window"),
                      "skipped": r.extra.get("skipped", 0), "megapixels": r.width * r.height / 1e6,
                      **{k: float(v) for k, v in m.items()}}))


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM, MB). Not ru_maxrss: a child started by a
    parent holding more memory inherits the parent's ru_maxrss across fork and exec."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_facts() -> str:
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
        flags = next(x for x in lines if x.startswith("flags")).split()
        name = next(x for x in lines if x.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return "cpu unknown"
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return f"{name}, {os.cpu_count()} logical cores; flags: {' '.join(have) or 'no avx2'}"


def run_child(model: str, scene: Path, a, *, companion: bool, skip: bool, truth: Path | None) -> dict:
    runs = []
    for _ in range(a.repeats):
        cmd = [sys.executable, __file__, "--child", model, str(scene), "--batch", str(a.batch),
               "--companion", str(int(companion)), "--skip", str(int(skip)), "--device", a.device]
        if truth is not None:
            cmd += ["--truth", str(truth)]
        if a.threads:
            cmd += ["--threads", str(a.threads)]
        env = {**os.environ, **({"ONEDNN_MAX_CPU_ISA": a.max_isa} if a.max_isa else {})}
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        r["process_seconds"] = time.perf_counter() - t  # the whole process, interpreter start included
        runs.append(r)
    med = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "process_seconds")}
    return {**runs[0], **med, "rss_mb": max(r["rss_mb"] for r in runs)}


def render_truth_scene(work: Path, size: int, seed: int) -> tuple[Path, Path]:
    from rasterio.transform import from_origin

    from detector.datasets.synth import render_image, write_geotiff

    path, truth = work / f"truth_{size}_{seed}.tif", work / f"truth_{size}_{seed}.npy"
    if not path.exists():
        r = render_image(10_000 + seed, size, size, gsd=0.5, negatives=True, contain=False)
        write_geotiff(path, r.image, from_origin(500000, 4000000, 0.5, 0.5))
        np.save(truth, np.asarray(r.boxes, np.float64).reshape(-1, 4))
    return path, truth


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", nargs="*", default=["revet-base:int8", "revet-base"],
                    help="models: .onnx files or shipped names (default: revet-base int8 and float32)")
    ap.add_argument("--size", type=int, default=4096,
                    help="side of the rendered scene with truth (px; rendering 8192 takes over 10 min)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", type=int, nargs="*", default=[8192],
                    help="mirrored scenes (fast to write, no truth) for speed and memory against size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="auto", help="as revet predict --device (cpu, openvino, cuda ...)")
    ap.add_argument("--max-isa", help="run the scoring processes with ONEDNN_MAX_CPU_ISA set to this (AVX2: "
                    "oneDNN's AVX2 kernels on an AVX-512 CPU). OpenVINO (--device openvino) and PyTorch obey it; "
                    "ONNX Runtime's own kernels do not")
    ap.add_argument("--torch", action="store_true", help="also ONNX Runtime against PyTorch eager (--arch)")
    ap.add_argument("--arch", default="fcos_lite")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "revet_bench_scene"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--companion", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--skip", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--truth", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        score_once(a.child[0], a.child[1], a.batch, a.threads, bool(a.companion), bool(a.skip), a.truth, a.device)
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{cpu_facts()}; device {a.device}" + (f"; ONEDNN_MAX_CPU_ISA={a.max_isa}" if a.max_isa else ""))
    scene, truth = render_truth_scene(work, a.size, a.seed)
    print(f"scene {a.size}^2 px at 0.5 m (seed {a.seed}), {len(np.load(truth))} objects; median of {a.repeats}")
    print("| model | window | first pass | MP/s process | MP/s scoring | peak RSS MB | windows scored / skipped "
          "| recall | edges / rest | reported twice+ | detections |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model in a.model:
        for companion, skip in ((True, True), (True, False), (False, True), (False, False)):
            r = run_child(model, scene, a, companion=companion, skip=skip, truth=truth)
            mp = r["megapixels"]
            print(f"| {model} | {r['window']} | {'on' if skip else 'off'} | {mp / r['process_seconds']:.2f} | "
                  f"{mp / r['seconds']:.2f} | {r['rss_mb']:.0f} | {r['windows'] - r['skipped']:.0f} / "
                  f"{r['skipped']:.0f} | {r['recall']:.3f} | {r['recall_cut']:.3f} / {r['recall_rest']:.3f} | "
                  f"{r['multi']:.0f} ({100 * r['multi'] / r['objects']:.1f} %) | {r['detections']} |", flush=True)
    for model in a.model:
        for size in a.sizes:
            s = make_scene(work / f"scene_{size}.tif", size)
            for companion in (True, False):
                r = run_child(model, s, a, companion=companion, skip=True, truth=None)
                print(f"{model}: mirrored scene {size} px ({r['megapixels']:.1f} MP), window {r['window']}: "
                      f"{r['megapixels'] / r['process_seconds']:.2f} MP/s process, "
                      f"{r['megapixels'] / r['seconds']:.2f} MP/s scoring, peak RSS {r['rss_mb']:.0f} MB, "
                      f"windows {r['windows']} ({r['skipped']} skipped)", flush=True)
    if a.torch:
        m = default_model(work / f"{a.arch}.onnx", a.arch)
        r = onnx_vs_torch(m, a.arch, max(3, a.repeats), a.batch)
        print(f"batch {a.batch} tiles, {m.name}: onnxruntime {r['onnxruntime']:.1f} tiles/s, torch eager "
              f"{r['torch_eager']:.1f} tiles/s, ratio {r['ratio']:.2f}x")


if __name__ == "__main__":
    main()
