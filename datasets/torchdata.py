"""Torch side of the data stage: Dataset and LightningDataModule.

A sample is ``(image, target)``: image (C, H, W) float32 in [0, 1] (bands in spec order,
scaled with the spec; nodata pixels 0), target ``{"boxes": (N, 4) float32 xyxy pixels,
"labels": (N,) int64}`` with labels offset by the architecture's background index. Files are
opened per item, so DataLoader workers never share a rasterio handle.
"""
from __future__ import annotations

import numpy as np
import torch
import lightning as L
from torch.utils.data import DataLoader, Dataset

from detector import raster
from detector.labels import LabelSet
from detector.spec import ModelSpec


class DetectionDataset(Dataset):
    """Samples of a :class:`LabelSet` for training or validation.

    Args:
        transform: albumentations pipeline applied after cropping (``image``, ``bboxes``,
            ``labels``), e.g. :func:`detector.datasets.augment.train_transform`.
        crop: train on random ``crop`` x ``crop`` windows (images smaller are padded). With
            probability ``object_bias`` the window is placed to contain a randomly chosen
            object whole, so sparse targets are seen more often than empty ground. A box cut
            by the window is kept, clipped, when at least ``min_visibility`` of its area remains.
        cache: keep decoded images in memory (uint8/uint16 as read) after first use.

    Images whose pixel size (metres, from the geotransform) differs from ``spec.gsd`` are read
    resampled to it, with their boxes scaled, so objects are seen at the size in pixels the
    runner shows them at (it resamples scenes the same way, :func:`detector.raster.read_image_at`).
    """

    def __init__(self, labels: LabelSet, spec: ModelSpec, *, transform=None, label_offset: int = 0,
                 crop: int | None = None, object_bias: float = 0.8, min_visibility: float = 0.4,
                 cache: bool = False) -> None:
        if list(labels.classes) != list(spec.classes):
            raise ValueError(f"{labels.source}: classes {labels.classes} are not the spec's {list(spec.classes)}; remap first")
        self.labels, self.spec, self.transform = labels, spec, transform
        self.label_offset = label_offset
        self.crop, self.object_bias, self.min_visibility = crop, object_bias, min_visibility
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, float]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.labels.images)

    def load_raw(self, i: int) -> tuple[np.ndarray, np.ndarray, float]:
        """-> raw image (H, W, C) in the raster's dtype at the spec's pixel size, valid mask
        (H, W) and ``f``, the raster's pixels per returned pixel; cached when asked."""
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        image, valid, _, f = raster.read_image_at(self.labels.images[i].path, self.spec.bands, self.spec.gsd)
        if self._cache is not None:
            self._cache[i] = (image, valid, f)
        return image, valid, f

    def targets(self, i: int, f: float) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4) in the returned image's pixels (the record's divided by ``f``), labels (N,)."""
        rec = self.labels.images[i]
        boxes = np.asarray(rec.boxes, np.float32).reshape(-1, 4)
        return (boxes if f == 1.0 else boxes / np.float32(f)), rec.labels

    def to_unit(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        unit = raster.scale_to_unit(image, self.spec.offset, self.spec.scale)
        unit[~valid] = 0.0
        return unit

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> unit image (H, W, C) float32, boxes (N, 4), labels (N,) (no offset, no augmentation)."""
        image, valid, f = self.load_raw(i)
        return (self.to_unit(image, valid), *self.targets(i, f))

    def random_crop(self, image: np.ndarray, valid: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                    rng: np.random.Generator):
        """Cut a ``crop``-sized window (see class doc) of the raw image and its valid mask
        (cropping before scaling keeps the per-sample cost proportional to the crop).
        Returns (image, valid, boxes, labels)."""
        c = self.crop
        h, w = image.shape[:2]
        if h < c or w < c:
            pad = np.zeros((max(h, c), max(w, c), image.shape[2]), image.dtype)
            pad[:h, :w] = image
            vpad = np.zeros(pad.shape[:2], bool)
            vpad[:h, :w] = valid
            image, valid, h, w = pad, vpad, max(h, c), max(w, c)
        if len(boxes) and rng.random() < self.object_bias:
            x1, y1, x2, y2 = boxes[rng.integers(len(boxes))]
            # window origin range that keeps the chosen box whole (when it fits)
            lo_x, hi_x = max(0, int(np.ceil(x2)) - c), min(w - c, int(x1))
            lo_y, hi_y = max(0, int(np.ceil(y2)) - c), min(h - c, int(y1))
            x0 = int(rng.integers(lo_x, hi_x + 1)) if hi_x >= lo_x else int(rng.integers(0, w - c + 1))
            y0 = int(rng.integers(lo_y, hi_y + 1)) if hi_y >= lo_y else int(rng.integers(0, h - c + 1))
        else:
            x0, y0 = int(rng.integers(0, w - c + 1)), int(rng.integers(0, h - c + 1))
        out, vout = image[y0:y0 + c, x0:x0 + c], valid[y0:y0 + c, x0:x0 + c]
        if len(boxes) == 0:
            return out, vout, boxes, labels
        shifted = boxes - np.array([x0, y0, x0, y0], np.float32)
        clipped = np.clip(shifted, 0, c)
        area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
        inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        keep = inside >= self.min_visibility * np.maximum(area, 1e-6)
        return out, vout, clipped[keep], labels[keep]

    def __getitem__(self, i: int):
        image, valid, f = self.load_raw(i)
        boxes, labels = self.targets(i, f)
        if self.crop:
            image, valid, boxes, labels = self.random_crop(image, valid, boxes, labels, np.random.default_rng(
                np.random.randint(0, 2**31 - 1)))
        unit = self.to_unit(image, valid)
        if self.transform is not None:
            h, w = unit.shape[:2]
            boxes = np.clip(boxes, 0, [w, h, w, h])
            ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            out = self.transform(image=unit, bboxes=boxes[ok], labels=labels[ok])
            unit = out["image"]
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], np.int64)
        image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(unit, -1, 0), np.float32))
        target = {"boxes": torch.from_numpy(np.asarray(boxes, np.float32)).reshape(-1, 4),
                  "labels": torch.from_numpy(np.asarray(labels, np.int64) + self.label_offset)}
        return image, target


