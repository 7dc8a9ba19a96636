"""Batch prediction over files: each input scored, errors logged and skipped. Torch-free."""
from __future__ import annotations

import glob
import logging
import os
import time
from pathlib import Path

from detector.outputs import write_geojson
from detector.runner import Detector

log = logging.getLogger("revet.predict")

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".vrt", ".img"}


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, in order."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif any(ch in item for ch in "*?["):
            paths += sorted(Path(q) for q in glob.glob(item, recursive=True))
        else:
            paths.append(p)
    return paths


def predict_files(model: str | os.PathLike, inputs: list[str], out: str | os.PathLike, *,
                  min_score: float | None = None, device: str = "auto", batch_size: int = 8,
                  overlap: int | None = None) -> dict:
    """Score every input (a tile or a scene of any size) and write one GeoJSON to ``out``.

    An input that cannot be read is logged and skipped; the summary lists it under ``failed``.
    """
    det = Detector.load(model, device=device)
    paths = expand_inputs(inputs)
    results, failed = [], []
    t0 = time.monotonic()
    for k, path in enumerate(paths, 1):
        try:
            r = det.predict_scene(path, min_score=min_score, overlap=overlap, batch_size=batch_size)
        except (ValueError, FileNotFoundError, OSError) as e:
            log.error("skipping %s: %s", path, e)
            failed.append({"path": str(path), "error": str(e)})
            continue
        results.append(r)
        log.info("[%d/%d] %s: %d detections", k, len(paths), path, len(r))
    write_geojson(results, out)
    return {"model": str(model), "inputs": len(paths), "scored": len(results), "failed": failed,
            "detections": sum(len(r) for r in results), "out": str(out),
            "seconds": round(time.monotonic() - t0, 2)}
