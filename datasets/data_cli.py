"""``revet data ...``: convert, chip, check, preview, from-review. Each handler parses, calls one
function, prints. Registered by ``detector.cli`` through :func:`add_data_commands`."""
from __future__ import annotations

import json


def _convert(a) -> int:
    from detector.datasets.convert import convert

    print(json.dumps(convert(a.src, a.to, a.out, allow_outside_root=a.allow_outside_root), indent=2))
    return 0


def _chip(a) -> int:
    from detector.datasets.chip import chip

    summary = chip(a.rasters, a.labels, a.out, tile_size=a.tile_size, overlap=a.overlap,
                   keep_empty=a.keep_empty, class_field=a.class_field,
                   classes=a.classes.split(",") if a.classes else None,
                   min_fraction=a.min_fraction, seed=a.seed, layer=a.layer,
                   **({"max_megapixels": a.max_megapixels} if a.max_megapixels else {}))
    print(json.dumps(summary, indent=2))
    return 0


def _check(a) -> int:
    from detector.datasets.check import check_dataset

    report = check_dataset(a.dataset, labels=a.labels, class_field=a.class_field)
    print(json.dumps(report.to_dict(), indent=2) if a.json else report.format_text())
    return 0 if report.ok else 1


def _preview(a) -> int:
    from detector.datasets.preview import preview

    augment = None
    if a.augment:
        try:
            augment = json.loads(a.augment)
        except json.JSONDecodeError as e:
            raise ValueError(f"--augment: expected a JSON object of options, got {a.augment!r} ({e})") from None
    print(preview(a.dataset, a.out, n=a.n, cols=a.cols, size=a.size, seed=a.seed, crop=a.crop,
                  augment=augment))
    return 0


def add_data_commands(subparsers) -> None:
    """Register ``data`` with sub-commands convert, chip, check, preview on ``subparsers``."""
    d = subparsers.add_parser("data", help="label formats, chipping, checks and previews")
    sub = d.add_subparsers(dest="data_command", required=True)

    c = sub.add_parser("convert", help="convert between COCO, YOLO and Pascal VOC")
    c.add_argument("src", help="COCO .json, YOLO data .yaml, or a folder of VOC .xml")
    c.add_argument("--to", required=True, choices=["coco", "yolo", "voc"])
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--allow-outside-root", action="store_true",
                   help="accept image paths outside the dataset's folder (refused by default)")
    c.set_defaults(func=_convert)

    k = sub.add_parser("chip", help="cut large GeoTIFFs with vector labels into a COCO tile dataset")
    k.add_argument("rasters", nargs="+", metavar="RASTER")
    k.add_argument("--labels", required=True, help="GeoJSON, GeoPackage or shapefile (any CRS)")
    k.add_argument("--out", required=True, help="output folder (tiles/ and dataset.json)")
    k.add_argument("--tile-size", type=int, default=512)
    k.add_argument("--overlap", type=int, default=64)
    k.add_argument("--keep-empty", type=float, default=0.1, metavar="FRACTION",
                   help="fraction of tiles without objects kept as negatives (seeded)")
    k.add_argument("--class-field", default="class", help="attribute holding the class name")
    k.add_argument("--classes", help="comma-separated class list (default: names found)")
    k.add_argument("--min-fraction", type=float, default=0.5,
                   help="keep a box cut by a tile edge when this fraction of it is inside")
    k.add_argument("--layer", help="layer of a multi-layer GeoPackage")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--max-megapixels", type=float, default=None, metavar="MP",
                   help="refuse a raster larger than this many megapixels, from its header (default 20000)")
    k.set_defaults(func=_chip)

    v = sub.add_parser("check", help="validate and summarise a dataset; exit 1 on errors")
    v.add_argument("dataset", help="COCO .json, YOLO data .yaml, VOC folder, or a raster with --labels")
    v.add_argument("--labels", help="vector labels over the raster DATASET")
    v.add_argument("--class-field", default="class")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=_check)

    p = sub.add_parser("preview", help="PNG grid of augmented samples with their boxes")
    p.add_argument("dataset")
    p.add_argument("--out", required=True, help="output .png")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--size", type=int, default=256, help="pixels per sample")
    p.add_argument("--crop", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", help='JSON of augmentation options, e.g. \'{"rotate": true}\' '
                   "(default: the OVERHEAD set)")
    p.set_defaults(func=_preview)

    add_from_review_command(sub)


def add_from_review_command(data_subparsers) -> None:
    """Add ``from-review`` to the subparsers of ``revet data``."""
    f = data_subparsers.add_parser("from-review", help="review decisions -> COCO tile dataset (labels and hard negatives)")
    f.add_argument("review_dir", help="folder written by revet review, holding decisions.json")
    f.add_argument("--out", required=True, help="output folder (tiles/ and dataset.json)")
    f.add_argument("--decisions", help="decisions file (default REVIEW_DIR/decisions.json, e.g. an Export)")
    f.add_argument("--scene", help="the scene raster (default: the path recorded in review.json)")
    f.add_argument("--tile-size", type=int, default=512)
    f.add_argument("--overlap", type=int, default=64)
    f.add_argument("--min-fraction", type=float, default=0.5,
                   help="a box cut by a tile edge belongs to a tile holding this fraction of it")
    f.add_argument("--keep-unreviewed", action="store_true",
                   help="also use tiles that hold candidates nobody reviewed (default: skip them)")
    f.set_defaults(func=run_from_review)


def run_from_review(a) -> int:
    from detector.datasets.from_review import from_review

    summary = from_review(a.review_dir, a.out, decisions=a.decisions, scene=a.scene, tile_size=a.tile_size,
                          overlap=a.overlap, min_fraction=a.min_fraction, skip_unreviewed=not a.keep_unreviewed)
    print(json.dumps(summary, indent=2))
    return 0