def balanced_weights(labels: LabelSet) -> np.ndarray:
    """Per-image sampling weights that even out classes: an image weighs the inverse frequency
    of its rarest class (images with objects of a rare class are drawn more often); empty
    images weigh the mean of the others' weights so negatives keep their share."""
    counts = np.zeros(len(labels.classes))
    for rec in labels.images:
        np.add.at(counts, rec.labels, 1)
    inv = 1.0 / np.maximum(counts, 1)
    w = np.array([inv[rec.labels].max() if len(rec.labels) else np.nan for rec in labels.images])
    fill = np.nanmean(w) if np.isfinite(w).any() else 1.0
    w = np.where(np.isnan(w), fill, w)
    return w / w.sum()


def collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


def _worker_init(worker_id: int) -> None:
    # Albumentations draws from numpy and Python's random: seed both per worker from torch's
    # per-worker seed, so runs are repeatable for a given trainer seed.
    import random

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class DetectionDataModule(L.LightningDataModule):
    def __init__(self, train: DetectionDataset, val: DetectionDataset, *, batch_size: int = 8,
                 num_workers: int = 1, balance: bool = False) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers, self.balance = batch_size, num_workers, balance

    def train_dataloader(self) -> DataLoader:
        order: dict = {"shuffle": True}
        if self.balance:
            from torch.utils.data import WeightedRandomSampler

            w = torch.as_tensor(balanced_weights(self.train_set.labels), dtype=torch.double)
            order = {"sampler": WeightedRandomSampler(w, num_samples=len(w), replacement=True)}
        return DataLoader(self.train_set, batch_size=self.batch_size, **order,
                          drop_last=len(self.train_set) > self.batch_size,
                          collate_fn=collate, num_workers=self.num_workers, worker_init_fn=_worker_init,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, collate_fn=collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
