"""Validate and summarise a labelled dataset: ``revet data check``.

:func:`check_dataset` reads a COCO JSON, a YOLO data YAML, a VOC folder, or rasters with vector
labels, and never stops at the first problem: it lists every one, each naming the file and the
item (annotation id, label-file line, XML object, feature id): missing or unreadable image,
image size that disagrees with the labels, box outside the image, zero or negative size,
unknown class, duplicate ids, vector labels whose CRS does not overlap the raster. It also
summarises the data: images, boxes, boxes per class, empty images, box sizes (square root of the
box area) in pixels and, where the raster's ground sample distance is known, in metres, and the
mix of band counts / dtypes and GSDs.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detector.labels import ImageRecord, LabelSet

PIXEL_BINS = (0, 8, 16, 32, 64, 128, 256, 512, float("inf"))
METRE_BINS = (0, 2, 5, 10, 20, 50, 100, float("inf"))
EDGE_TOLERANCE = 0.5  # pixels a box may stick out of its image before it is an error


@dataclass
class Problem:
    """One problem: ``file``, ``item`` within it ("" for the whole file), what is wrong."""

    file: str
    item: str
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = f"{self.file}: {self.item}" if self.item else self.file
        return f"{self.severity}: {where}: {self.message}"


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``ok`` is True when there is no error (warnings allowed)."""

    path: str
    format: str
    classes: list[str] = field(default_factory=list)
    images: int = 0
    empty_images: int = 0
    boxes: int = 0
    per_class: dict = field(default_factory=dict)
    box_size_px: dict = field(default_factory=dict)
    box_size_m: dict = field(default_factory=dict)
    rasters: dict = field(default_factory=dict)
    gsd: dict = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, file, item: str, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(str(file), item, message, severity))

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("path", "format", "classes", "images", "empty_images",
                                           "boxes", "per_class", "box_size_px", "box_size_m",
                                           "rasters", "gsd")}
        d["errors"] = len(self.errors)
        d["warnings"] = len(self.problems) - len(self.errors)
        d["problems"] = [str(p) for p in self.problems]
        return d

    def format_text(self) -> str:
        lines = [f"{self.path} ({self.format}): {self.images} images ({self.empty_images} empty), "
                 f"{self.boxes} boxes",
                 "per class: " + ", ".join(f"{k} {v}" for k, v in self.per_class.items()),
                 "box size, px (sqrt area): " + _hist_text(self.box_size_px)]
        if self.box_size_m:
            lines.append("box size, m (sqrt area): " + _hist_text(self.box_size_m))
        lines.append("rasters (bands x dtype): " + ", ".join(f"{k}: {v}" for k, v in self.rasters.items()))
        if self.gsd:
            lines.append(f"GSD m/px: {self.gsd}")
        lines += [str(p) for p in self.problems]
        lines.append(f"{len(self.errors)} error(s), {len(self.problems) - len(self.errors)} warning(s)")
        return "\n".join(lines)


def _hist_text(h: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in h.items()) or "-"


def _histogram(values: np.ndarray, bins) -> dict:
    counts, _ = np.histogram(values, bins=np.asarray(bins, np.float64))
    names = [f"{a:g}-{b:g}" if np.isfinite(b) else f">={a:g}" for a, b in zip(bins[:-1], bins[1:])]
    return {n: int(c) for n, c in zip(names, counts)}


# -- COCO: the one reader (detector.labels.coco), every bad item reported -----------------------

def _coco(path: Path, report: CheckReport):
    """COCO through :func:`detector.labels.coco.read_coco_items` with every bad item reported,
    plus a warning for image entries that share a file."""
    from detector.labels.coco import read_coco_items

    ls, items = read_coco_items(path, on_error=_with_problems(report))
    first: dict = {}
    for rec in ls.images:
        if rec.path in first:
            report.add(path, f"image id {rec.image_id}", f"file {rec.path} is also image id "
                       f"{first[rec.path]}", "warning")
        first.setdefault(rec.path, rec.image_id)
    return ls, items


def _with_problems(report: CheckReport):
    def on_error(file, item, message):
        report.add(file, item, message)
    return on_error


# -- image checks and summary --------------------------------------------------------------

