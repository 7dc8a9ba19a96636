"""Batch scoring: the single process against the Ray engine with 1, 2, ... Detector actors.

    python benchmarks/bench_batch.py [--scenes 8] [--size 4096] [--workers 1 2] [--model M.onnx]

Every engine scores the same generated scenes (``--scenes`` GeoTIFFs of ``--size``² pixels,
3-band uint8, tiled and deflated, 0.5 m; made once in ``--work``) into a fresh folder, each in
its own subprocess (so each peak memory and Ray instance is its own). Printed per engine:

- MP/s counted from the first window read (Ray's start-up, ``ray.init``, is reported apart), and
  for Ray also from the moment its first Detector actor had loaded the model (Ray Data starts
  reading while its actors start: the difference is start-up too);
- seconds per stage (read, infer, merge, write; summed over workers, so they can exceed the
  wall time), peak RSS of the driver and of every Ray worker process;
- whether its detections are those of the single process: same count per scene, boxes within
  1e-3 px, scores within 1e-6 (the largest differences are printed).

Also printed: the CPU (model name, cores) and which of avx2 / avx512f / avx512_bf16 / amx its
``flags`` line has, since ONNX Runtime's kernels depend on them. With no ``--model`` an untrained
``--arch`` network is exported once (needs revet[train]; speed does not depend on the weights),
scored at ``--min-score 0.05`` so that there are detections to compare. On a GPU server add
``--device cuda`` (and ``--device tensorrt --trt-cache DIR``) and ``--gpus-per-actor 1``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def cpu_facts() -> dict:
    """Model name, logical cores and the SIMD flags that matter to ONNX Runtime's kernels."""
    flags, name = set(), "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and name == "?":
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": name, "cores": os.cpu_count(),
            **{f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")}}


def make_scenes(work: Path, n: int, size: int) -> list[str]:
    sys.path.insert(0, str(HERE))
    from bench_scene import make_scene  # a rendered synthetic 1024-px tile mirrored over the scene

    return [str(make_scene(work / f"batch_{size}_{i:02d}.tif", size, seed=100 + i)) for i in range(n)]


def model_for(a, work: Path) -> Path:
    if a.model:
        return Path(a.model)
    path = work / f"untrained_{a.arch}_{a.tile}.onnx"
    if not path.exists():
        try:
            import torch

            from detector.export.adapter import build_adapter
            from detector.export.onnx_export import export_onnx
            from detector.spec import ModelSpec
            from detector.train.models import build_model
        except ImportError as e:
            sys.exit(f"no --model given and the training extra is missing ({e}); pass --model MODEL.onnx")
        torch.manual_seed(0)
        spec = ModelSpec(arch=a.arch, tile_size=a.tile, overlap=64, gsd=0.5)
        print(f"exporting an untrained {a.arch!r} (tile {a.tile}) to {path} ...", file=sys.stderr)
        export_onnx(build_adapter(build_model(spec), spec).eval(), path)
    return path


def run_engine(engine: str, workers: int, model: Path, scenes: list[str], out: Path, a) -> dict:
    """Score ``scenes`` in a subprocess; return its summary (plus the driver's peak RSS)."""
    args = {"engine": engine, "workers": workers, "model": str(model), "scenes": scenes, "out": str(out),
            "batch_size": a.batch_size, "min_score": a.min_score, "device": a.device, "threads": a.threads,
            "gpus_per_actor": a.gpus_per_actor, "trt_cache": a.trt_cache}
    code = ("import json, resource, sys, time\n"
            "a = json.loads(sys.argv[1])\n"
            "from detector.predict import predict_files\n"
            "kw = {}\n"
            "if a['engine'] == 'ray':\n"
            "    kw = dict(engine='ray', actors=a['workers'], gpus_per_actor=a['gpus_per_actor'])\n"
            "s = predict_files(a['model'], a['scenes'], a['out'], formats='coco', batch_size=a['batch_size'],\n"
            "                  min_score=a['min_score'], device=a['device'], threads=a['threads'],\n"
            "                  trt_cache=a['trt_cache'], **kw)\n"
            "s['driver_peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)\n"
            "print('@@' + json.dumps(s))\n")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{engine} x{workers} failed:\n{r.stderr[-4000:]}")
    summary = json.loads(next(line[2:] for line in r.stdout.splitlines() if line.startswith("@@")))
    summary["wall_s"] = round(time.monotonic() - t0, 2)
    return summary


def compare(ref: Path, other: Path, scenes: list[str]) -> dict:
    """Largest box (px) and score differences between two folders of per-scene COCO results,
    matched in order (both are sorted by score the same way), and whether the counts agree."""
    box = score = 0.0
    same_counts = True
    for s in scenes:
        name = Path(s).name.split(".")[0] + ".coco.json"
        x, y = json.loads((ref / name).read_text()), json.loads((other / name).read_text())
        if len(x) != len(y):
            same_counts = False
            continue
        if x:
            bx = np.array([r["bbox"] for r in x]), np.array([r["bbox"] for r in y])
            box = max(box, float(np.abs(bx[0] - bx[1]).max()))
            score = max(score, float(np.abs(np.array([r["score"] for r in x]) - np.array([r["score"] for r in y])).max()))
    return {"same_counts": same_counts, "max_box_diff_px": round(box, 6), "max_score_diff": round(score, 7),
            "identical": same_counts and box <= 1e-3 and score <= 1e-6}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="exported .onnx (default: an untrained --arch, exported once)")
    p.add_argument("--arch", default="ssdlite")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray actor counts to run")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--min-score", type=float, default=0.05)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (Ray: per actor; default: the engine's)")
    p.add_argument("--gpus-per-actor", type=float)
    p.add_argument("--trt-cache")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "revet_bench_batch"))
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--no-bracket", action="store_true",
                   help="do not score with the single process again at the end (by default it runs first and "
                        "last, and ratios are against the mean of the two: a shared CPU drifts)")
    a = p.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    facts = cpu_facts()
    print("cpu: {cpu}, {cores} logical cores; flags: avx2={avx2} avx512f={avx512f} avx512_vnni={avx512_vnni} "
          "avx512_bf16={avx512_bf16} amx_bf16={amx_bf16} amx_int8={amx_int8}".format(**facts), flush=True)
    scenes = make_scenes(work, a.scenes, a.size)
    model = model_for(a, work)
    mp = a.scenes * a.size * a.size / 1e6
    print(f"model {model.name}, {a.scenes} scenes of {a.size}² px ({mp:.0f} MP), batch {a.batch_size}, "
          f"min score {a.min_score}, device {a.device}", flush=True)

    runs = [("single", 1)] + [("ray", n) for n in a.workers] + ([] if a.no_bracket else [("single", 1)])
    rows = []
    ref = None
    for engine, n in runs:
        out = work / f"out_{engine}_{n}_{len(rows)}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        s = run_engine(engine, n, model, scenes, out, a)
        ray = s.get("ray") or {}
        row = {"engine": engine if engine == "single" else f"ray x{n}", "megapixels": s["megapixels"],
               "mp_per_s": s["megapixels_per_s"], "scoring_s": s["scoring_seconds"], "wall_s": s["wall_s"],
               "stages": s["stages"], "detections": s["detections"], "providers": s["providers"],
               "driver_peak_rss_mb": s["driver_peak_rss_mb"]}
        if engine == "ray":
            wait = ray.get("actor_start_after_first_read_s", 0.0)
            row.update(ray_startup_s=ray.get("startup_s"), actor_start_after_first_read_s=wait,
                       mp_per_s_after_actor_start=round(s["megapixels"] / max(s["scoring_seconds"] - wait, 1e-9), 3),
                       actors=ray.get("actors"), threads_per_actor=ray.get("threads"),
                       workers=[{k: w[k] for k in ("role", "pid", "peak_rss_mb")} for w in ray.get("workers", [])])
        if ref is None:
            ref = out
        else:
            row["vs_single"] = compare(ref, out, scenes)
        rows.append(row)
        print(json.dumps(row), flush=True)

    singles = [r["mp_per_s"] for r in rows if r["engine"] == "single"]
    base = sum(singles) / len(singles)
    print(f"\n{'engine':10} {'MP/s':>7} {'ratio':>6} {'MP/s*':>7} {'ratio*':>6} {'start':>6} {'read':>7} "
          f"{'infer':>7} {'merge':>6} {'write':>6} {'peak MB (driver; workers)':28} same")
    for r in rows:
        st = r["stages"]
        star = r.get("mp_per_s_after_actor_start", r["mp_per_s"])
        peaks = f"{r['driver_peak_rss_mb']:.0f}" + ("; " + " ".join(f"{w['role'][0]}{w['peak_rss_mb']:.0f}"
                                                                     for w in r.get("workers", [])) if "workers" in r else "")
        same = r.get("vs_single", {}).get("identical", "-")
        print(f"{r['engine']:10} {r['mp_per_s']:7.3f} {r['mp_per_s'] / base:6.2f} {star:7.3f} {star / base:6.2f} "
              f"{r.get('ray_startup_s', 0):6.1f} {st['read']:7.1f} {st['infer']:7.1f} {st['merge']:6.2f} "
              f"{st['write']:6.2f} {peaks:28} {same}")
    print(f"ratios against the single process's mean MP/s ({base:.3f}; runs: {', '.join(f'{v:.3f}' for v in singles)})")
    print("MP/s: from the first window read; MP/s*: Ray from its first actor's model load (start-up left out); "
          "start: ray.init seconds; stages: seconds summed over workers; peak MB: r = read worker, d = Detector actor")
    fig = {"cpu": facts, "model": str(model), "scenes": a.scenes, "size": a.size, "batch_size": a.batch_size,
           "device": a.device, "runs": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=2))
    return fig


if __name__ == "__main__":
    main()
