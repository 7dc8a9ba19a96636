"""COCO detection JSON in and out.

Categories are matched to a model's classes **by name**; COCO ids are arbitrary. Image
``file_name`` is resolved relative to the JSON file's folder (absolute paths are kept).
COCO ``bbox`` is ``[x, y, w, h]`` in pixels; in memory it becomes ``x1, y1, x2, y2``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from detector.datasets.labels import ImageRecord, LabelSet


def read_coco(path: str | os.PathLike, *, check_files: bool = False) -> LabelSet:
    """Read a COCO detection JSON into a :class:`LabelSet`.

    Classes are the dataset's category names in category-id order. ``iscrowd`` annotations are
    skipped. Raises ValueError naming the file and item for malformed content: missing keys,
    annotations that point at unknown images or categories, boxes with non-positive size.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: COCO file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid COCO JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a COCO JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: expected a list under '{key}'")
    cats = sorted(data["categories"], key=lambda c: c.get("id", 0) if isinstance(c, dict) and _is_int(c.get("id")) else 0)
    names, ids = [], []
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise ValueError(f"{path}: categories[{i}] needs 'id' and 'name', got {c}")
        if not _is_int(c["id"]):
            raise ValueError(f"{path}: categories[{i}]: 'id' must be an integer, got {c['id']!r}")
        if c["name"] in names:
            raise ValueError(f"{path}: category name {c['name']!r} appears twice")
        names.append(str(c["name"]))
        ids.append(int(c["id"]))
    cat_index = {cid: k for k, cid in enumerate(ids)}

    root = path.parent
    records: dict[int, ImageRecord] = {}
    per_image: dict[int, tuple[list, list]] = {}
    if not isinstance(data.get("annotations", []), list):
        raise ValueError(f"{path}: expected a list under 'annotations', got {type(data['annotations']).__name__}")
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict):
            raise ValueError(f"{path}: images[{i}]: expected an object, got {im!r}")
        for key in ("id", "file_name"):
            if key not in im:
                raise ValueError(f"{path}: images[{i}] has no '{key}'")
        if not _is_int(im["id"]):
            raise ValueError(f"{path}: images[{i}]: 'id' must be an integer, got {im['id']!r}")
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            raise ValueError(f"{path}: images[{i}]: 'file_name' must be a non-empty string, got {im['file_name']!r}")
        for key in ("width", "height"):
            if key in im and not (_is_int(im[key]) and 0 <= im[key] <= MAX_SIDE):
                raise ValueError(f"{path}: images[{i}]: '{key}' must be an integer in [0, {MAX_SIDE}], got {im[key]!r}")
        iid = int(im["id"])
        if iid in records:
            raise ValueError(f"{path}: images[{i}]: duplicate image id {iid}")
        file = Path(im["file_name"])
        file = file if file.is_absolute() else root / file
        if check_files and not file.exists():
            raise FileNotFoundError(f"{path}: images[{i}] file {file} does not exist")
        records[iid] = ImageRecord(file, int(im.get("width", 0)), int(im.get("height", 0)), image_id=iid)
        per_image[iid] = ([], [])

    for i, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict):
            raise ValueError(f"{path}: annotations[{i}]: expected an object, got {ann!r}")
        if ann.get("iscrowd", 0):
            continue
        iid, cid, bbox = ann.get("image_id"), ann.get("category_id"), ann.get("bbox")
        if iid not in records:
            raise ValueError(f"{path}: annotations[{i}] (id {ann.get('id')}) refers to unknown image_id {iid}")
        if cid not in cat_index:
            raise ValueError(
                f"{path}: annotations[{i}] (id {ann.get('id')}) has unknown category_id {cid}; "
                f"categories are {dict(zip(ids, names))}"
            )
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise ValueError(f"{path}: annotations[{i}] (id {ann.get('id')}): expected bbox [x, y, w, h] of finite "
                             f"numbers, got {bbox}")
        x, y, w, h = (float(v) for v in bbox)
        if not (w > 0 and h > 0):
            raise ValueError(
                f"{path}: annotations[{i}] (id {ann.get('id')}): box has non-positive size w={w}, h={h}"
            )
        per_image[iid][0].append((x, y, x + w, y + h))
        per_image[iid][1].append(cat_index[cid])

    images = []
    for iid, rec in records.items():
        boxes, labels = per_image[iid]
        rec.boxes = np.array(boxes, np.float32).reshape(-1, 4)
        rec.labels = np.array(labels, np.int64)
        images.append(rec)
    return LabelSet(names, images, path, ids)


MAX_SIDE = 100_000  # pixels (50 km at 0.5 m): larger declared image sizes are refused, not allocated


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def write_coco(labels: LabelSet, path: str | os.PathLike, *, category_ids: list[int] | None = None) -> Path:
    """Write a :class:`LabelSet` as COCO JSON; file names are made relative to ``path``'s folder
    where possible. Category ids are ``category_ids`` or the set's own or 1..K."""
    path = Path(path)
    ids = category_ids or labels.category_ids or list(range(1, len(labels.classes) + 1))
    images, anns = [], []
    for k, rec in enumerate(labels.images):
        iid = rec.image_id if rec.image_id is not None else k + 1
        try:
            name = os.path.relpath(Path(rec.path).resolve(), path.parent.resolve())
        except ValueError:
            name = str(rec.path)
        images.append({"id": iid, "file_name": name, "width": rec.width, "height": rec.height})
        for box, lab in zip(rec.boxes.tolist(), rec.labels.tolist()):
            x1, y1, x2, y2 = box
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": ids[lab],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": 0})
    cats = [{"id": i, "name": n} for i, n in zip(ids, labels.classes)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    tmp.replace(path)
    return path
