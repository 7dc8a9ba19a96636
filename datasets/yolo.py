"""YOLO (Ultralytics) detection labels in and out.

Layout: a data YAML names the classes and the image folders::

    path: .            # dataset root, relative to the YAML's folder (default: the YAML's folder)
    train: images/train   # a folder of images, a .txt list of image paths, or a list of either
    val: images/val
    names: [bunker, revetment, shelter]   # or {0: bunker, 1: revetment, 2: shelter}

The label file of ``.../images/.../x.tif`` is ``.../labels/.../x.txt`` (last ``images`` path
part replaced by ``labels``); a missing label file means an image with no objects. Each line is
``class cx cy w h``, centre and size normalized to [0, 1] by the image width and height, or the
segment form ``class x1 y1 x2 y2 x3 y3 ...`` (normalized polygon; its bounds are the box).
Image sizes are read from the images with rasterio (any raster: GeoTIFF, PNG, JPEG).
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import yaml

from detector.labels import ImageRecord, LabelSet, OnError, report_problem

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".jp2", ".img", ".vrt")
SPLIT_KEYS = ("train", "val", "test")

def image_size(path: Path, on_error: OnError = None, *, owner=None) -> tuple[int, int] | None:
    """(width, height) of an image read with rasterio; None (after reporting) when unreadable."""
    from detector.raster import open_raster

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning for PNG/JPEG
            with open_raster(path) as ds:
                return ds.width, ds.height
    except FileNotFoundError:
        report_problem(on_error, owner or path, "" if owner is None else f"image {path}",
                       "image file does not exist", FileNotFoundError)
    except ValueError as e:
        report_problem(on_error, owner or path, "" if owner is None else f"image {path}",
                       str(e).removeprefix(f"{path}: "))
    return None


def label_path(image: Path) -> Path:
    """``.../images/a/b.tif`` -> ``.../labels/a/b.txt`` (the Ultralytics rule)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _class_names(path: Path, data: dict) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: 'names' keys must be class indices 0..K-1, got {list(names)}") from None
        if keys != list(range(len(keys))):
            raise ValueError(f"{path}: 'names' keys must be 0..{len(keys) - 1} without gaps, got {keys}")
        names = [names.get(k, names.get(str(k))) for k in keys]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{path}: expected 'names': a list of class names or a mapping "
                         f"{{0: name, ...}}, got {data.get('names')!r}")
    names = [str(n) for n in names]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{path}: class names {dup} appear more than once in 'names'")
    if "nc" in data and int(data["nc"]) != len(names):
        raise ValueError(f"{path}: 'nc' is {data['nc']} but 'names' lists {len(names)} classes")
    return names


def _split_images(path: Path, root: Path, entry, split: str) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for e in entries:
        p = Path(str(e))
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            images += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                line = line.strip()
                if line:
                    q = Path(line)
                    images.append(q if q.is_absolute() else root / q)
        else:
            raise FileNotFoundError(f"{path}: '{split}' entry {e!r}: {p} is neither an image "
                                    f"folder nor a .txt list of images")
    return images


