"""A PNG grid of augmented training samples with their boxes: ``revet data preview``.

Each sample is read with rasterio (any dtype, any band count), stretched per band to [0, 1] by
the display stretch (:mod:`detector.display`: 2nd to 98th percentile of valid pixels, nodata
black), augmented with
:func:`detector.datasets.augment.train_transform`, and drawn: bands 1-3 as RGB (1 or 2 bands as
grey from band 1), boxes coloured by class with a legend underneath.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detector.display import class_colour, stretch, to_rgb8


def preview(dataset: str | os.PathLike, out: str | os.PathLike, *, n: int = 16, cols: int = 4,
            size: int = 256, seed: int = 0, crop: int | None = None,
            augment: dict | None = None) -> Path:
    """Draw ``n`` augmented samples of ``dataset`` (COCO/YOLO/VOC) on a grid, write PNG ``out``.

    ``augment``: options for :func:`~detector.datasets.augment.from_config` (default: the
    ``OVERHEAD`` set). Samples are drawn (seeded) from images with boxes first.
    """
    from PIL import Image, ImageDraw

    from detector.datasets.augment import OVERHEAD, from_config
    from detector.datasets.convert import read_dataset
    from detector.raster import open_raster, read_image

    if n < 1 or cols < 1:
        raise ValueError(f"n and cols must be positive, got n={n}, cols={cols}")
    ls = read_dataset(dataset)
    if not ls.images:
        raise ValueError(f"{dataset}: dataset has no images to preview")
    rng = np.random.default_rng(seed)
    with_boxes = [i for i, r in enumerate(ls.images) if len(r.boxes)]
    others = [i for i, r in enumerate(ls.images) if not len(r.boxes)]
    order = list(rng.permutation(with_boxes)) + list(rng.permutation(others))
    picks = [order[k % len(order)] for k in range(n)]
    tf = from_config(OVERHEAD if augment is None else augment, crop=crop)
    tf.set_random_seed(seed)
    rows = -(-n // cols)
    legend_h = 20
    grid = Image.new("RGB", (cols * size, rows * size + legend_h), (32, 32, 32))
    for k, i in enumerate(picks):
        rec = ls.images[i]
        with open_raster(rec.path) as ds:
            count = ds.count
        image, valid, _ = read_image(rec.path, list(range(1, min(count, 3) + 1)))
        unit = stretch(image, valid)
        h, w = unit.shape[:2]
        boxes = np.clip(rec.boxes, 0, [w, h, w, h])
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        res = tf(image=unit, bboxes=boxes[ok], labels=rec.labels[ok])
        tile = Image.fromarray(to_rgb8(res["image"]))
        scale = size / max(tile.size)
        tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))))
        draw = ImageDraw.Draw(tile)
        for (x1, y1, x2, y2), lab in zip(np.asarray(res["bboxes"]).reshape(-1, 4), res["labels"]):
            draw.rectangle([x1 * scale, y1 * scale, x2 * scale - 1, y2 * scale - 1],
                           outline=class_colour(lab), width=2)
        grid.paste(tile, ((k % cols) * size, (k // cols) * size))
    draw = ImageDraw.Draw(grid)
    x = 4
    for c, name in enumerate(ls.classes):
        draw.rectangle([x, rows * size + 5, x + 10, rows * size + 15], fill=class_colour(c))
        draw.text((x + 14, rows * size + 4), name, fill=(230, 230, 230))
        x += 20 + 7 * len(name)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out
