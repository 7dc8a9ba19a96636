"""Training throughput of every registered model, and time-to-accuracy of one.

    python benchmarks/bench_train.py throughput [--crop 256] [--batch 16] [--steps 6]
    python benchmarks/bench_train.py accuracy [--arch fcos_lite] [--minutes 10 30 60] [--data DIR]

``throughput`` times optimizer steps on random images with two boxes each (no data loading),
in float32 and bf16 autocast, and prints the median images/s per model.
``accuracy`` trains the model on the synthetic benchmark (generator default seed and split:
400 train / 60 val / 100 test tiles), saves checkpoints when the wall clock passes each mark,
and prints test mAP@0.5 of each (the ONNX-free PyTorch path of ``revet evaluate``).
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
    a = sub.add_parser("accuracy")
    a.add_argument("--arch", default="fcos_lite")
    a.add_argument("--minutes", type=float, nargs="+", default=[10, 30, 60])
    a.add_argument("--data", default="/tmp/revet_bench/data")
    a.add_argument("--out", default="/tmp/revet_bench/run")
    args = ap.parse_args()
    if args.what == "throughput":
        throughput(args.crop, args.batch, args.steps, args.arch)
    else:
        accuracy(args.arch, args.minutes, Path(args.data), Path(args.out))


if __name__ == "__main__":
    main()
