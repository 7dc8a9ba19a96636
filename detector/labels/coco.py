"""COCO detection JSON in and out: the one COCO reader and writer (training, evaluation,
``revet data check``, conversions, the synthetic generator).

Categories are matched to a model's classes **by name**; COCO ids are arbitrary. Classes are the
category names in category-id order. Image ``file_name`` is resolved relative to the JSON file's
folder (absolute paths are kept). COCO ``bbox`` is ``[x, y, w, h]`` in pixels; in memory it
becomes ``x1, y1, x2, y2``. ``iscrowd`` annotations are skipped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from detector.labels import ImageRecord, LabelSet, OnError, report_problem

MAX_SIDE = 100_000  # pixels (50 km at 0.5 m): larger declared image sizes are refused, not allocated


def read_coco(path: str | os.PathLike, *, check_files: bool = False, on_error: OnError = None) -> LabelSet:
    """Read a COCO detection JSON into a :class:`LabelSet`.

    Raises ValueError naming the file and item for malformed content: missing keys, wrong JSON
    types, duplicate image, category or annotation ids, a category name used twice, annotations
    that point at unknown images or categories, boxes that are not four finite numbers or have
    non-positive size, declared image sides above ``MAX_SIDE``; FileNotFoundError for a missing
    file (or, with ``check_files``, a missing image). With ``on_error`` the bad items are
    reported to it and skipped instead; a file that is not COCO at all still raises.
    """
    return read_coco_items(path, check_files=check_files, on_error=on_error)[0]


def read_coco_items(path: str | os.PathLike, *, check_files: bool = False,
                    on_error: OnError = None) -> tuple[LabelSet, dict[Path, list[str]]]:
    """:func:`read_coco`, plus the item name of every box kept (``"annotations[i] (id N)"``), per
    image path in box order, for messages about those boxes."""
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
    if not isinstance(data.get("annotations", []), list):
        raise ValueError(f"{path}: expected a list under 'annotations', got {type(data['annotations']).__name__}")

    def bad(item: str, message: str, exc=ValueError) -> None:
        report_problem(on_error, path, item, message, exc)

    names, ids, cat_index = _categories(data["categories"], bad)
    records: dict[int, ImageRecord] = {}
    per_image: dict[int, tuple[list, list, list]] = {}
    for i, im in enumerate(data["images"]):
        rec = _image(i, im, path.parent, records, bad, check_files)
        if rec is not None:
            records[rec.image_id] = rec
            per_image[rec.image_id] = ([], [], [])

    ann_ids: set = set()
    for i, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict):
            bad(f"annotations[{i}]", f"expected an object, got {ann!r}")
            continue
        item = f"annotations[{i}] (id {ann.get('id')})"
        aid = ann.get("id")
        if aid is not None and not isinstance(aid, (dict, list)):
            if aid in ann_ids:
                bad(item, f"duplicate annotation id {aid}")
                continue
            ann_ids.add(aid)
        if ann.get("iscrowd", 0):
            continue
        iid, cid, bbox = ann.get("image_id"), ann.get("category_id"), ann.get("bbox")
        if isinstance(iid, (list, dict)) or iid not in records:
            bad(item, f"refers to unknown image_id {iid}")
            continue
        if isinstance(cid, (list, dict)) or cid not in cat_index:
            bad(item, f"unknown class: category_id {cid} is not among the categories {dict(zip(ids, names))}")
            continue
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            bad(item, f"expected bbox [x, y, w, h] of finite numbers, got {bbox}")
            continue
        x, y, w, h = (float(v) for v in bbox)
        if not (w > 0 and h > 0):
            bad(item, f"box has non-positive size w={w:g}, h={h:g}")
            continue
        boxes, labels, items = per_image[iid]
        boxes.append((x, y, x + w, y + h))
        labels.append(cat_index[cid])
        items.append(item)

    images, box_items = [], {}
    for iid, rec in records.items():
        boxes, labels, items = per_image[iid]
        rec.boxes = np.array(boxes, np.float32).reshape(-1, 4)
        rec.labels = np.array(labels, np.int64)
        images.append(rec)
        box_items.setdefault(rec.path, []).extend(items)
    return LabelSet(names, images, path, ids), box_items


def _categories(cats: list, bad) -> tuple[list[str], list[int], dict[int, int]]:
    """-> class names in category-id order, their ids, category id -> class index. A second
    category of an existing name is reported and its id mapped onto the first one's class."""
    good = []
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            bad(f"categories[{i}]", f"needs 'id' and 'name', got {c}")
        elif not _is_int(c["id"]):
            bad(f"categories[{i}]", f"'id' must be an integer, got {c['id']!r}")
        else:
            good.append((c["id"], i, c))
    names, ids, cat_index = [], [], {}
    for cid, i, c in sorted(good, key=lambda t: t[:2]):
        if cid in cat_index:
            bad(f"categories[{i}]", f"duplicate category id {cid}")
            continue
        name = str(c["name"])
        if name in names:
            bad(f"categories[{i}]", f"category name {c['name']!r} appears twice")
            cat_index[cid] = names.index(name)
            continue
        cat_index[cid] = len(names)
        names.append(name)
        ids.append(int(cid))
    return names, ids, cat_index


def _image(i: int, im, root: Path, records: dict, bad, check_files: bool) -> ImageRecord | None:
    """``images[i]`` as an (unlabelled) record, or None after reporting what is wrong."""
    item = f"images[{i}]"
    if not isinstance(im, dict):
        return bad(item, f"expected an object, got {im!r}")
    for key in ("id", "file_name"):
        if key not in im:
            return bad(item, f"has no '{key}'")
    if not _is_int(im["id"]):
        return bad(item, f"'id' must be an integer, got {im['id']!r}")
    if not isinstance(im["file_name"], str) or not im["file_name"]:
        return bad(item, f"'file_name' must be a non-empty string, got {im['file_name']!r}")
    for key in ("width", "height"):
        if key in im and not (_is_int(im[key]) and 0 <= im[key] <= MAX_SIDE):
            return bad(item, f"'{key}' must be an integer in [0, {MAX_SIDE}], got {im[key]!r}")
    iid = int(im["id"])
    if iid in records:
        return bad(item, f"duplicate image id {iid}")
    file = Path(im["file_name"])
    file = file if file.is_absolute() else root / file
    if check_files and not file.exists():
        return bad(item, f"file {file} does not exist", FileNotFoundError)
    return ImageRecord(file, int(im.get("width", 0)), int(im.get("height", 0)), image_id=iid)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def write_coco(labels: LabelSet, path: str | os.PathLike, *, category_ids: list[int] | None = None,
               info: dict | None = None) -> Path:
    """Write a :class:`LabelSet` as COCO JSON, atomically (a temporary file renamed into place);
    file names are made relative to ``path``'s folder where possible. Category ids are
    ``category_ids`` or the set's own or 1..K; ``info``: the COCO ``info`` object, if any."""
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
    doc = {**({"info": info} if info is not None else {}),
           "images": images, "annotations": anns, "categories": cats}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
    return path
