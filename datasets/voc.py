"""Pascal VOC XML labels in and out.

One XML file per image (``<annotation>`` with ``<filename>``, optional ``<path>``, ``<size>`` and
``<object>``s of ``<name>`` and ``<bndbox>``). Coordinates follow the VOC devkit: 1-based,
inclusive pixel indices, so a box over 0-based pixel columns 10..19 is ``xmin=11, xmax=20``; in
memory (pixel edges) it becomes ``x1 = xmin - 1, x2 = xmax`` (as detectron2 reads VOC). Writers
round to whole pixels (VOC tools expect integers), so a box moves by at most 0.5 pixel.

Class order: ``classes.txt`` (one name per line) in the folder or its parent when present (the
writer puts it there), else the names in sorted order. The image is found from ``<path>``
(relative to the XML's folder), else ``<filename>`` next to the XML, in ``../JPEGImages/`` or in
``../images/``.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from detector.datasets.yolo import place_image
from detector.labels import ImageRecord, LabelSet, OnError, report_problem


def _xml_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: VOC folder not found")
    if not folder.is_dir():
        raise ValueError(f"{folder}: expected a folder of VOC .xml files")
    ann = folder / "Annotations"
    files = sorted((ann if ann.is_dir() else folder).glob("*.xml"))
    if not files:
        raise ValueError(f"{folder}: no .xml annotation files found (looked in the folder and "
                         f"in Annotations/)")
    return files


def _classes_file(folder: Path, files: list[Path]) -> Path | None:
    for d in (folder, files[0].parent, folder.parent):
        if (d / "classes.txt").is_file():
            return d / "classes.txt"
    return None


def _text(node, tag: str):
    child = node.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _image_path(xml: Path, root) -> Path:
    p, name = _text(root, "path"), _text(root, "filename")
    candidates = []
    if p:
        q = Path(p)
        candidates.append(q if q.is_absolute() else xml.parent / q)
    if name:
        candidates += [xml.parent / name, xml.parent.parent / "JPEGImages" / name,
                       xml.parent.parent / "images" / name]
    for c in candidates:
        if c.exists():
            return c
    return candidates[0] if candidates else xml.with_suffix("")


def read_voc_file(xml: Path, classes: list[str] | None, on_error: OnError = None):
    """Parse one VOC XML -> (image path, width, height, boxes, class names) or None if
    unusable (after reporting). ``classes``: allowed names (None: any)."""
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as e:
        report_problem(on_error, xml, "", f"malformed XML ({e})")
        return None
    if root.tag != "annotation":
        report_problem(on_error, xml, "", f"expected a VOC <annotation> root element, got <{root.tag}>")
        return None
    if not (_text(root, "filename") or _text(root, "path")):
        report_problem(on_error, xml, "<filename>", "missing; expected the image file name")
        return None
    image = _image_path(xml, root)
    size = root.find("size")
    try:
        w, h = int(float(_text(size, "width"))), int(float(_text(size, "height")))
    except (TypeError, ValueError, AttributeError):
        w = h = 0  # read from the image by the caller
    boxes, names = [], []
    for k, obj in enumerate(root.findall("object")):
        name = _text(obj, "name")
        item = f"object {k} ({name})"
        if not name:
            report_problem(on_error, xml, f"object {k}", "has no <name>")
            continue
        if classes is not None and name not in classes:
            report_problem(on_error, xml, item, f"unknown class {name!r}; expected one of {classes}")
            continue
        bb = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(_text(bb, t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError, AttributeError):
            report_problem(on_error, xml, item, "expected <bndbox> with numeric xmin, ymin, xmax, ymax")
            continue
        x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax
        if x2 <= x1 or y2 <= y1:
            report_problem(on_error, xml, item, f"box has non-positive size (xmin={xmin:g}, "
                           f"xmax={xmax:g}, ymin={ymin:g}, ymax={ymax:g})")
            continue
        if w and h and (x1 < 0 or y1 < 0 or x2 > w or y2 > h):
            report_problem(on_error, xml, item, f"box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} "
                           f"ymax={ymax:g} lies outside the {w}x{h} image (VOC indices are 1..{w}, 1..{h})")
            continue
        boxes.append((x1, y1, x2, y2))
        names.append(name)
    return image, w, h, np.array(boxes, np.float32).reshape(-1, 4), names


def read_voc(folder: str | os.PathLike, *, classes: list[str] | None = None,
             on_error: OnError = None) -> LabelSet:
    """Read a folder of VOC XML files (or its ``Annotations/`` sub-folder) into a LabelSet.

    ``classes``: the class list; default ``classes.txt`` if present, else sorted names found.
    Raises ValueError naming the XML file and object for malformed XML, missing ``<bndbox>``,
    non-positive or out-of-image boxes, and names not in ``classes.txt``/``classes``. With
    ``on_error`` bad items are reported and skipped instead.
    """
    from detector.datasets.yolo import image_size

    folder = Path(folder)
    files = _xml_files(folder)
    cfile = _classes_file(folder, files)
    if classes is None and cfile is not None:
        classes = [ln.strip() for ln in cfile.read_text().splitlines() if ln.strip()]
    parsed = [(xml, read_voc_file(xml, classes, on_error)) for xml in files]
    parsed = [(x, p) for x, p in parsed if p is not None]
    if classes is None:
        classes = sorted({n for _, p in parsed for n in p[4]})
    index = {c: i for i, c in enumerate(classes)}
    images = []
    for xml, (image, w, h, boxes, names) in parsed:
        if not (w and h):
            size = image_size(image, on_error, owner=xml)
            if size is None:
                continue
            w, h = size
        images.append(ImageRecord(image, w, h, boxes, [index[n] for n in names],
                                  image_id=len(images) + 1))
    return LabelSet(list(classes), images, folder)


def write_voc(labels: LabelSet, out_dir: str | os.PathLike, *, images: str = "link") -> Path:
    """Write one VOC XML per image into ``out_dir/Annotations/``, the images into
    ``out_dir/JPEGImages/`` (symlinks with ``images="link"``, falling back to copies, or copies
    with ``"copy"``; any format, the VOC folder name notwithstanding) and the class list to
    ``out_dir/classes.txt``; returns ``out_dir``. ``<path>`` holds the image path relative to the
    XML's folder, inside the dataset. Boxes are clipped to the image and rounded to whole pixels."""
    if images not in ("link", "copy"):
        raise ValueError(f"images must be 'link' or 'copy', got {images!r}")
    out = Path(out_dir)
    ann = out / "Annotations"
    ann.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for rec in labels.images:
        stem = Path(rec.path).stem
        name, k = stem, 1
        while name in used:
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        xml = ann / f"{name}.xml"
        placed = out / "JPEGImages" / f"{name}{Path(rec.path).suffix}"
        place_image(Path(rec.path), placed, images)
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "JPEGImages"
        ET.SubElement(root, "filename").text = placed.name
        ET.SubElement(root, "path").text = os.path.relpath(placed, ann)
        size = ET.SubElement(root, "size")
        ET.SubElement(size, "width").text = str(rec.width)
        ET.SubElement(size, "height").text = str(rec.height)
        ET.SubElement(size, "depth").text = "0"
        b = np.clip(np.round(rec.boxes.astype(np.float64)), 0, [rec.width, rec.height] * 2)
        for (x1, y1, x2, y2), lab in zip(b, rec.labels.tolist()):
            if x2 <= x1 or y2 <= y1:
                continue
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = labels.classes[lab]
            ET.SubElement(obj, "difficult").text = "0"
            bb = ET.SubElement(obj, "bndbox")
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (x1 + 1, y1 + 1, x2, y2)):
                ET.SubElement(bb, tag).text = str(int(v))
        ET.indent(root)
        ET.ElementTree(root).write(xml, encoding="utf-8", xml_declaration=False)
    (out / "classes.txt").write_text("\n".join(labels.classes) + "\n")
    return out
