"""Format detection and conversion between COCO, YOLO and Pascal VOC.

A dataset path's format is told by its form: a ``.json`` file is COCO, a ``.yaml``/``.yml`` file
is a YOLO data YAML, a folder of ``.xml`` files (or with ``Annotations/``) is VOC.
"""
from __future__ import annotations

import os
from pathlib import Path

from detector.labels import LabelSet

FORMATS = ("coco", "yolo", "voc")


def detect_format(path: str | os.PathLike) -> str:
    """``"coco"``, ``"yolo"`` or ``"voc"`` from the path; ValueError naming the path otherwise."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: dataset not found")
    suffix = p.suffix.lower()
    if p.is_file() and suffix == ".json":
        return "coco"
    if p.is_file() and suffix in (".yaml", ".yml"):
        return "yolo"
    if p.is_dir() and ((p / "Annotations").is_dir() or any(p.glob("*.xml"))):
        return "voc"
    raise ValueError(f"{p}: cannot tell the dataset format; expected a COCO .json file, a YOLO "
                     f"data .yaml file or a folder of Pascal VOC .xml files")


def read_dataset(path: str | os.PathLike, *, fmt: str | None = None) -> LabelSet:
    """Read a COCO, YOLO or VOC dataset (format detected from the path unless ``fmt``)."""
    fmt = fmt or detect_format(path)
    if fmt == "coco":
        from detector.labels.coco import read_coco
        return read_coco(path)
    if fmt == "yolo":
        from detector.datasets.yolo import read_yolo
        return read_yolo(path)
    if fmt == "voc":
        from detector.datasets.voc import read_voc
        return read_voc(path)
    raise ValueError(f"unknown dataset format {fmt!r}; expected one of {FORMATS}")


def write_dataset(labels: LabelSet, fmt: str, out_dir: str | os.PathLike) -> Path:
    """Write ``labels`` into ``out_dir`` as ``fmt``; returns the file to read it back from:
    ``out_dir/dataset.json`` (COCO), ``out_dir/data.yaml`` (YOLO), ``out_dir`` (VOC)."""
    out = Path(out_dir)
    if fmt == "coco":
        from detector.labels.coco import write_coco
        return write_coco(labels, out / "dataset.json")
    if fmt == "yolo":
        from detector.datasets.yolo import write_yolo
        return write_yolo(labels, out)
    if fmt == "voc":
        from detector.datasets.voc import write_voc
        return write_voc(labels, out)
    raise ValueError(f"unknown output format {fmt!r}; expected one of {FORMATS}")


def check_inside_root(labels: LabelSet, root: str | os.PathLike) -> None:
    """Raise ValueError naming the dataset and image when an image path (absolute, or with ``..``
    normalised away) lies outside ``root``: a label file must not make Revet read or link, say,
    ``../../etc/passwd`` into its output. Symlinks inside the folder are the dataset's own
    choice (Revet's YOLO writer makes them) and are not followed."""
    base = Path(os.path.abspath(root))
    for rec in labels.images:
        target = Path(os.path.abspath(rec.path))
        if not target.is_relative_to(base):
            raise ValueError(f"{labels.source}: image {rec.image_id} file {rec.path} lies outside the dataset's "
                             f"folder {base}; pass --allow-outside-root if that is intended")


def convert(src: str | os.PathLike, to: str, out_dir: str | os.PathLike, *,
            allow_outside_root: bool = False) -> dict:
    """Convert the dataset at ``src`` (COCO/YOLO/VOC, detected) to ``to`` in ``out_dir``.

    Image sizes missing from the source (COCO without width/height) are read from the images.
    Image files must lie inside the dataset's folder (the label file's folder, or the VOC folder)
    unless ``allow_outside_root``. Returns a summary: source format, output path, images,
    objects per class.
    """
    if to not in FORMATS:
        raise ValueError(f"unknown output format {to!r}; expected one of {FORMATS}")
    fmt = detect_format(src)
    labels = read_dataset(src, fmt=fmt)
    if not allow_outside_root:
        check_inside_root(labels, Path(src) if Path(src).is_dir() else Path(src).parent)
    if to != "coco":
        from detector.datasets.yolo import image_size
        for rec in labels.images:
            if rec.width <= 0 or rec.height <= 0:
                rec.width, rec.height = image_size(Path(rec.path), owner=labels.source)
    out = write_dataset(labels, to, out_dir)
    return {"from": fmt, "to": to, "out": str(out), "images": len(labels.images),
            "objects": labels.class_counts()}
