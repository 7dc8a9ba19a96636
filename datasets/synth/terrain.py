"""Backgrounds for the synthetic scene generator: ground, fields, roads and trees.

Conventions shared by all ``synth_*`` modules:

* Arrays are ``(H, W)`` or ``(H, W, 3)`` float32 over the image grid; pixel ``(row, col)`` covers
  ``x in [col, col + 1)``, ``y in [row, row + 1)`` (x right, y down, pixel-edge coordinates).
* Heights are metres above an arbitrary datum; albedo is linear RGB reflectance in ``[0, 1]``.
* Every size drawn from a random generator is in metres and converted with ``gsd`` (metres per
  pixel), so objects keep their real size whatever the resolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .style import SEASONS, Style, palette_factor

_SEASON_P = (0.22, 0.3, 0.2, 0.13, 0.15)

# Linear-reflectance base colours per season. Values near published spectra of the materials
# (grass ~0.05-0.12 visible, dry soil 0.15-0.35), so that gamma-encoded output looks natural.
_GRASS = {
    "spring": (0.055, 0.12, 0.035), "summer": (0.06, 0.10, 0.04), "autumn": (0.11, 0.11, 0.05),
    "winter": (0.10, 0.095, 0.07), "arid": (0.20, 0.17, 0.11),
}
_SOIL = {
    "spring": (0.17, 0.13, 0.09), "summer": (0.21, 0.16, 0.11), "autumn": (0.16, 0.12, 0.08),
    "winter": (0.14, 0.12, 0.10), "arid": (0.34, 0.27, 0.19),
}
_LEAF = {
    "spring": [(0.05, 0.10, 0.03), (0.06, 0.12, 0.04)],
    "summer": [(0.03, 0.06, 0.025), (0.04, 0.075, 0.03)],
    "autumn": [(0.14, 0.08, 0.03), (0.12, 0.10, 0.03), (0.05, 0.07, 0.03)],
    "winter": [(0.09, 0.08, 0.07), (0.08, 0.075, 0.065)],
    "arid": [(0.06, 0.07, 0.04), (0.08, 0.085, 0.05)],
}
_CROPS = {
    "spring": [(0.06, 0.13, 0.04), (0.10, 0.15, 0.05), (0.16, 0.12, 0.08), (0.12, 0.09, 0.06)],
    "summer": [(0.25, 0.21, 0.11), (0.06, 0.11, 0.04), (0.18, 0.17, 0.09), (0.15, 0.11, 0.07)],
    "autumn": [(0.15, 0.11, 0.07), (0.22, 0.19, 0.12), (0.09, 0.11, 0.05), (0.11, 0.08, 0.05)],
    "winter": [(0.12, 0.10, 0.08), (0.09, 0.10, 0.06), (0.15, 0.13, 0.10)],
    "arid": [(0.30, 0.25, 0.17), (0.12, 0.15, 0.07), (0.26, 0.20, 0.14)],
}


@dataclass
class Palette:
    """Colours of one image (linear RGB, shape ``(3,)`` float32 each)."""

    season: str
    grass: np.ndarray
    soil: np.ndarray
    leaves: list
    conifer: np.ndarray
    crops: list
    asphalt: np.ndarray
    gravel: np.ndarray
    concrete: np.ndarray


def make_palette(rng: np.random.Generator, style: Style = Style()) -> Palette:
    """Draw a season (among ``style.seasons``) and jittered colours for one image.

    ``style.palette_spread`` widens the jitter of every colour (terrain and object materials);
    ``style.tint`` multiplies them all by one per-channel tint. The standard style draws exactly
    what it always drew.
    """
    if tuple(style.seasons) == SEASONS:
        season = SEASONS[rng.choice(len(SEASONS), p=_SEASON_P)]
    else:
        allowed = [SEASONS.index(x) for x in style.seasons]
        p = np.asarray([_SEASON_P[i] for i in allowed])
        season = SEASONS[allowed[rng.choice(len(allowed), p=p / p.sum())]]
    spread = style.palette_spread
    tint = palette_factor(rng, style)

    def jit(c, s=0.12):
        # mostly brightness; little hue change, which quickly looks unnatural (pink soil)
        s = min(s * spread, 0.6)
        k = rng.uniform(1 - s, 1 + s) * rng.uniform(1 - 0.04 * spread, 1 + 0.04 * spread, 3) * tint
        return (np.asarray(c, np.float32) * k).astype(np.float32)

    return Palette(
        season=season,
        grass=jit(_GRASS[season]),
        soil=jit(_SOIL[season]),
        leaves=[jit(c) for c in _LEAF[season]],
        conifer=jit((0.025, 0.045, 0.03)),
        crops=[jit(c, 0.15) for c in _CROPS[season]],
        asphalt=jit((0.07, 0.07, 0.075), 0.2),
        gravel=jit((0.30, 0.28, 0.23), 0.15),
        concrete=jit((0.36, 0.35, 0.33), 0.12),
    )


def fractal_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float,
                  octaves: int = 3, persistence: float = 0.5) -> np.ndarray:
    """Smooth random field ``(H, W)`` float32, zero mean, unit std; features ~``cell_px`` wide.

    Sum of bicubically upsampled white-noise grids (value noise), octave ``k`` at
    ``cell_px / 2**k``. The number of draws depends only on ``shape`` and ``cell_px``.
    """
    h, w = shape
    out = np.zeros(shape, np.float32)
    amp = 1.0
    for k in range(octaves):
        cell = max(cell_px / 2 ** k, 1.0)
        gh, gw = int(h / cell) + 3, int(w / cell) + 3
        grid = rng.standard_normal((gh, gw), dtype=np.float32)
        up = cv2.resize(grid, (int(np.ceil(gw * cell)), int(np.ceil(gh * cell))),
                        interpolation=cv2.INTER_CUBIC)
        oy = int(cell)  # skip the first cell: bicubic edges are less random
        out += amp * up[oy:oy + h, oy:oy + w]
        amp *= persistence
    out -= out.mean()
    out /= out.std() + 1e-6
    return out


@dataclass
class Track:
    """A road or track: ``points`` ``(K, 2)`` float pixel coordinates (x, y) of its centre line."""

    points: np.ndarray
    width_m: float
    colour: np.ndarray
    kind: str = "road"  # "road" (paved), "gravel", "dirt" (two ruts with grass between)


@dataclass
class Background:
    """The ground of one image before objects are added.

    height: ``(H, W)`` float32 metres. albedo: ``(H, W, 3)`` float32. forest: ``(H, W)`` bool.
    tracks: main roads (already drawn into albedo). trees: candidate tree seeds, see
    :func:`tree_seeds`; filtered later against the objects' clearings.
    """

    height: np.ndarray
    albedo: np.ndarray
    forest: np.ndarray
    palette: Palette
    tracks: list = field(default_factory=list)
    trees: dict = field(default_factory=dict)


def make_background(rng: np.random.Generator, shape: tuple[int, int], gsd: float,
                    style: Style = Style()) -> Background:
    """Ground height and albedo with fields, forest areas, roads; trees only as seeds.

    The number of random draws depends only on ``shape`` and ``gsd`` (never on objects), so the
    targets and negatives of an image can be drawn from independent generators.
    """
    pal = make_palette(rng, style)
    h, w = shape
    extent_m = max(h, w) * gsd
    # Ground type: mostly grass, mostly bare soil, rocky, or farmland.
    biome = rng.choice(["grass", "soil", "rocky", "farm"], p=[0.32, 0.2, 0.16, 0.32])
    if pal.season == "arid" and biome == "grass":
        biome = "soil"

    # Terrain: gentle hills plus micro relief (rough in rocky ground).
    hills = fractal_noise(rng, shape, 180.0 / gsd, octaves=2) * rng.uniform(1.0, 6.0)
    rough = 0.25 if biome == "rocky" else 0.06
    micro = fractal_noise(rng, shape, 2.5 / gsd, octaves=2) * rough
    height = (hills + micro).astype(np.float32)

    # Albedo: grass/soil mixture with mottling, plus fine texture.
    bias = {"grass": 1.2, "soil": -1.2, "rocky": -0.6, "farm": 0.6}[biome]
    mix_n = fractal_noise(rng, shape, 40.0 / gsd, octaves=3)
    t = 1.0 / (1.0 + np.exp(-(1.6 * mix_n + bias)))
    albedo = (pal.soil[None, None] * (1 - t)[..., None] + pal.grass[None, None] * t[..., None])
    mottle = fractal_noise(rng, shape, 6.0 / gsd, octaves=3)
    fine = rng.standard_normal(shape, dtype=np.float32)
    albedo *= (1.0 + 0.12 * mottle + 0.05 * fine)[..., None]

    rock_n = fractal_noise(rng, shape, 1.6 / gsd, octaves=2)
    if biome == "rocky":
        rocks = np.clip((rock_n - 1.3) * 2.0, 0, 1)
        rock_col = np.float32([0.30, 0.28, 0.26]) * rng.uniform(0.8, 1.2)
        albedo = albedo * (1 - rocks[..., None]) + rock_col * rocks[..., None]
        height += rocks * rng.uniform(0.3, 0.8)

    if biome == "farm" or rng.random() < 0.2:
        field_mask = fractal_noise(rng, shape, 220.0 / gsd, octaves=1) > (
            -1.0 if biome == "farm" else 0.5)
    else:
        field_mask = np.zeros(shape, bool)
    paint_fields(rng, albedo, field_mask, gsd, pal)

    forest_frac = 0.0 if rng.random() < 0.45 else rng.uniform(0.05, 0.55)
    forest_n = fractal_noise(rng, shape, 70.0 / gsd, octaves=3)
    if forest_frac > 0:
        thr = np.quantile(forest_n[::8, ::8], 1 - forest_frac)
        forest = forest_n > thr
    else:
        forest = np.zeros(shape, bool)
    # Forest floor: darker, browner litter.
    floor = pal.soil * 0.45 + pal.grass * 0.35
    albedo[forest] = albedo[forest] * 0.35 + floor * 0.65 * (1 + 0.1 * mottle[forest, None])

    n_roads = rng.poisson(0.8 * extent_m / 256.0)
    n_dirt = rng.poisson(0.7 * extent_m / 256.0)
    tracks = [random_road(rng, shape, gsd, pal, "road" if rng.random() < 0.6 else "gravel")
              for _ in range(min(n_roads, 12))]
    tracks += [random_road(rng, shape, gsd, pal, "dirt") for _ in range(min(n_dirt, 12))]
    draw_tracks(albedo, tracks, gsd, rng)

    trees = tree_seeds(rng, shape, gsd, forest, pal, extent_m)
    return Background(height=height, albedo=np.clip(albedo, 0, 1).astype(np.float32),
                      forest=forest, palette=pal, tracks=tracks, trees=trees)


def paint_fields(rng: np.random.Generator, albedo: np.ndarray, mask: np.ndarray, gsd: float,
                 pal: Palette) -> None:
    """Paint a rotated patchwork of rectangular parcels into ``albedo`` where ``mask`` (in place).

    Parcels are rows ``row_w`` metres wide cut into lengths that vary per row; each parcel gets a
    crop colour and ploughing/sowing stripes along or across it, and a thin grass margin.
    """
    h, w = mask.shape
    ang = rng.uniform(0, np.pi)
    row_w = rng.uniform(25, 90)
    lengths = rng.uniform(40, 200, 64).astype(np.float32)
    offsets = rng.uniform(0, 200, 64).astype(np.float32)
    colours = np.stack(pal.crops)[rng.integers(0, len(pal.crops), 1024)]
    colours = colours * rng.uniform(0.8, 1.2, (1024, 1)).astype(np.float32)
    stripe_p = rng.uniform(1.0, 4.0, 1024).astype(np.float32)
    stripe_a = rng.uniform(0.0, 0.25, 1024).astype(np.float32) * (rng.random(1024) < 0.7)
    stripe_dir = rng.random(1024) < 0.5
    if not mask.any():
        return
    ys, xs = np.nonzero(mask)
    xm, ym = (xs + 0.5) * gsd, (ys + 0.5) * gsd
    c, s = np.cos(ang), np.sin(ang)
    u = xm * c + ym * s + 5000.0
    v = -xm * s + ym * c + 5000.0
    row = np.floor(v / row_w).astype(np.int64)
    r64 = row % 64
    ul = (u + offsets[r64]) / lengths[r64]
    col = np.floor(ul).astype(np.int64)
    pid = (row * 7919 + col * 104729) % 1024
    along = np.where(stripe_dir[pid], u, v)
    stripes = 1.0 + stripe_a[pid] * np.sin(2 * np.pi * along / stripe_p[pid])
    vl = v / row_w - row
    ulf = ul - col
    margin_m = 1.2
    edge = np.minimum(np.minimum(vl, 1 - vl) * row_w, np.minimum(ulf, 1 - ulf) * lengths[r64])
    col_rgb = colours[pid] * stripes[:, None].astype(np.float32)
    col_rgb = np.where((edge < margin_m)[:, None], pal.grass * 1.1, col_rgb)
    old = albedo[ys, xs]
    albedo[ys, xs] = col_rgb * (1 + 0.5 * (old / (old.mean(0) + 1e-6) - 1)) * 0.9 + 0.1 * old


def random_road(rng: np.random.Generator, shape: tuple[int, int], gsd: float, pal: Palette,
                kind: str) -> Track:
    """A gently curving road entering at a random edge point, as a :class:`Track`."""
    h, w = shape
    edge = rng.integers(0, 4)
    pos = rng.uniform(0.1, 0.9)
    start = [(pos * w, -5.0), (w + 5.0, pos * h), (pos * w, h + 5.0), (-5.0, pos * h)][edge]
    heading = [np.pi / 2, np.pi, -np.pi / 2, 0.0][edge] + rng.uniform(-0.6, 0.6)
    curv_sd = rng.uniform(0.0003, 0.002)
    step_m = 4.0
    n = 600
    # curvature (1/m) as a mean-reverting random walk: bends of >= ~150 m radius, no loops
    kappa = np.zeros(n)
    shocks = rng.normal(0, curv_sd, n)
    for i in range(1, n):  # n steps of a scalar recurrence (not per pixel)
        kappa[i] = 0.93 * kappa[i - 1] + shocks[i]
    kappa = np.clip(kappa, -0.007, 0.007)
    theta = heading + np.cumsum(kappa * step_m)
    step_px = step_m / gsd
    xs = start[0] + np.concatenate([[0], np.cumsum(np.cos(theta) * step_px)])
    ys = start[1] + np.concatenate([[0], np.cumsum(np.sin(theta) * step_px)])
    inside = (xs > -20) & (xs < w + 20) & (ys > -20) & (ys < h + 20)
    # keep from the start to the first exit after having entered
    out = np.nonzero(~inside[5:])[0]
    end = 5 + out[0] + 1 if len(out) else len(xs)
    pts = np.stack([xs[:end], ys[:end]], 1).astype(np.float32)
    if kind == "road":
        return Track(pts, rng.uniform(5.0, 8.0), pal.asphalt * rng.uniform(0.8, 1.3), kind)
    if kind == "gravel":
        return Track(pts, rng.uniform(4.0, 6.0), pal.gravel * rng.uniform(0.8, 1.1), kind)
    return Track(pts, rng.uniform(2.6, 3.6), pal.soil * rng.uniform(1.1, 1.5), "dirt")


def polyline_mask(shape: tuple[int, int], points: np.ndarray, width_px: float) -> np.ndarray:
    """Anti-aliased coverage ``(H, W)`` float32 in [0, 1] of a polyline ``width_px`` wide."""
    m = np.zeros(shape, np.uint8)
    pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(m, [pts], False, 255, thickness=max(1, int(round(width_px))),
                  lineType=cv2.LINE_AA, shift=4)
    return m.astype(np.float32) / 255.0


def draw_tracks(albedo: np.ndarray, tracks: list, gsd: float, rng: np.random.Generator) -> None:
    """Paint ``tracks`` into ``albedo`` (in place); dirt tracks get two ruts and a grass strip."""
    shape = albedo.shape[:2]
    for tr in tracks:
        if len(tr.points) < 2:
            continue
        a = polyline_mask(shape, tr.points, tr.width_m / gsd)
        col = tr.colour[None, None] * (1 + 0.06 * rng.standard_normal(1))
        albedo[:] = albedo * (1 - a[..., None]) + col * a[..., None]
        if tr.kind == "dirt" and tr.width_m / gsd >= 4:
            g = polyline_mask(shape, tr.points, 0.35 * tr.width_m / gsd) * 0.7
            albedo[:] = albedo * (1 - g[..., None]) + albedo.mean((0, 1)) * 0.8 * g[..., None]


def tree_seeds(rng: np.random.Generator, shape: tuple[int, int], gsd: float, forest: np.ndarray,
               pal: Palette, extent_m: float) -> dict:
    """Candidate trees: forest stands plus scattered trees, as arrays (pixel x, y; metres r, h).

    Returns a dict of equal-length arrays: ``x, y`` (float pixels), ``r`` crown radius (m),
    ``h`` tree height (m), ``conifer`` (bool), ``colour`` ``(N, 3)``.
    """
    h, w = shape
    area = h * w * gsd * gsd
    r_mean = rng.uniform(2.0, 4.0)
    n_cand = int(area / (np.pi * r_mean ** 2) * 1.0)
    x = rng.uniform(0, w, n_cand)
    y = rng.uniform(0, h, n_cand)
    keep = forest[y.astype(int), x.astype(int)]
    # Scattered trees and rows in open ground.
    n_open = rng.poisson(12 * (extent_m / 256.0) ** 2)
    xo, yo = rng.uniform(0, w, n_open), rng.uniform(0, h, n_open)
    x = np.concatenate([x[keep], xo]).astype(np.float32)
    y = np.concatenate([y[keep], yo]).astype(np.float32)
    n = len(x)
    conifer_frac = rng.choice([0.0, 0.3, 0.9], p=[0.5, 0.3, 0.2])
    conifer = rng.random(n) < conifer_frac
    r = np.where(conifer, rng.uniform(1.3, 2.6, n), rng.uniform(0.6, 1.4, n) * r_mean)
    ht = np.where(conifer, rng.uniform(10, 24, n), rng.uniform(7, 20, n))
    leaves = np.stack(pal.leaves)
    colour = leaves[rng.integers(0, len(leaves), n)] * rng.uniform(0.75, 1.3, (n, 1))
    colour[conifer] = pal.conifer * rng.uniform(0.8, 1.2, (conifer.sum(), 1))
    return dict(x=x, y=y, r=r.astype(np.float32), h=ht.astype(np.float32), conifer=conifer,
                colour=colour.astype(np.float32))


def concat_trees(a: dict, b: dict) -> dict:
    """Concatenate two tree dicts of the form returned by :func:`tree_seeds`."""
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def crowns(shape: tuple[int, int], gsd: float, trees: dict, rng: np.random.Generator):
    """Render tree crowns: each pixel belongs to its nearest seed's crown if within its radius.

    Returns ``(height, alpha, albedo)``: ``(H, W)`` metres above ground, ``(H, W)`` coverage in
    [0, 1], ``(H, W, 3)`` crown colour (valid where alpha > 0).
    """
    h, w = shape
    height = np.zeros(shape, np.float32)
    alpha = np.zeros(shape, np.float32)
    albedo = np.zeros(shape + (3,), np.float32)
    if len(trees["x"]) == 0:
        return height, alpha, albedo
    xi = np.clip(trees["x"].astype(int), 0, w - 1)
    yi = np.clip(trees["y"].astype(int), 0, h - 1)
    src = np.full(shape, 255, np.uint8)
    src[yi, xi] = 0
    dist, labels = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5,
                                                   labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.zeros(labels.max() + 1, np.int64)
    lut[labels[yi, xi]] = np.arange(len(xi))  # duplicates on one pixel: the last one wins
    idx = lut[labels]
    d = dist * gsd
    r = trees["r"][idx]
    inside = d < r
    q = np.clip(d / r, 0, 1)
    top = trees["h"][idx]
    con = trees["conifer"][idx]
    base = top * 0.45
    dome = base + (top - base) * np.sqrt(1 - q * q)
    cone = top * (1 - 0.75 * q)
    height[:] = np.where(inside, np.where(con, cone, dome), 0)
    alpha[:] = np.clip((r - d) / gsd + 0.5, 0, 1)
    tex = fractal_noise(rng, shape, 0.9 / gsd, octaves=2)
    shade = 1 + 0.22 * tex
    albedo[:] = trees["colour"][idx] * shade[..., None]
    return height, alpha, albedo
