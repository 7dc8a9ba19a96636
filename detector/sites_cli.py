"""``revet sites`` and ``revet changes``: parse arguments, call one library function. Torch-free.

Registered by ``detector.cli`` through :func:`add_sites_commands`; also runnable on its own as
``python -m detector.sites_cli sites|changes ...``. Rules and outputs: docs/sites.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys

SITES_EPILOG = """\
Objects (GeoJSON in EPSG:4326 as `revet predict` writes, GeoPackage or shapefile in any CRS)
are measured in metres in the UTM zone of their centroid. Output: site polygons (GeoJSON
EPSG:4326, or .gpkg in that UTM zone) with score, area_m2, counts per class and member ids.

examples:
  revet sites detections.geojson --out sites.geojson
  revet sites detections.gpkg --out sites.gpkg --link-distance 400m --min-objects 5
  revet sites detections.geojson --out sites.geojson --labels bases.geojson   # site recall / precision
"""

CHANGES_EPILOG = """\
Every object of either date gets a status: persisted, appeared, disappeared, changed (class
differs) or uncertain (with a reason: no_coverage, low_score, class_low_score). The after date's
misregistration is estimated from the objects and removed before matching. An object is only
appeared/disappeared where the other date has valid pixels (its scenes, else its detections'
source files, else near that date's objects). OUT.summary.json holds the shift, the counts
and per-site summaries ("+2 bunkers, -1 revetment").

examples:
  revet changes 2023.geojson 2024.geojson --out changes.geojson
  revet changes 2023.geojson 2024.geojson --out changes.gpkg --scene-before a.tif --scene-after b.tif --report rep/
  revet changes pair/labels_before.geojson pair/labels_after.geojson --out ch.geojson --truth pair/changes_truth.geojson
"""


def metres(text: str) -> float:
    """``"250"``, ``"250m"``, ``"1.5km"`` -> metres (argparse type)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(m|km)?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"expected a distance like 250m or 1.5km, got {text!r}")
    return float(m.group(1)) * (1000.0 if m.group(2) == "km" else 1.0)


def run_sites_cmd(a) -> int:
    from detector.sites import run_sites

    summary = run_sites(a.detections, a.out, link_distance=a.link_distance, min_objects=a.min_objects,
                        buffer=a.buffer, class_field=a.class_field, layer=a.layer)
    if a.labels:
        from detector.change_metrics import read_site_rings, site_metrics
        from detector.objects import read_objects
        from detector.sites import find_sites

        (objs,) = read_objects([a.detections], class_field=a.class_field, layer=a.layer)
        sites, _ = find_sites(objs, link_distance=a.link_distance, min_objects=a.min_objects, buffer=a.buffer)
        m = site_metrics(sites, read_site_rings(a.labels, objs.crs))
        summary["metrics"] = {k: v for k, v in m.items() if k != "matches"}
    print(json.dumps(summary, indent=2, default=str))
    return 0


def run_changes_cmd(a) -> int:
    from detector.changes import run_changes

    summary = run_changes(a.before, a.after, a.out, scene_before=a.scene_before, scene_after=a.scene_after,
                          report=a.report, high=a.high, low=a.low, match_distance=a.match_distance,
                          max_shift=a.max_shift, link_distance=a.link_distance, min_objects=a.min_objects,
                          class_field=a.class_field, truth=a.truth)
    brief = {k: v for k, v in summary.items() if k != "sites"}
    brief["changed_sites"] = [f"site {s['site_id']}: {s['summary']}" for s in summary["sites"] if s["changed"]][:20]
    print(json.dumps(brief, indent=2, default=str))
    return 0


def add_sites_commands(subparsers) -> None:
    """Add the ``sites`` and ``changes`` subcommands to an ``argparse`` subparsers object."""
    from detector.changes import HIGH, LOW, MATCH_DISTANCE_M, MAX_SHIFT_M
    from detector.sites import BUFFER_M, LINK_DISTANCE_M, MIN_OBJECTS

    s = subparsers.add_parser(
        "sites", help="group detections into candidate sites (bases), distances in metres",
        description="Single-linkage grouping of detections into sites with polygon, area, counts and score.",
        epilog=SITES_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("detections", help="GeoJSON / GeoPackage of detections or labels (any CRS)")
    s.add_argument("--out", required=True, help="sites file: .geojson (EPSG:4326) or .gpkg (local UTM)")
    s.add_argument("--link-distance", type=metres, default=LINK_DISTANCE_M,
                   help=f"largest gap between neighbouring objects of one site (default {LINK_DISTANCE_M:g}m)")
    s.add_argument("--min-objects", type=int, default=MIN_OBJECTS, help=f"fewest objects of a site (default {MIN_OBJECTS})")
    s.add_argument("--buffer", type=metres, default=BUFFER_M, help=f"growth of the hull polygon (default {BUFFER_M:g}m)")
    s.add_argument("--class-field", default="class", help="attribute holding the class name")
    s.add_argument("--layer", help="layer of a multi-layer GeoPackage")
    s.add_argument("--labels", help="labelled site polygons: also print site recall / precision")
    s.set_defaults(func=run_sites_cmd)

    c = subparsers.add_parser(
        "changes", help="compare objects of two dates: persisted, appeared, disappeared, changed",
        description="Match the objects of two dates after estimating their misregistration; coverage-aware.",
        epilog=CHANGES_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("before", help="objects of the earlier date (GeoJSON / GeoPackage, any CRS)")
    c.add_argument("after", help="objects of the later date")
    c.add_argument("--out", required=True, help="changes file: .geojson (EPSG:4326) or .gpkg (local UTM)")
    c.add_argument("--scene-before", nargs="+", help="scene(s) of the earlier date (valid-pixel coverage, chips)")
    c.add_argument("--scene-after", nargs="+", help="scene(s) of the later date")
    c.add_argument("--report", metavar="DIR", help="write an offline HTML report of the changed sites here")
    c.add_argument("--high", type=float, default=HIGH, help=f"confident score where the detections record no per-class threshold (default {HIGH})")
    c.add_argument("--low", type=float, default=LOW, help=f"below this an object counts as absent (default {LOW})")
    c.add_argument("--match-distance", type=metres, default=MATCH_DISTANCE_M,
                   help=f"largest centre distance of one object on two dates (default {MATCH_DISTANCE_M:g}m)")
    c.add_argument("--max-shift", type=metres, default=MAX_SHIFT_M,
                   help=f"largest misregistration searched (default {MAX_SHIFT_M:g}m)")
    c.add_argument("--link-distance", type=metres, default=LINK_DISTANCE_M, help="site grouping, as in `revet sites`")
    c.add_argument("--min-objects", type=int, default=MIN_OBJECTS, help="site grouping, as in `revet sites`")
    c.add_argument("--class-field", default="class", help="attribute holding the class name")
    c.add_argument("--truth", help="labelled changes (revet synth --pairs changes_truth.geojson): print metrics")
    c.set_defaults(func=run_changes_cmd)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="revet")
    p.add_argument("-v", "--verbose", action="store_true")
    add_sites_commands(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return a.func(a)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
