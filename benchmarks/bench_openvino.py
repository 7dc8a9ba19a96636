"""OpenVINO against ONNX Runtime's CPU provider on the same ONNX files (#17 item 6).

    pip install openvino        # not a Revet dependency: this measures whether it should be one
    python benchmarks/bench_openvino.py [--models revet-base revet-base:int8 ...] [--repeats 5]

For each model file (default: revet-base's 512-px float32 and int8 graphs and their 1536-px
scene companions) it runs one batch of windows cut from a rendered synthetic scene (the
batch holds the same pixels whatever the window: 8 windows of 512 px, 1 of 1536) through an
ONNX Runtime CPU session and an OpenVINO CPU compiled model, both with the same thread count,
and prints the median seconds per call, megapixels/s, the ratio, and whether the two agree
(the detections above 0.3: same count, boxes within 0.5 px, scores within 1e-3). Prints the
CPU's SIMD flags. Speed only: scene recall is bench_scene.py's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scene import cpu_facts  # noqa: E402


def windows(tile: int, n: int, seed: int = 0) -> np.ndarray:
    """(n, 3, tile, tile) float32 raw uint8 values of a rendered synthetic scene."""
    from detector.datasets.synth import render_image

    side = int(np.ceil(np.sqrt(n))) * tile
    img = render_image(20_000 + seed, side, side, gsd=0.5, negatives=True, contain=False).image
    out = [img[r:r + tile, c:c + tile] for r in range(0, side, tile) for c in range(0, side, tile)][:n]
    return np.stack([np.moveaxis(w, -1, 0) for w in out]).astype(np.float32)


def timed(fn, x, repeats: int) -> tuple[float, tuple]:
    out = fn(x)  # warm-up (and the outputs to compare)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def agree(a, b, min_score: float = 0.3) -> bool:
    for k in range(len(a[1])):
        ka, kb = a[1][k] >= min_score, b[1][k] >= min_score
        if ka.sum() != kb.sum():
            return False
        if ka.any() and (np.abs(a[0][k][ka] - b[0][k][kb]).max() > 0.5
                         or np.abs(a[1][k][ka] - b[1][k][kb]).max() > 1e-3):
            return False
    return True


def main() -> None:
    import onnxruntime as ort
    import openvino as ov

    from detector import zoo
    from detector.runner import scene_model_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["revet-base", "revet-base:int8"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precision", default="f32",
                    help="OpenVINO INFERENCE_PRECISION_HINT: f32 (default; the CPU plugin otherwise runs "
                         "bf16 on CPUs with AMX / AVX512-BF16, which changes the detections) or bf16")
    a = ap.parse_args()
    files = []
    for m in a.models:
        p = zoo.resolve(m)
        files.append(p)
        s = scene_model_path(p)
        if s is not None and s.exists():
            files.append(s)
    print(cpu_facts())
    print(f"onnxruntime {ort.__version__}, openvino {ov.__version__} (precision hint {a.precision}), "
          f"{a.threads} threads, median of {a.repeats}")
    print("| model | window | batch | ORT s | OpenVINO s | ORT MP/s | OpenVINO MP/s | OpenVINO / ORT | same detections |")
    print("|---|---|---|---|---|---|---|---|---|")
    core = ov.Core()
    for f in files:
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        sess = ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
        tile = sess.get_inputs()[0].shape[-1]
        n = max(1, 8 * 512 ** 2 // tile ** 2)
        x = windows(tile, n)
        t_ort, o_ort = timed(lambda b: sess.run(None, {"image": b}), x, a.repeats)
        comp = core.compile_model(core.read_model(str(f)), "CPU",
                                  {"INFERENCE_NUM_THREADS": a.threads, "PERFORMANCE_HINT": "LATENCY",
                                   "INFERENCE_PRECISION_HINT": a.precision})
        req = comp.create_infer_request()

        def run_ov(b):
            r = req.infer({0: b})
            return tuple(r[comp.output(i)] for i in range(3))

        t_ov, o_ov = timed(run_ov, x, a.repeats)
        mp = n * tile * tile / 1e6
        print(f"| {f.name} | {tile} | {n} | {t_ort:.3f} | {t_ov:.3f} | {mp / t_ort:.2f} | {mp / t_ov:.2f} | "
              f"{t_ort / t_ov:.2f}x | {'yes' if agree(o_ort, o_ov) else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
