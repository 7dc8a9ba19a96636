"""Style variation of the synthetic generator: how far terrain, materials, light and sensor wander.

The default :class:`Style` reproduces the generator's standard look (byte-identical images).
``Style.varied()`` widens everything the generator can vary, for a corpus that teaches a model
to ignore style (the base model, ``revet-base``): palette colours (terrain and object
materials) jittered three times as far and tinted, sun elevation 15-80 degrees, shadow
strength (ambient light 0.08-0.55 of the sun's), haze, optical blur, exposure (gain), gamma,
white balance, saturation and noise over wider ranges, and images stretched the way a 16-bit
sensor's digital numbers look after a percentile stretch to 8 bits.

``seasons`` restricts which seasons are drawn: leave one out of a training corpus and test on
it alone to measure how a model holds on a style it has never seen (leave-one-style-out).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SEASONS = ("spring", "summer", "autumn", "winter", "arid")


@dataclass(frozen=True)
class Style:
    """Ranges of the generator's style parameters.

    Attributes:
        seasons: seasons that may be drawn (their usual relative frequencies, renormalized).
        palette_spread: multiplier of the colour jitter of terrain and materials (1: standard).
        tint: largest per-channel multiplicative tint of the palette colours (0: none).
        sensor: False keeps the standard sun and sensor draw; True redraws them over wide ranges.
        stretch16: probability of the 16-bit-sensor look (a linear percentile stretch of the
            image's own 1-99 % range to 0-255, as a 16-bit product converted to 8 bits).
    """

    seasons: tuple[str, ...] = SEASONS
    palette_spread: float = 1.0
    tint: float = 0.0
    sensor: bool = False
    stretch16: float = 0.0

    def __post_init__(self) -> None:
        bad = sorted(set(self.seasons) - set(SEASONS))
        if bad or not self.seasons:
            raise ValueError(f"Style.seasons: expected a non-empty subset of {SEASONS}, got {list(self.seasons)}")
        if self.palette_spread <= 0 or not 0 <= self.tint < 0.5 or not 0 <= self.stretch16 <= 1:
            raise ValueError(f"Style: palette_spread > 0, 0 <= tint < 0.5, 0 <= stretch16 <= 1 expected, got {self}")

    @property
    def standard(self) -> bool:
        return self == Style(seasons=self.seasons)

    @classmethod
    def varied(cls, seasons: tuple[str, ...] = SEASONS) -> "Style":
        """Everything as wide as the generator goes (the base model's corpus)."""
        return cls(seasons=tuple(seasons), palette_spread=3.0, tint=0.12, sensor=True, stretch16=0.25)

    def without(self, season: str) -> "Style":
        """The same style with ``season`` never drawn (a held-out style)."""
        if season not in SEASONS:
            raise ValueError(f"unknown season {season!r}; expected one of {SEASONS}")
        return replace(self, seasons=tuple(s for s in self.seasons if s != season))

    def only(self, season: str) -> "Style":
        """The same style drawing ``season`` alone (the held-out test set)."""
        return replace(self.without(season), seasons=(season,))

    def to_dict(self) -> dict:
        return {"seasons": list(self.seasons), "palette_spread": self.palette_spread, "tint": self.tint,
                "sensor": self.sensor, "stretch16": self.stretch16}

    @classmethod
    def from_name(cls, name: str, holdout: str | None = None) -> "Style":
        """``standard`` or ``varied``, optionally ``without`` a held-out season."""
        styles = {"standard": cls(), "varied": cls.varied()}
        if name not in styles:
            raise ValueError(f"unknown synthetic style {name!r}; expected one of {sorted(styles)}")
        return styles[name].without(holdout) if holdout else styles[name]


def draw_wide_conditions(rng: np.random.Generator, cond):
    """Redraw sun and sensor of ``cond`` (a ``render.Conditions``) over wide ranges."""
    r = rng.random(4)
    cond.elevation = float(rng.uniform(15, 80))
    cond.ambient = float(rng.uniform(0.08, 0.55))  # low: hard, dark shadows; high: overcast
    cond.haze = float(rng.uniform(0, 0.1) if r[0] < 0.7 else rng.uniform(0.1, 0.4))
    cond.blur = float(rng.uniform(0.3, 1.0) if r[1] < 0.8 else rng.uniform(1.0, 2.0))
    cond.noise = float(rng.uniform(0.5, 3.0) if r[2] < 0.8 else rng.uniform(3.0, 9.0))
    cond.exposure = float(np.exp(rng.uniform(np.log(0.7), np.log(2.2))))
    cond.gamma = float(rng.uniform(1.5, 2.9))
    cond.balance = (np.float32([1, 1, 1]) + np.float32([1, 0, -1]) * rng.uniform(-0.12, 0.12)
                    + rng.uniform(-0.04, 0.04, 3)).astype(np.float32)
    return cond


def palette_factor(rng: np.random.Generator, style: Style) -> np.ndarray:
    """Per-channel tint ``(3,)`` float32 applied to every colour of one image's palette."""
    if not style.tint:
        return np.ones(3, np.float32)
    return rng.uniform(1 - style.tint, 1 + style.tint, 3).astype(np.float32)


def sensor_look(image: np.ndarray, rng: np.random.Generator, style: Style) -> np.ndarray:
    """Saturation change and (with probability ``stretch16``) a 16-bit-style percentile stretch
    of an ``(H, W, 3)`` uint8 image; returns uint8 of the same shape."""
    if not style.sensor:
        return image
    sat, do_stretch = rng.uniform(0.55, 1.5), rng.random() < style.stretch16
    y = image.astype(np.float32)
    grey = y.mean(axis=2, keepdims=True)
    y = grey + sat * (y - grey)
    if do_stretch:
        lo, hi = np.percentile(y, [rng.uniform(0.2, 2.0), rng.uniform(98.0, 99.8)])
        y = (y - lo) * (255.0 / max(hi - lo, 1.0))
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)
