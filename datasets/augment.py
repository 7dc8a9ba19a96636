"""Albumentations pipelines for overhead imagery.

Images are ``H x W x C`` float32 in [0, 1] (after ``detector.raster.scale_to_unit``) with any
number of bands C, boxes ``pascal_voc`` (x1, y1, x2, y2 pixels). Any rotation is valid from
above, so flips and 90-degree rotations are always on (they move boxes exactly). A box cut by a
crop or pushed out by a rotation is kept, clipped, when at least ``min_visibility`` of its area
remains.

Rotation by any angle (``rotate``) moves a box by rotating its four corners and taking their
axis-aligned bounds (albumentations' ``rotate_method="largest_box"``): the new box always
contains the rotated object, and is looser than a box drawn on the rotated image (by up to
~41% per side for a square box at 45 degrees). It is off by default for that reason.

Colour operations work on any band count: brightness, contrast, gamma, blur, noise, JPEG
artefacts and dropout apply per band; ``hue`` is a hue rotation plus saturation change for
3-band (RGB) images and a random gain per band otherwise (:class:`SpectralJitter`), since a hue
means nothing for, say, 4-band RGB+NIR or 1-band panchromatic imagery.

Defaults keep the pipeline training has always used (crop, flips, 90-degree turns,
brightness/contrast/gamma); :data:`OVERHEAD` is a fuller recommended set::

    train_transform(crop=512, **OVERHEAD)
    from_config({"rotate": True, "scale": [0.8, 1.25], "blur": 0.2}, crop=512)
"""
from __future__ import annotations

import os

# Offline promise: albumentations asks PyPI for a newer version when imported unless told not to.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402
import cv2
import numpy as np

#: A recommended set for overhead imagery; every key is a :func:`train_transform` argument.
OVERHEAD = {"rotate": True, "scale": (0.8, 1.25), "hue": 0.05, "blur": 0.2, "noise": 0.2,
            "compression": 0.2, "dropout": 0.2}

OPTIONS = ("crop", "min_visibility", "photometric", "rotate", "scale", "hue", "blur", "noise",
           "compression", "dropout")


class SpectralJitter(A.ImageOnlyTransform):
    """Colour jitter for any band count.

    3 bands: rotate hue by up to ``hue * 180`` degrees about the grey axis and scale saturation
    by ``1 +- 2 * hue``. Other band counts: multiply each band by ``1 +- hue``. Output clipped to
    [0, 1]; grey pixels of an RGB image stay grey under the hue rotation.
    """

    def __init__(self, hue: float = 0.05, p: float = 0.5):
        super().__init__(p=p)
        self.hue = float(hue)

    def get_params_dependent_on_data(self, params, data):
        c = data["image"].shape[-1] if data["image"].ndim == 3 else 1
        r = self.random_generator
        return {"angle": float(r.uniform(-self.hue, self.hue) * np.pi),
                "saturation": float(1 + r.uniform(-2 * self.hue, 2 * self.hue)),
                "gains": r.uniform(1 - self.hue, 1 + self.hue, c).astype(np.float32)}

    def apply(self, img, angle=0.0, saturation=1.0, gains=None, **params):
        img = np.asarray(img, np.float32)
        if img.ndim == 3 and img.shape[-1] == 3:
            k = np.full(3, 1 / np.sqrt(3))
            kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
            rot = np.cos(angle) * np.eye(3) + (1 - np.cos(angle)) * np.outer(k, k) + np.sin(angle) * kx
            out = img @ rot.T.astype(np.float32)
            grey = out.mean(axis=-1, keepdims=True)
            out = grey + saturation * (out - grey)
        else:
            out = img * (gains if img.ndim == 3 else gains[0])
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def get_transform_init_args_names(self):
        return ("hue",)


def _prob(name: str, value) -> float:
    value = float(value)
    if not 0 <= value <= 1:
        raise ValueError(f"augmentation option {name!r} is a probability in [0, 1], got {value}")
    return value


def train_transform(*, crop: int | None = None, min_visibility: float = 0.4,
                    photometric: bool = True, rotate: bool | float = False,
                    scale: tuple[float, float] | None = None, hue: float = 0.0,
                    blur: float = 0.0, noise: float = 0.0, compression: float = 0.0,
                    dropout: float = 0.0) -> A.Compose:
    """The training pipeline.

    Args:
        crop: random crop of this size (padded with 0 first when the image is smaller).
        min_visibility: fraction of a box's area that must remain for it to be kept.
        photometric: brightness/contrast (+-15%) and gamma (0.85..1.15) jitter.
        rotate: any-angle rotation, half of the time: True for up to +-180 degrees, a number for
            up to +-that many degrees; boxes by rotated corners (see module docstring).
        scale: ``(low, high)`` zoom factor range (applied with ``rotate`` in one affine warp).
        hue: strength of :class:`SpectralJitter` (0 off; ~0.05 sensible), applied half the time.
        blur, noise, compression, dropout: probabilities of Gaussian blur (3-7 px kernel),
            Gaussian noise (std 1-5% of range), JPEG artefacts (quality 40-90) and coarse
            dropout (1-4 holes of 5-15% of the side, filled with 0).
    """
    ops: list = []
    if crop:
        ops += [A.PadIfNeeded(crop, crop, border_mode=cv2.BORDER_CONSTANT, fill=0),
                A.RandomCrop(crop, crop)]
    ops += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=1.0)]
    angle = 180.0 if rotate is True else float(rotate or 0)
    if scale is not None:
        lo, hi = (float(v) for v in scale)
        if not 0 < lo <= hi:
            raise ValueError(f"augmentation option 'scale' must be (low, high) with 0 < low <= high, got {scale}")
    if angle or scale is not None:
        ops.append(A.Affine(rotate=(-angle, angle), scale=tuple(scale) if scale else 1.0,
                            keep_ratio=True, rotate_method="largest_box",
                            border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.5))
    if photometric:
        ops += [A.RandomBrightnessContrast(0.15, 0.15, p=0.5),
                A.RandomGamma((85, 115), p=0.3)]
    if hue:
        ops.append(SpectralJitter(hue=float(hue), p=0.5))
    if blur:
        ops.append(A.GaussianBlur(blur_limit=(3, 7), p=_prob("blur", blur)))
    if noise:
        ops.append(A.GaussNoise(std_range=(0.01, 0.05), p=_prob("noise", noise)))
    if compression:
        ops.append(A.ImageCompression(quality_range=(40, 90), p=_prob("compression", compression)))
    if dropout:
        ops.append(A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15),
                                   hole_width_range=(0.05, 0.15), fill=0,
                                   p=_prob("dropout", dropout)))
    return A.Compose(ops, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                   min_visibility=min_visibility, clip=True))


def from_config(options: dict | None, **overrides) -> A.Compose:
    """:func:`train_transform` from a config mapping (e.g. the ``augment:`` section of a training
    YAML); ``overrides`` (e.g. ``crop``) win. Unknown keys raise ValueError listing valid ones."""
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown augmentation option(s) {unknown}; valid options are {list(OPTIONS)}")
    opts.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(opts.get("scale"), list):
        opts["scale"] = tuple(opts["scale"])
    return train_transform(**opts)