def parse_label_file(txt: Path, n_classes: int, width: int, height: int,
                     on_error: OnError = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse one YOLO label file into pixel ``x1, y1, x2, y2`` boxes and class indices."""
    boxes, labels = [], []
    for n, line in enumerate(txt.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        item = f"line {n}"
        parts = line.split()
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            report_problem(on_error, txt, item, f"expected numbers 'class cx cy w h', got {line.strip()!r}")
            continue
        if len(vals) != 5 and not (len(vals) >= 7 and len(vals) % 2 == 1):
            report_problem(on_error, txt, item, f"expected 5 numbers 'class cx cy w h' (or a segment "
                           f"'class x1 y1 x2 y2 x3 y3 ...'), got {len(vals)}: {line.strip()!r}")
            continue
        cls = vals[0]
        if not np.isfinite(vals).all():  # float() takes 'inf' and 'nan'; int(inf) would raise
            report_problem(on_error, txt, item, f"expected finite numbers 'class cx cy w h', got "
                           f"{line.strip()!r}")
            continue
        if cls != int(cls):
            report_problem(on_error, txt, item, f"class {parts[0]} is not an integer class index "
                           f"(0..{n_classes - 1})")
            continue
        if not 0 <= cls < n_classes:
            report_problem(on_error, txt, item, f"unknown class {parts[0]}; the data YAML names "
                           f"classes 0..{n_classes - 1}")
            continue
        coords = np.array(vals[1:], np.float64)
        if np.any(coords < 0) or np.any(coords > 1):
            report_problem(on_error, txt, item, f"coordinates must be normalized to [0, 1], got "
                           f"{' '.join(parts[1:])}")
            continue
        if len(vals) == 5:
            cx, cy, w, h = coords
            if w <= 0 or h <= 0:
                report_problem(on_error, txt, item, f"box has non-positive size w={w:g}, h={h:g}")
                continue
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            if x1 < -1e-6 or y1 < -1e-6 or x2 > 1 + 1e-6 or y2 > 1 + 1e-6:
                report_problem(on_error, txt, item, f"box cx={cx:g} cy={cy:g} w={w:g} h={h:g} extends "
                               f"outside the image (normalized [0, 1])")
                continue
        else:
            xs, ys = coords[0::2], coords[1::2]
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
            if x2 <= x1 or y2 <= y1:
                report_problem(on_error, txt, item, "segment has zero width or height")
                continue
        boxes.append((x1 * width, y1 * height, x2 * width, y2 * height))
        labels.append(int(cls))
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def read_yolo(path: str | os.PathLike, *, splits: str | list[str] | None = None,
              on_error: OnError = None) -> LabelSet:
    """Read a YOLO dataset from its data YAML into one :class:`LabelSet`.

    ``splits``: which of ``train``/``val``/``test`` to read (default: all present, in that
    order). Raises ValueError / FileNotFoundError naming the file and item (label file and line
    number) for a bad YAML, unknown class, a line without 5 numbers, coordinates outside
    [0, 1], non-positive size, a missing or unreadable image. With ``on_error`` the bad items
    are reported to it and skipped instead (used by ``revet data check``).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: YOLO data YAML not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YOLO data YAML mapping with 'names' and "
                         f"'train'/'val' entries, got {type(data).__name__}")
    names = _class_names(path, data)
    root = Path(str(data.get("path") or "."))
    root = root if root.is_absolute() else path.parent / root
    wanted = [splits] if isinstance(splits, str) else list(splits or SPLIT_KEYS)
    if not any(data.get(s) for s in wanted):
        raise ValueError(f"{path}: no image entries; expected one of {wanted} naming an image "
                         f"folder or list")
    images = []
    for split in wanted:
        if not data.get(split):
            continue
        for img in _split_images(path, root, data[split], split):
            size = image_size(img, on_error, owner=path)
            if size is None:
                continue
            w, h = size
            txt = label_path(img)
            if txt.is_file():
                boxes, labels = parse_label_file(txt, len(names), w, h, on_error)
            else:
                boxes, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
            images.append(ImageRecord(img, w, h, boxes, labels, image_id=len(images) + 1))
    return LabelSet(names, images, path)


def _common_root(paths: list[Path]) -> Path:
    if not paths:
        return Path(".")
    parents = [str(Path(p).resolve().parent) for p in paths]
    return Path(os.path.commonpath(parents))


def place_image(src: Path, dst: Path, mode: str) -> None:
    """Put image ``src`` at ``dst``: a symlink (``mode='link'``, falling back to a copy) or a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if mode == "link":
        try:
            dst.symlink_to(src.resolve())
            return
        except OSError:  # no symlink rights (Windows): fall back to a copy
            pass
    shutil.copy2(src, dst)


def write_yolo(labels: LabelSet, out_dir: str | os.PathLike, *, split: str = "train",
               images: str = "link") -> Path:
    """Write ``labels`` as a YOLO dataset; returns the data YAML path (``out_dir/data.yaml``).

    Images go to ``out_dir/images/{split}/`` (keeping their sub-folders relative to the
    images' common folder) as symlinks (``images="link"``, falling back to copies) or copies
    (``"copy"``); labels to ``out_dir/labels/{split}/*.txt``, one per image (empty for images
    without objects), with 6 decimals. Box coordinates are clipped to the image first.
    """
    if images not in ("link", "copy"):
        raise ValueError(f"images must be 'link' or 'copy', got {images!r}")
    out = Path(out_dir)
    root = _common_root([r.path for r in labels.images])
    seen: set[Path] = set()
    for rec in labels.images:
        if rec.width <= 0 or rec.height <= 0:
            raise ValueError(f"{labels.source}: image {rec.path} has unknown size "
                             f"{rec.width}x{rec.height}; YOLO needs it to normalize boxes")
        rel = Path(os.path.relpath(Path(rec.path).resolve(), root))
        dst = out / "images" / split / rel
        if dst in seen:
            raise ValueError(f"{labels.source}: two images map to {dst}")
        seen.add(dst)
        place_image(Path(rec.path), dst, images)
        b = np.clip(rec.boxes.astype(np.float64), 0, [rec.width, rec.height] * 2)
        lines = []
        for (x1, y1, x2, y2), lab in zip(b, rec.labels.tolist()):
            if x2 <= x1 or y2 <= y1:
                continue
            lines.append(f"{lab} {(x1 + x2) / 2 / rec.width:.6f} {(y1 + y2) / 2 / rec.height:.6f} "
                         f"{(x2 - x1) / rec.width:.6f} {(y2 - y1) / rec.height:.6f}")
        txt = label_path(dst)
        txt.parent.mkdir(parents=True, exist_ok=True)
        txt.write_text("\n".join(lines) + ("\n" if lines else ""))
    data = {"path": ".", split: f"images/{split}", "nc": len(labels.classes),
            "names": {i: n for i, n in enumerate(labels.classes)}}
    yml = out / "data.yaml"
    yml.write_text(yaml.safe_dump(data, sort_keys=False))
    return yml
