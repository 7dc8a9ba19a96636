"""Labels: the in-memory label model every format reader and writer shares, and the formats the
runtime reads (torch-free): :mod:`detector.labels.coco` (COCO JSON in and out) and
:mod:`detector.labels.vector` (GeoJSON / GeoPackage / shapefile over a raster). The training-side
formats (YOLO, Pascal VOC) and conversions live in :mod:`detector.datasets`.

Coordinates: pixels, x right, y down, origin at the top-left corner of the top-left pixel.
A box is ``x1, y1, x2, y2`` on pixel edges (a box covering columns 10..19 has x1=10, x2=20).

Readers take ``on_error``: called as ``on_error(file, item, message)`` for each bad item, which
is then skipped (``revet data check`` lists them all); when None the reader raises at the first,
``ValueError("{file}: {item}: {message}")`` (:func:`report_problem`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

#: ``on_error(file, item, message)``: readers call it for each bad item and skip the item;
#: when None they raise ``ValueError("{file}: {item}: {message}")``.
OnError = Callable[[Path, str, str], None] | None


def report_problem(on_error: OnError, file, item: str, message: str, exc=ValueError) -> None:
    """Raise ``exc("{file}: {item}: {message}")`` when ``on_error`` is None, else report to it."""
    if on_error is None:
        raise exc(f"{file}: {item}: {message}" if item else f"{file}: {message}")
    on_error(Path(file), item, message)


@dataclass
class ImageRecord:
    """One image and its objects.

    Attributes:
        path: absolute path of the image file.
        width, height: image size in pixels.
        boxes: (N, 4) float32 ``x1, y1, x2, y2`` pixels.
        labels: (N,) int64 indices into the owning :class:`LabelSet`'s ``classes``.
        image_id: the source dataset's id for this image (COCO ``id``), if any.
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    image_id: int | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.boxes) != len(self.labels):
            raise ValueError(
                f"{self.path}: {len(self.boxes)} boxes but {len(self.labels)} labels"
            )


@dataclass
class LabelSet:
    """A labelled dataset: class names and images.

    Attributes:
        classes: class names; ``ImageRecord.labels`` index into this.
        images: the images, in file order.
        source: the file the set was read from (for error messages).
        category_ids: for COCO sources, the dataset's category id of each class (same order).
    """

    classes: list[str]
    images: list[ImageRecord]
    source: Path | None = None
    category_ids: list[int] | None = None

    def class_counts(self) -> dict[str, int]:
        counts = np.zeros(len(self.classes), np.int64)
        for rec in self.images:
            np.add.at(counts, rec.labels, 1)
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def remap(self, classes: list[str] | tuple[str, ...]) -> "LabelSet":
        """Return a copy whose labels index into ``classes``, matched by name.

        Raises ValueError naming the source and the unknown names when this set holds
        classes that are not in ``classes`` (objects of a class the model cannot emit would be
        silently dropped otherwise).
        """
        classes = list(classes)
        missing = [c for c in self.classes if c not in classes]
        if missing:
            raise ValueError(
                f"{self.source}: classes {missing} are not among the model's classes {classes}"
            )
        lut = np.array([classes.index(c) for c in self.classes], np.int64)
        images = [
            ImageRecord(r.path, r.width, r.height, r.boxes.copy(),
                        lut[r.labels] if len(r.labels) else r.labels.copy(), r.image_id)
            for r in self.images
        ]
        ids = None
        if self.category_ids is not None:
            by_name = dict(zip(self.classes, self.category_ids))
            ids = [by_name.get(c, -1) for c in classes]
        return LabelSet(classes, images, self.source, ids)
