"""Write a review folder for one scene: the page, its data and the image pyramid. Torch-free.

``REVIEW_DIR`` after :func:`build_review`:

- ``index.html``, ``app.js``, ``app.css``: the page (plain JavaScript, no CDN, no web fonts;
  a Content-Security-Policy of ``'self'`` so the page cannot fetch anything from elsewhere);
- ``candidates.js`` (``window.REVET_DATA = {...}``, loaded by a script tag so the page also
  works opened from disk) and ``candidates.json`` (the same, for tools): the scene's size and
  pyramid, the classes, and the candidates sorted by score;
- ``review.json``: provenance (scene path, detections file, model id, CRS, transform, Revet
  version, creation time), read by the server and by ``revet data from-review``;
- ``tiles/``: the pyramid (:mod:`detector.review.pyramid`).

Decisions saved later by the server (:mod:`detector.review.decisions`) land beside them.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from detector import raster
from detector.display import class_colour
from detector.outputs import atomic_write_text, revet_version
from detector.review.candidates import read_candidates
from detector.review.pyramid import write_pyramid

log = logging.getLogger("revet.review")
STATIC = Path(__file__).with_name("static")
DEFAULT_CLASSES = ["bunker", "revetment", "shelter"]


def build_review(scene: str | os.PathLike, detections: str | os.PathLike, out_dir: str | os.PathLike, *,
                 classes: list[str] | None = None, bands=None, tile: int = 512,
                 max_level_px: int | None = None) -> dict:
    """Write the review folder of ``scene`` with the candidates in ``detections``.

    ``classes``: the classes the analyst may assign (default: revet's three, plus any other
    class found in the detections, in order of appearance). ``bands``: 1-based display bands.
    Rewriting a folder keeps its saved decisions. Returns a summary dict (counts, seconds).
    """
    t0 = time.perf_counter()
    scene, out = Path(scene), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with raster.open_raster(scene) as ds:
        info = raster.raster_info(ds)
    cands = read_candidates(detections, info.crs, info.transform, scene.name)
    classes = list(classes or DEFAULT_CLASSES)
    for c in cands.classes:
        if c not in classes:
            classes.append(c)
    t1 = time.perf_counter()
    pyr = write_pyramid(scene, out, bands=bands, tile=tile, max_level_px=max_level_px)
    t2 = time.perf_counter()
    review = {"scene": str(scene.resolve()), "detections": str(Path(detections).resolve()),
              "model": cands.model, "classes": classes, "width": info.width, "height": info.height,
              "crs_wkt": info.crs.to_wkt() if info.crs is not None else None,
              "transform": list(info.transform)[:6], "revet_version": revet_version(),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    data = {"scene": {"name": scene.name, "width": info.width, "height": info.height, **pyr},
            "classes": classes, "model": cands.model,
            "palette": [list(class_colour(k)) for k in range(len(classes))],  # detector.display's
            "candidates": [{"id": i, "class": c, "score": None if s != s else round(float(s), 4),
                            "box": [round(float(v), 1) for v in b]}
                           for i, c, s, b in zip(cands.ids, cands.classes, cands.scores, cands.boxes)]}
    text = json.dumps(data, separators=(",", ":"))
    atomic_write_text(out / "candidates.json", text)
    atomic_write_text(out / "candidates.js", "window.REVET_DATA = " + text + ";\n")
    atomic_write_text(out / "review.json", json.dumps(review, indent=1))
    for name in ("index.html", "app.js", "app.css"):
        shutil.copyfile(STATIC / name, out / name)
    summary = {"review_dir": str(out), "candidates": len(cands), "classes": classes,
               "levels": pyr["levels"], "read_seconds": round(t1 - t0, 3),
               "pyramid_seconds": round(t2 - t1, 3), "seconds": round(time.perf_counter() - t0, 3)}
    log.info("review of %s: %d candidates, %d pyramid levels in %.1f s", scene, len(cands),
             pyr["levels"], summary["seconds"])
    return summary
