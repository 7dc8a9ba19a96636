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
from detector.datasets.labels import LabelSet
from detector.spec import ModelSpec


class DetectionDataset(Dataset):
    def __init__(self, labels: LabelSet, spec: ModelSpec, *, transform=None, label_offset: int = 0,
                 seed: int = 0) -> None:
        if list(labels.classes) != list(spec.classes):
            raise ValueError(f"{labels.source}: classes {labels.classes} are not the spec's {list(spec.classes)}; remap first")
        self.labels, self.spec, self.transform = labels, spec, transform
        self.label_offset, self.seed = label_offset, seed

    def __len__(self) -> int:
        return len(self.labels.images)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> unit image (H, W, C) float32, boxes (N, 4), labels (N,) (no offset, no augmentation)."""
        rec = self.labels.images[i]
        image, valid, _ = raster.read_image(rec.path, self.spec.bands)
        unit = raster.scale_to_unit(image, self.spec.offset, self.spec.scale)
        unit[~valid] = 0.0
        return unit, rec.boxes, rec.labels

    def __getitem__(self, i: int):
        unit, boxes, labels = self.load(i)
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
                 num_workers: int = 1) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers = batch_size, num_workers

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          drop_last=len(self.train_set) > self.batch_size,
                          collate_fn=collate, num_workers=self.num_workers, worker_init_fn=_worker_init,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, collate_fn=collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
