"""Accuracy per GFLOP: the registry's CPU models, narrower and shallower members of the default
family, and the default model scored at coarser pixel sizes (#17 item 3).

    python benchmarks/bench_model_cost.py cost                               # GFLOP, params, ORT ms per window
    python benchmarks/bench_model_cost.py gsd --data runs/variants/data      # revet-base at scoring pixel sizes
    python benchmarks/bench_model_cost.py train --data runs/variants/data --steps 150   # equal-step fine-tunes

``cost``: per model, GFLOP of one 512 x 512 window (``torch.utils.flop_counter``: backbone, FPN
and head; decoding and NMS excluded, 2 FLOP per multiply-add), parameters, and ONNX Runtime
milliseconds per window on this CPU (batch 4, 2 threads, float32 and static int8, median of
``--repeats``), with random weights (time does not depend on them).

``gsd``: the shipped ``revet-base`` (int8) scored with its scenes read at a coarser pixel size
than it was trained at (``spec.gsd`` raised; tiles resampled to it, as scenes are). Work per
km^2 falls as (0.5 / gsd)^2; the model trained on 0.3-1.0 m tiles, so it has seen objects at
those sizes. Prints mAP@0.5 and recall / precision at the operating thresholds per test set.

``train``: each family member fine-tuned for the same number of optimizer steps from
``revet-base``'s weights (every tensor whose name and shape fit: a shallower member keeps the
first block of each layer, a narrower one re-learns its FPN and head), default included, on the
training corpus of ``--data`` (``scripts/build_base_model.py --stage data`` layout), then
tested (PyTorch, float32) on its test sets. Equal steps, not equal time: a cheaper member
trains faster, and the question is what accuracy the cheaper network can hold.

``--data`` is a folder with ``corpus/{train,val}.json`` and ``test_<set>/test.json``. Prints
the CPU's flags with the figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scene import cpu_facts, default_model, median_seconds  # noqa: E402

# family members of fcos_lite (train.models.resnet18_cut_fcos keyword arguments)
FAMILY = {
    "fcos_lite": {},
    "fcos_lite_c64": dict(channels=64),
    "fcos_lite_h1": dict(head_convs=1),
    "fcos_lite_b1": dict(blocks=(1, 1, 1)),
    "fcos_lite_b1_c64_h1": dict(blocks=(1, 1, 1), channels=64, head_convs=1),
}
REGISTRY = ("fcos_lite", "fcos_resnet18", "ssdlite")


def register_family() -> None:
    """Register the family members not in the registry under their names, in this process only."""
    from detector.train import models

    for name, kw in FAMILY.items():
        if name not in models.available():
            def build(*, num_classes, in_channels=3, tile_size=512, _kw=kw):
                return models.resnet18_cut_fcos(num_classes, in_channels, **_kw)
            models.register(name, background=False, pretrained=models.PRETRAINED["fcos_lite"])(build)


def network_gflop(arch: str, size: int = 512) -> tuple[float, float]:
    """(GFLOP of one ``size``^2 window through backbone + head, parameters in millions)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from detector.spec import ModelSpec
    from detector.train.models import build_model

    model = build_model(ModelSpec(arch=arch)).eval()  # the default classes: bunker, revetment, shelter
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        feats = model.backbone(x)
        feats = list(feats.values()) if isinstance(feats, dict) else feats
        model.head(feats)
    return fc.get_total_flops() / 1e9, sum(p.numel() for p in model.parameters()) / 1e6


def ort_ms(arch: str, work: Path, repeats: int, batch: int = 4) -> dict:
    """ONNX Runtime ms per 512 x 512 window, float32 and int8, random weights."""
    from detector.backends import OnnxBackend
    from detector.export.quantize import to_int8

    f32 = default_model(work / f"{arch}.onnx", arch)
    rng = np.random.default_rng(0)
    cal = [rng.integers(0, 255, (512, 512, 3), dtype=np.uint8) for _ in range(4)]
    i8 = to_int8(f32, work / f"{arch}.int8.onnx", cal)
    x = rng.integers(0, 255, (batch, 3, 512, 512)).astype(np.float32)
    out = {}
    for name, path in (("float32", f32), ("int8", i8)):
        be = OnnxBackend(path, device="cpu", threads=2)
        out[name] = 1000 * median_seconds(lambda: be.run(x), repeats) / batch
    return out


def run_cost(a) -> None:
    register_family()
    work = Path(tempfile.mkdtemp(prefix="revet_cost_"))
    print("| model | GFLOP / 512² window | params (M) | ORT fp32 ms / window | ORT int8 ms / window | int8 gain |")
    print("|---|---|---|---|---|---|")
    for arch in dict.fromkeys([*REGISTRY, *FAMILY]):
        g, p = network_gflop(arch)
        ms = ort_ms(arch, work, a.repeats)
        print(f"| {arch} | {g:.1f} | {p:.2f} | {ms['float32']:.0f} | {ms['int8']:.0f} | "
              f"{ms['float32'] / ms['int8']:.2f}x |", flush=True)