def _check_images(ls: LabelSet, report: CheckReport, items: dict, owner: Path) -> None:
    from detector.raster import open_raster, raster_info

    reported = {Path(p.item.removeprefix("image ")) for p in report.problems if p.item.startswith("image ")}
    sizes_px, sizes_m, gsds = [], [], []
    mix: Counter = Counter()
    seen: dict = {}
    for rec in ls.images:
        path = Path(rec.path)
        if path in seen:
            report.add(owner, f"image {path}", "listed twice (duplicate image)")
            continue
        seen[path] = True
        info = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with open_raster(path) as ds:
                    info = raster_info(ds)
        except FileNotFoundError:
            if path not in reported:
                report.add(owner, f"image {path}", "missing image: file does not exist")
        except ValueError as e:
            if path not in reported:
                report.add(owner, f"image {path}", "unreadable image: " + str(e).removeprefix(f"{path}: "))
        w, h = rec.width, rec.height
        if info is not None:
            mix[f"{info.count} x {info.dtype}"] += 1
            if info.gsd:
                gsds.append(info.gsd)
            if (w or h) and (w, h) != (info.width, info.height):
                report.add(owner, f"image {path}", f"labels give size {w}x{h} but the image is "
                           f"{info.width}x{info.height}")
            w, h = info.width, info.height
        names = items.get(path) or [f"image {path} box {k}" for k in range(len(rec.boxes))]
        for k, (x1, y1, x2, y2) in enumerate(rec.boxes.tolist()):
            if x2 <= x1 or y2 <= y1:
                report.add(owner, names[k], f"box has zero or negative size ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
            elif w and h and (x1 < -EDGE_TOLERANCE or y1 < -EDGE_TOLERANCE
                              or x2 > w + EDGE_TOLERANCE or y2 > h + EDGE_TOLERANCE):
                report.add(owner, names[k], f"box outside the image: ({x1:g}, {y1:g}, {x2:g}, "
                           f"{y2:g}) is not within the {w}x{h} image {path.name}")
        if len(rec.boxes):
            s = np.sqrt(np.clip((rec.boxes[:, 2] - rec.boxes[:, 0]) * (rec.boxes[:, 3] - rec.boxes[:, 1]), 0, None))
            sizes_px.append(s)
            if info is not None and info.gsd:
                sizes_m.append(s * info.gsd)
    _summarise(ls, report, sizes_px, sizes_m, gsds, mix)


def _summarise(ls, report, sizes_px, sizes_m, gsds, mix) -> None:
    report.classes = list(ls.classes)
    report.images = len(ls.images)
    report.empty_images = sum(1 for r in ls.images if len(r.boxes) == 0)
    report.boxes = sum(len(r.boxes) for r in ls.images)
    report.per_class = ls.class_counts()
    report.box_size_px = _histogram(np.concatenate(sizes_px) if sizes_px else np.zeros(0), PIXEL_BINS)
    if sizes_m:
        report.box_size_m = _histogram(np.concatenate(sizes_m), METRE_BINS)
    report.rasters = dict(mix)
    if gsds:
        report.gsd = {"min": round(min(gsds), 4), "max": round(max(gsds), 4)}


# -- vector labels over rasters ----------------------------------------------------------------

def check_vector(rasters, labels: str | os.PathLike, *, class_field: str = "class",
                 classes: list[str] | None = None) -> CheckReport:
    """Check vector labels over one or more rasters: readable features with a class, CRSs that
    overlap, features outside every raster (warnings), and the same summary as datasets."""
    from detector.labels.vector import boxes_on_raster, class_index, overlap_error, read_vector
    from detector.raster import open_raster, raster_info

    if isinstance(rasters, (str, os.PathLike)):
        rasters = [rasters]
    labels = Path(labels)
    report = CheckReport(str(labels), "vector")
    try:
        vl = read_vector(labels, class_field=class_field, on_error=_with_problems(report))
    except (ValueError, FileNotFoundError) as e:
        report.add(labels, "", str(e).removeprefix(f"{labels}: "))
        return report
    classes, feat_labels = class_index(vl, classes, _with_problems(report))
    seen = np.zeros(len(vl), bool)
    records, sizes_px, sizes_m, gsds, mix = [], [], [], [], Counter()
    for r in rasters:
        try:
            with open_raster(r) as ds:
                info = raster_info(ds)
            placed = boxes_on_raster(vl, info.crs, info.transform, info.width, info.height, raster=r)
        except FileNotFoundError:
            report.add(r, "", "missing image: file does not exist")
            continue
        except ValueError as e:
            report.add(r, "", str(e).removeprefix(f"{r}: "))
            continue
        mix[f"{info.count} x {info.dtype}"] += 1
        inside = placed.inside & (feat_labels >= 0)
        if len(vl) and not inside.any():
            report.add(labels, "", "label CRS does not overlap the raster: " +
                       overlap_error(vl, r, info.crs, info.width, info.height).removeprefix(f"{labels}: "))
        seen |= inside
        b = placed.clipped[inside]
        records.append(ImageRecord(Path(r), info.width, info.height, b, feat_labels[inside]))
        s = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
        sizes_px.append(s)
        if info.gsd:
            gsds.append(info.gsd)
            sizes_m.append(s * info.gsd)
    outside = np.flatnonzero(~seen & (feat_labels >= 0))
    if len(outside) and seen.any():
        ids = [vl.ids[i] for i in outside[:10]]
        report.add(labels, f"features {ids}{' ...' if len(outside) > 10 else ''}",
                   f"{len(outside)} feature(s) lie outside every raster", "warning")
    ls = LabelSet(classes, records, labels)
    _summarise(ls, report, sizes_px, sizes_m, gsds, mix)
    report.images = len(records)
    return report


def check_dataset(path: str | os.PathLike, *, labels: str | os.PathLike | None = None,
                  class_field: str = "class") -> CheckReport:
    """Check a COCO JSON, YOLO data YAML or VOC folder (format from the path), or, with
    ``labels`` (a vector file), the raster ``path`` with those labels. Returns a
    :class:`CheckReport`; never raises for problems in the data."""
    from detector.datasets.convert import detect_format

    path = Path(path)
    if labels is not None:
        return check_vector([path], labels, class_field=class_field)
    try:
        fmt = detect_format(path)
    except (ValueError, FileNotFoundError) as e:
        report = CheckReport(str(path), "unknown")
        report.add(path, "", str(e).removeprefix(f"{path}: "))
        return report
    report = CheckReport(str(path), fmt)
    items: dict = {}
    try:
        if fmt == "coco":
            ls, items = _coco(path, report)
        elif fmt == "yolo":
            from detector.datasets.yolo import read_yolo
            ls = read_yolo(path, on_error=_with_problems(report))
        else:
            from detector.datasets.voc import read_voc
            ls = read_voc(path, on_error=_with_problems(report))
    except (ValueError, FileNotFoundError) as e:
        report.add(path, "", str(e).removeprefix(f"{path}: "))
        return report
    if ls is not None:
        _check_images(ls, report, items, path)
    return report
