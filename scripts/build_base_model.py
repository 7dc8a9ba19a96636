"""Rebuild ``revet-base``, the shipped base model, from nothing (see docs/models.md).

    python scripts/build_base_model.py --out runs/revet-base            # every stage
    python scripts/build_base_model.py --out runs/revet-base --stage train   # resume training

Stages (each skips what is already done, so the script resumes after an interruption):
``data`` (varied synthetic corpus without the held-out season, and three test sets: standard
style at a fresh seed, varied style at a fresh seed, the held-out season alone), ``train``
(resumable, step-bounded), ``export`` (float32 + int8 ONNX with parity), ``evaluate`` (the three
test sets), ``package`` (fp16 weights, both ONNX files, the card with hashes into
``detector/zoo/revet-base/``). The config is ``configs/revet-base.yaml``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from detector.export.base_model import STAGES, build

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/revet-base")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "revet-base.yaml"))
    ap.add_argument("--stage", choices=STAGES, action="append", help="run only these stages (repeatable)")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    build(a.out, a.config, stages=a.stage or STAGES, workers=a.workers)
    sys.exit(0)
