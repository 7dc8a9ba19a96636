"""Albumentations pipelines for overhead imagery.

Images are ``H x W x C`` float32 in [0, 1] (after ``detector.raster.scale_to_unit``), boxes
``pascal_voc`` (x1, y1, x2, y2 pixels). Any rotation is valid from above, so flips and
90-degree rotations are always on. A box cut by a crop is kept, clipped, when at least
``min_visibility`` of its area remains.
"""
from __future__ import annotations

import albumentations as A
import cv2


def train_transform(*, crop: int | None = None, min_visibility: float = 0.4,
                    photometric: bool = True) -> A.Compose:
    ops: list = []
    if crop:
        ops += [A.PadIfNeeded(crop, crop, border_mode=cv2.BORDER_CONSTANT, fill=0),
                A.RandomCrop(crop, crop)]
    ops += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=1.0)]
    if photometric:
        ops += [A.RandomBrightnessContrast(0.15, 0.15, p=0.5),
                A.RandomGamma((85, 115), p=0.3)]
    return A.Compose(ops, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                   min_visibility=min_visibility, clip=True))
