"""``revet review``: parse arguments, call one library function. Torch-free.

Registered by ``detector.cli`` (:func:`add_review_command`). Its output feeds
``revet data from-review`` (:mod:`detector.datasets.data_cli`).
"""
from __future__ import annotations

import argparse
import json

REVIEW_EPILOG = """\
Writes REVIEW_DIR/index.html (open it in a browser: decisions stay in that browser, Export
downloads decisions.json) and, with --serve, serves it on 127.0.0.1 and saves every decision as
it is made to REVIEW_DIR/decisions.{json,geojson,gpkg} in the scene's CRS.

keys: a accept, r reject, 1/2/3 relabel, n/p next/previous, u undo, b draw a box, z zoom to the
candidate / the scene, t type a note (Enter saves).

examples:
  revet predict revet-base scene.tif --out scene.geojson
  revet review scene.tif scene.geojson --out review/ --serve
  revet review --serve --out review/          # serve an existing review folder again
  revet data from-review review/ --out finetune/
"""


def add_review_command(subparsers) -> None:
    """Add the ``review`` subcommand to an ``argparse`` subparsers object."""
    r = subparsers.add_parser("review", help="review detections in a browser: accept, reject, relabel, draw",
                              description="Write an offline review page for a scene and its detections.",
                              epilog=REVIEW_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("scene", nargs="?", help="the scene (GeoTIFF or any raster rasterio reads)")
    r.add_argument("detections", nargs="?", help="detections: GeoJSON (as revet predict writes) or GeoPackage")
    r.add_argument("--out", required=True, help="review folder")
    r.add_argument("--serve", action="store_true", help="serve on 127.0.0.1 and save decisions to disk")
    r.add_argument("--port", type=int, default=8765, help="port for --serve (0: any free port; default 8765)")
    r.add_argument("--bands", help="1-based display bands, e.g. 3,2,1 (default 1,2,3 or 1)")
    r.add_argument("--classes", help="comma-separated classes the analyst may assign (default: the model's three)")
    r.add_argument("--tile", type=int, default=512, help="pyramid tile size in pixels")
    r.add_argument("--max-level-px", type=int,
                   help="coarsest finest level: leave out full-resolution tiles above this size")
    r.set_defaults(func=run_review)


def run_review(a) -> int:
    from detector.review import build_review, serve

    if (a.scene is None) != (a.detections is None):
        raise ValueError("review: give both SCENE and DETECTIONS (or neither, with --serve, for an existing folder)")
    if a.scene is not None:
        summary = build_review(a.scene, a.detections, a.out,
                               classes=a.classes.split(",") if a.classes else None,
                               bands=[int(b) for b in a.bands.split(",")] if a.bands else None,
                               tile=a.tile, max_level_px=a.max_level_px)
        print(json.dumps(summary, indent=2))
    elif not a.serve:
        raise ValueError("review: nothing to do; give SCENE DETECTIONS, or --serve an existing folder")
    if a.serve:
        serve(a.out, a.port)
    return 0
