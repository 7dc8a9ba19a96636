"""Training throughput of every registered model, and time-to-accuracy of one.

    python benchmarks/bench_train.py throughput [--crop 256] [--batch 16] [--steps 6]
    python benchmarks/bench_train.py accuracy [--arch fcos_lite] [--minutes 10 30 60] [--data DIR]
    python benchmarks/bench_train.py options [--arch fcos_lite] [--compile]
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_train.py options   # AVX2 class

``throughput`` times optimizer steps on random images with two boxes each (no data loading),
in float32 and bf16 autocast, and prints the median images/s per model.
``accuracy`` trains the model on the synthetic benchmark (generator default seed and split:
400 train / 60 val / 100 test tiles), saves checkpoints when the wall clock passes each mark,
and prints test mAP@0.5 of each (the ONNX-free PyTorch path of ``revet evaluate``).
``options`` times one model's training step under the settings that may help a CPU without
bf16 (channels-last memory format, thread count, crop size, ``torch.compile``), in the
precision ``revet train`` would pick, and prints a table headed by the CPU's flags and the
oneDNN ISA cap, so figures from different machines (or an emulated AVX2 one) can be told apart.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def throughput(crop: int, batch: int, steps: int, archs: list[str] | None) -> None:
    import torch

    from detector.spec import ModelSpec
    from detector.train.models import BACKGROUND_OFFSET, available, build_model

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, crop {crop}, batch {batch}")
    for arch in archs or available():
        row = [f"{arch:<24}"]
        for mode in ("fp32", "bf16"):
            torch.manual_seed(0)
            m = build_model(ModelSpec(arch=arch)).train()
            opt = torch.optim.AdamW(m.parameters(), 1e-4)
            imgs = [torch.rand(3, crop, crop) for _ in range(batch)]
            off = BACKGROUND_OFFSET[arch]
            tg = [{"boxes": torch.tensor([[10.0, 10, 50, 40], [100, 100, 160, 130]]),
                   "labels": torch.tensor([off, off + 1])} for _ in range(batch)]
            ts = []
            for _ in range(steps + 1):
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                    loss = sum(m(imgs, tg).values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                ts.append(time.perf_counter() - t)
            row.append(f"{mode} {batch / statistics.median(ts[1:]):6.1f} img/s")
        print("  ".join(row), flush=True)


def _step_seconds(arch: str, crop: int, batch: int, steps: int, *, channels_last: bool = False,
                  compile_: bool = False, bf16: bool = False) -> float:
    """Median seconds of one optimizer step of ``arch`` on random images with two boxes each."""
    import torch

    from detector.spec import ModelSpec
    from detector.train.models import BACKGROUND_OFFSET, build_model

    torch.manual_seed(0)
    m = build_model(ModelSpec(arch=arch)).train()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    fwd = torch.compile(m) if compile_ else m
    opt = torch.optim.AdamW(m.parameters(), 1e-4)
    imgs = [torch.rand(3, crop, crop) for _ in range(batch)]
    if channels_last:
        imgs = [i.contiguous(memory_format=torch.channels_last) for i in imgs]
    off = BACKGROUND_OFFSET[arch]
    tg = [{"boxes": torch.tensor([[10.0, 10, 50, 40], [100, 100, 160, 130]]),
           "labels": torch.tensor([off, off + 1])} for _ in range(batch)]
    ts = []
    for _ in range(steps + (3 if compile_ else 1)):  # compiled: the first calls compile
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = sum(fwd(imgs, tg).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts[(3 if compile_ else 1):])


def options(arch: str, batch: int, steps: int, compile_: bool) -> None:
    import torch

    from detector.train.callbacks import cpu_bf16, hardware

    hw = hardware()
    bf16 = cpu_bf16()
    print(f"CPU {hw['cpu']}; flags {' '.join(hw['cpu_flags'])}; torch capability {hw['cpu_capability']}; "
          f"oneDNN ISA cap {hw['onednn_isa_cap'] or 'none'}; precision {'bf16-mixed' if bf16 else '32-true'}; "
          f"torch {torch.__version__}; {arch}, batch {batch}, median of {steps} steps")
    base = None
    rows = [("default (crop 256, 2 threads)", dict(crop=256)),
            ("channels-last", dict(crop=256, channels_last=True)),
            ("1 thread", dict(crop=256, threads=1)),
            ("crop 192", dict(crop=192)),
            ("crop 320", dict(crop=320))]
    if compile_:
        rows.append(("torch.compile", dict(crop=256, compile_=True)))
    print(f"{'setting':<32} {'s/step':>7} {'img/s':>6} {'Mpx/s':>6} {'vs default':>10}")
    for name, kw in rows:
        threads = kw.pop("threads", 2)
        torch.set_num_threads(threads)
        try:
            sec = _step_seconds(arch, batch=batch, steps=steps, bf16=bf16, **kw)
        except Exception as e:  # e.g. torch.compile without a C compiler
            print(f"{name:<32} failed: {type(e).__name__}: {str(e)[:80]}")
            continue
        finally:
            torch.set_num_threads(2)
        mpx = batch * kw["crop"] ** 2 / sec / 1e6
        base = base or mpx
        print(f"{name:<32} {sec:7.2f} {batch / sec:6.1f} {mpx:6.2f} {mpx / base:9.2f}x", flush=True)


def accuracy(arch: str, minutes: list[float], data: Path, out: Path) -> None:
    from detector.datasets.synth import generate_dataset
    from detector.evaluate import evaluate_model
    from detector.train.fit import TrainConfig, train

    if not (data / "test.json").exists():
        generate_dataset(data, n_train=400, n_val=60, n_test=100, seed=0, workers=2)
    cfg = TrainConfig(train=str(data / "train.json"), val=str(data / "val.json"), out=str(out), arch=arch,
                      epochs=100000, max_time=max(minutes), val_every=4, save_at_minutes=list(minutes),
                      report=False)
    t = time.monotonic()
    best = train(cfg)
    print(f"trained {arch} for {(time.monotonic() - t) / 60:.1f} min")
    rows = {}
    for m in minutes:
        ck = out / f"ckpt_{m:g}min.ckpt"
        if ck.exists():
            r = evaluate_model(ck, data / "test.json", device="cpu")
            rows[m] = r["mAP50"]
            per = "  ".join(f"{k} {v['AP50']:.3f}" for k, v in r["per_class"].items())
            print(f"{arch} at {m:>5g} min: test mAP@0.5 {r['mAP50']:.4f}  mAP@0.5:0.95 {r['mAP50_95']:.4f}  ({per})",
                  flush=True)
    r = evaluate_model(best, data / "test.json", device="cpu")
    print(f"{arch} best (by val mAP): test mAP@0.5 {r['mAP50']:.4f}")
    (out / "time_to_accuracy.json").write_text(json.dumps({"arch": arch, "test_mAP50": rows,
                                                           "best_test_mAP50": r["mAP50"]}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--crop", type=int, default=256)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--arch", nargs="*")
    o = sub.add_parser("options")
    o.add_argument("--arch", default="fcos_lite")
    o.add_argument("--batch", type=int, default=16)
    o.add_argument("--steps", type=int, default=5)
    o.add_argument("--compile", action="store_true", help="also time torch.compile (compiling takes minutes)")
    a = sub.add_parser("accuracy")
    a.add_argument("--arch", default="fcos_lite")
    a.add_argument("--minutes", type=float, nargs="+", default=[10, 30, 60])
    a.add_argument("--data", default="/tmp/revet_bench/data")
    a.add_argument("--out", default="/tmp/revet_bench/run")
    args = ap.parse_args()
    if args.what == "throughput":
        throughput(args.crop, args.batch, args.steps, args.arch)
    elif args.what == "options":
        options(args.arch, args.batch, args.steps, args.compile)
    else:
        accuracy(args.arch, args.minutes, Path(args.data), Path(args.out))


if __name__ == "__main__":
    main()
