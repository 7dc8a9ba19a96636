"""Lighting and sensor model of the synthetic scene generator.

Input: height ``(H, W)`` float32 metres and albedo ``(H, W, 3)`` float32 linear reflectance on the
image grid (x right, y down; north is up). One sun at ``azimuth`` (degrees clockwise from north)
and ``elevation`` (degrees above the horizon) lights it: Lambertian slope shading, cast shadows
marched over the height map, bluish ambient sky light; then haze, optical blur, gain, gamma,
channel balance and noise give a ``(H, W, 3)`` uint8 RGB image.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Conditions:
    """Illumination and sensor parameters of one image (all drawn by :func:`draw_conditions`)."""

    azimuth: float
    elevation: float
    ambient: float
    sun_rgb: np.ndarray
    sky_rgb: np.ndarray
    haze: float
    haze_rgb: np.ndarray
    blur: float
    noise: float
    exposure: float
    gamma: float
    balance: np.ndarray


def draw_conditions(rng: np.random.Generator) -> Conditions:
    """Random sun and sensor; heavy haze, blur or noise only occasionally."""
    r = rng.random(3)
    haze = rng.uniform(0, 0.08) if r[0] < 0.75 else (
        rng.uniform(0.08, 0.2) if r[0] < 0.95 else rng.uniform(0.2, 0.35))
    blur = rng.uniform(0.35, 0.9) if r[1] < 0.88 else rng.uniform(0.9, 1.5)
    noise = rng.uniform(0.8, 3.0) if r[2] < 0.9 else rng.uniform(3.0, 7.0)
    return Conditions(
        azimuth=rng.uniform(0, 360), elevation=rng.uniform(22, 70),
        ambient=rng.uniform(0.18, 0.38),
        sun_rgb=np.float32([1.0, 0.97, 0.9]) * rng.uniform(0.97, 1.03, 3).astype(np.float32),
        sky_rgb=np.float32([0.8, 0.9, 1.15]) * rng.uniform(0.95, 1.05, 3).astype(np.float32),
        haze=haze, haze_rgb=np.float32([0.22, 0.24, 0.28]) * rng.uniform(0.8, 1.2),
        blur=blur, noise=noise, exposure=rng.uniform(1.0, 1.6), gamma=rng.uniform(1.9, 2.5),
        # white balance along the warm-cool axis; free hue shifts tint greys purple or green
        balance=(np.float32([1, 1, 1]) + np.float32([1, 0, -1]) * rng.uniform(-0.05, 0.05)
                 + rng.uniform(-0.015, 0.015, 3)).astype(np.float32),
    )


def sun_vector(azimuth: float, elevation: float) -> np.ndarray:
    """Unit vector towards the sun in image axes (x right, y down, z up)."""
    az, el = np.radians(azimuth), np.radians(elevation)
    return np.array([np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), np.sin(el)], np.float32)


def lambert(height: np.ndarray, gsd: float, sun: np.ndarray) -> np.ndarray:
    """Cosine of the incidence angle, clipped at 0, ``(H, W)`` float32."""
    gy, gx = np.gradient(height, gsd)
    norm = np.sqrt(gx * gx + gy * gy + 1)
    cos = (-gx * sun[0] - gy * sun[1] + sun[2]) / norm
    return np.clip(cos, 0, None).astype(np.float32)


def cast_shadow(height: np.ndarray, gsd: float, azimuth: float, elevation: float) -> np.ndarray:
    """Fraction in shadow ``(H, W)`` float32 in [0, 1].

    The height map is rotated so that the sun lies towards ``+x``; along each row a point at
    ``x`` is shadowed when some ``x' > x`` has ``h(x') - h(x) > (x' - x) * gsd * tan(elev)``,
    i.e. when the running maximum from the right of ``g = h - x * gsd * tan(elev)`` exceeds
    ``g(x)``: one vectorised reverse cumulative maximum instead of marching step by step.
    """
    h, w = height.shape
    az = np.radians(azimuth)
    sx, sy = np.sin(az), -np.cos(az)
    n = int(np.ceil(np.hypot(h, w))) + 4
    src_c = np.array([w / 2, h / 2])
    rot = np.array([[sx, sy], [-sy, sx]])
    t = np.array([n / 2, n / 2]) - rot @ src_c
    m = np.hstack([rot, t[:, None]]).astype(np.float64)
    hr = cv2.warpAffine(height, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    slope = gsd * np.tan(np.radians(elevation))
    g = hr - (np.arange(n, dtype=np.float32) * np.float32(slope))[None, :]
    run = np.maximum.accumulate(g[:, ::-1], axis=1)[:, ::-1]
    ahead = np.concatenate([run[:, 1:], np.full((n, 1), -np.inf, np.float32)], axis=1)
    shad_r = (ahead > g + 0.05).astype(np.float32)
    back = cv2.warpAffine(shad_r, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    return np.clip(back, 0, 1)


def render(height: np.ndarray, albedo: np.ndarray, gsd: float, cond: Conditions,
           rng: np.random.Generator) -> np.ndarray:
    """Light ``albedo`` over ``height`` and pass it through the sensor: ``(H, W, 3)`` uint8."""
    sun = sun_vector(cond.azimuth, cond.elevation)
    direct = lambert(height, gsd, sun) * (1 - cast_shadow(height, gsd, cond.azimuth, cond.elevation))
    flat = sun[2] + cond.ambient
    irr = (direct[..., None] * cond.sun_rgb + cond.ambient * cond.sky_rgb) / flat
    rad = albedo * irr * cond.exposure
    rad = rad * (1 - cond.haze) + cond.haze * cond.haze_rgb
    if cond.blur > 0.05:
        rad = cv2.GaussianBlur(rad, (0, 0), cond.blur)
    y = np.power(np.clip(rad, 0, 1.5), 1 / cond.gamma) * cond.balance * 255.0
    y += rng.standard_normal(y.shape, dtype=np.float32) * np.float32(cond.noise)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)