def test_sets(data: Path, only: list[str] | None) -> dict[str, Path]:
    sets = {p.parent.name[len("test_"):]: p for p in sorted(data.glob("test_*/test.json"))}
    if only:
        sets = {k: v for k, v in sets.items() if k in only}
    if not sets:
        raise SystemExit(f"{data}: expected test_<set>/test.json folders")
    return sets


def subset(coco: Path, n: int | None, work: Path) -> Path:
    """The first ``n`` images of a COCO file (all when None), written beside ``work``."""
    if not n:
        return coco
    d = json.loads(coco.read_text())
    keep = {im["id"] for im in d["images"][:n]}
    d["images"] = [im for im in d["images"] if im["id"] in keep]
    d["annotations"] = [x for x in d["annotations"] if x["image_id"] in keep]
    for im in d["images"]:  # paths stay valid from the new folder
        im["file_name"] = str((coco.parent / im["file_name"]).resolve())
    out = work / f"{coco.parent.name}_{n}.json"
    out.write_text(json.dumps(d))
    return out


def run_gsd(a) -> None:
    from detector.runner import Detector
    from detector.tile_eval import evaluate_tiles

    work = Path(tempfile.mkdtemp(prefix="revet_gsd_"))
    sets = {k: subset(v, a.tiles, work) for k, v in test_sets(Path(a.data), a.sets).items()}
    print(f"model {a.model}; tiles per set: {a.tiles or 'all'}")
    print("| scoring gsd (m) | work per km² | " + " | ".join(f"{s} mAP@0.5 / recall / precision" for s in sets) + " |")
    print("|---|---|" + "---|" * len(sets))
    for g in a.gsd:
        det = Detector.load(a.model, device="cpu")
        det.spec = dataclasses.replace(det.spec, gsd=g)
        det.scene = None
        cells = []
        for name, data in sets.items():
            m = evaluate_tiles(det, data, device="cpu").metrics
            op = m["operating"]
            cells.append(f"{m['mAP50']:.4f} / {op['recall']:.3f} / {op['precision']:.3f}")
        print(f"| {g} | {(0.5 / g) ** 2:.2f}x | " + " | ".join(cells) + " |", flush=True)


def run_train(a) -> None:
    from detector.tile_eval import evaluate_tiles
    from detector.train.fit import TrainConfig, train

    register_family()
    data = Path(a.data)
    work = Path(a.out or tempfile.mkdtemp(prefix="revet_family_"))
    work.mkdir(parents=True, exist_ok=True)
    sets = {k: subset(v, a.tiles, work) for k, v in test_sets(data, a.sets).items()}
    print(f"{a.steps} steps each, batch {a.batch}, crop 256, from revet-base's weights; tiles per set: {a.tiles or 'all'}")
    print("| model | GFLOP / 512² | train min | " + " | ".join(f"{s} mAP@0.5" for s in sets) + " |")
    print("|---|---|---|" + "---|" * len(sets))
    for arch in a.archs or FAMILY:
        run = work / arch
        t = time.perf_counter()
        ckpt = run / "best.ckpt"
        if not ckpt.exists():
            cfg = TrainConfig(arch=arch, train=str(data / "corpus" / "train.json"), val=str(data / "corpus" / "val.json"),
                              out=str(run), weights="revet-base", steps=a.steps, epochs=1000, batch_size=a.batch,
                              crop=256, lr=a.lr, warmup_steps=10, val_every=1000, gsd=0.5, report=False,
                              augment={"scale": [0.8, 1.25], "hue": 0.05, "blur": 0.15, "noise": 0.15})
            ckpt = train(cfg)
        minutes = (time.perf_counter() - t) / 60
        cells = [f"{evaluate_tiles(str(ckpt), d, device='cpu').metrics['mAP50']:.4f}" for d in sets.values()]
        print(f"| {arch} | {network_gflop(arch)[0]:.1f} | {minutes:.1f} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--repeats", type=int, default=5)
    for name in ("gsd", "train"):
        s = sub.add_parser(name)
        s.add_argument("--data", required=True, help="folder with corpus/ and test_<set>/ (build_base_model layout)")
        s.add_argument("--sets", nargs="*", help="test sets to use (default: every test_<set>)")
        s.add_argument("--tiles", type=int, help="first N tiles of each test set (default: all)")
    sub.choices["gsd"].add_argument("--model", default="revet-base:int8")
    sub.choices["gsd"].add_argument("--gsd", type=float, nargs="*", default=[0.5, 0.6, 0.7, 0.8])
    t = sub.choices["train"]
    t.add_argument("--steps", type=int, default=150)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--archs", nargs="*", help=f"family members (default: {list(FAMILY)})")
    t.add_argument("--out", help="where the runs go (kept; a finished one is not retrained)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    print(cpu_facts())
    {"cost": run_cost, "gsd": run_gsd, "train": run_train}[a.cmd](a)


if __name__ == "__main__":
    main()
