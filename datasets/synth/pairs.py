"""Synthetic two-date pairs: the same ground at two dates, with construction in between.

Date *before* is rendered exactly like :func:`detector.datasets.synth.render_image`'s scenes
(same terrain, targets, negatives). Date *after* keeps the ground (terrain, roads, negatives,
trees) and changes:

- light and season: a new sun, haze and sensor draw, and a seasonal tint of the terrain albedo
  (greener, browner or paler, up to ``season_tint``);
- construction: each target is removed with ``p_remove``, rebuilt as another class at the same
  place with ``p_rebuild``; new targets are added (``p_add`` of a fresh plan that avoids
  everything standing);
- foliage: with ``p_foliage`` a standing target is hidden under tree crowns on one of the two
  dates (it exists on both: not a change, a trap for change detection);
- geometry: the after image is resampled from the ground grid with a slight GSD change
  (``1 +- gsd_change``) and a misregistration of 0 - ``max_offset_px`` pixels in a random
  direction that its declared geotransform does not know about (as with two real sensors);
- optional ``swath``: the right ``swath`` fraction of the after image is nodata (0).

Truth (``changes_truth.geojson``, EPSG:4326, geometries in true ground coordinates, i.e. the
before date's frame): one feature per target of either date with ``status`` ``persisted``,
``appeared``, ``disappeared``, ``changed`` (class differs), ``hidden`` (under foliage on one
date: no change) or ``not_covered`` (the after image has no valid pixels there), and
``class_before`` / ``class_after``. Labels of each date (``labels_before.geojson``,
``labels_after.geojson``) are what an analyst would draw on that image, georeferenced with that
image's declared transform.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import objects as so
from . import render as sr
from . import terrain as st
from .geo import CRS, check_gsd, scene_transform
from .style import Style, draw_wide_conditions, sensor_look

_PAIR_KEY = 11  # seed-sequence key of pairs (tiles use 0-2, the scene 7)


@dataclass
class PairObject:
    """One target of a pair. key: identity across dates. label_before/after: class index or -1
    (absent). box_before: ``(4,)`` pixels of the before image or None (not visible).
    box_after: ``(4,)`` pixels of the after image or None. status: see the module docstring."""

    key: int
    label_before: int
    label_after: int
    box_before: np.ndarray | None
    box_after: np.ndarray | None
    box_ground: np.ndarray | None  # before-image pixels of the object on either date
    status: str


@dataclass
class Pair:
    """before, after: ``(H, W, 3)`` uint8 images (after may be a different size).
    transform_before, transform_after (declared), transform_after_true: Affine.
    offset_px: ``(2,)`` misregistration in before pixels; scale: after GSD / before GSD;
    shift_m: ``(dx, dy)`` metres (x east, y north) of after's declared positions minus truth.
    objects: :class:`PairObject` list. valid_after: ``(H', W')`` bool."""

    before: np.ndarray
    after: np.ndarray
    transform_before: object
    transform_after: object
    transform_after_true: object
    offset_px: np.ndarray
    scale: float
    shift_m: tuple
    objects: list
    valid_after: np.ndarray
    conditions: tuple


def pair_seed(seed: int, index: int) -> int:
    """Seed of pair ``index`` of a dataset made with ``seed`` (a stream no tile or scene uses)."""
    return int(np.random.SeedSequence([int(seed), _PAIR_KEY, int(index)]).generate_state(1)[0])


def _foliage(rng, o: so.Obj, gsd: float, pal) -> dict:
    """Crowns over the whole footprint of ``o`` (summer foliage hiding it from above)."""
    out = dict(x=[], y=[], r=[], h=[], conifer=[], colour=[])
    r = max(o.width, o.length) * 0.35 + 2.0
    for du in np.linspace(-o.length / 2, o.length / 2, max(2, int(o.length / r) + 2)):
        for dv in np.linspace(-o.width / 2, o.width / 2, max(2, int(o.width / r) + 2)):
            x, y = so._along(o.cx, o.cy, o.angle, du, dv, gsd)
            out["x"].append(x)
            out["y"].append(y)
            out["r"].append(r * rng.uniform(0.9, 1.1))
            out["h"].append(rng.uniform(10, 16))
            out["conifer"].append(False)
            out["colour"].append(pal.leaves[0] * rng.uniform(0.8, 1.2))
    return {k: np.asarray(v, np.float32 if k != "conifer" else bool).reshape((-1, 3) if k == "colour" else (-1,))
            for k, v in out.items()}


def _empty_trees() -> dict:
    return dict(x=np.zeros(0, np.float32), y=np.zeros(0, np.float32), r=np.zeros(0, np.float32),
                h=np.zeros(0, np.float32), conifer=np.zeros(0, bool), colour=np.zeros((0, 3), np.float32))


def _rebuild(rng, o: so.Obj, pal, gsd: float, others: list) -> so.Obj | None:
    """``o`` rebuilt as another class at the same centre and heading (None if it does not fit)."""
    kinds = [k for k in so.TARGETS if k != o.kind]
    kind = kinds[rng.integers(0, len(kinds))]
    p = {"bunker": so.params_bunker, "revetment": so.params_revetment, "shelter": so.params_shelter}[kind](rng, pal)
    p["tex"] = int(rng.integers(2 ** 31))
    n = so._make(kind, o.cx, o.cy, o.angle, p, so.TARGETS.index(kind))
    return n if so._box_iou_ok(n, others, gsd, limit=0.05) else None


def _render_date(bgd, albedo0, tracks, targets, negs, trees, gsd, cond, seed, style, shape):
    """Image and keyed visible boxes of one date (the drawing half of ``render_image``)."""
    tx_rng = np.random.default_rng([seed, 1])
    sty_rng = np.random.default_rng([seed, 2])
    albedo = albedo0.copy()
    st.draw_tracks(albedo, tracks, gsd, tx_rng)
    obj_h = np.zeros(shape, np.float32)
    fps = []
    for key, o in targets + [(-1, n) for n in negs]:
        drawn = so.draw(o, gsd, shape)
        if drawn is None:
            continue
        y0, x0, pt = drawn
        sl = (slice(y0, y0 + pt.height.shape[0]), slice(x0, x0 + pt.height.shape[1]))
        obj_h[sl] = np.maximum(obj_h[sl], pt.height)
        albedo[sl] = albedo[sl] * (1 - pt.alpha[..., None]) + pt.colour
        if key >= 0:
            fps.append((key, o.label, sl, pt.footprint))
    tree_h, tree_a, tree_col = st.crowns(shape, gsd, trees, tx_rng)
    albedo = albedo * (1 - tree_a[..., None]) + tree_col * tree_a[..., None]
    image = sensor_look(sr.render(bgd.height + np.maximum(obj_h, tree_h), albedo, gsd, cond, tx_rng),
                        sty_rng, style)
    boxes = {}
    for key, label, sl, fp in fps:
        vis = fp & (tree_a[sl] < 0.5)
        if vis.any():
            rows, cols = np.nonzero(vis.any(1))[0], np.nonzero(vis.any(0))[0]
            y0, x0 = sl[0].start, sl[1].start
            boxes[key] = (label, np.array([x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1],
                                          np.float64))
    return image, boxes


def render_pair(seed: int, height: int, width: int, *, gsd: float = 0.5, negatives: bool = True,
                style: Style = Style(), p_remove: float = 0.15, p_rebuild: float = 0.1, p_add: float = 0.35,
                p_foliage: float = 0.06, max_offset_px: float = 3.0, gsd_change: float = 0.03,
                season_tint: float = 0.15, swath: float = 0.0) -> Pair:
    """Render one before/after pair from ``seed`` (deterministic); see the module docstring.

    Pixel boxes use the generator's convention (x right, y down, pixel edges). Transforms put
    the before image where :func:`detector.datasets.synth.geo.scene_transform` puts scenes.
    """
    from affine import Affine
    import cv2

    check_gsd(gsd)
    if min(height, width) < 64:
        raise ValueError(f"pair images must be at least 64 x 64 pixels, got {height} x {width}")
    if not 0 <= swath < 1:
        raise ValueError(f"swath: a fraction of the after image's width in [0, 1), got {swath}")
    shape = (int(height), int(width))
    ss = np.random.SeedSequence(int(seed))
    bg_rng, tg_rng, ng_rng, ph_rng, tx_rng = (np.random.default_rng(s) for s in ss.spawn(5))
    ch_rng, add_rng, ph2_rng, fol_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), 13]).spawn(4))
    cond_a = sr.draw_conditions(ph_rng)
    cond_b = sr.draw_conditions(ph2_rng)
    if style.sensor:
        cond_a = draw_wide_conditions(np.random.default_rng([int(seed), 3]), cond_a)
        cond_b = draw_wide_conditions(np.random.default_rng([int(seed), 4]), cond_b)

    bgd = st.make_background(bg_rng, shape, gsd, style)
    pal = bgd.palette
    occ = so.Occupancy(shape, gsd)
    for tr in bgd.tracks:
        occ.add_track(tr)
    targets, tracks, occl = so.plan_targets(tg_rng, occ, pal, gsd, True)
    negs = so.plan_negatives(ng_rng, occ, pal, gsd, bgd.tracks) if negatives else []
    clear_a = occ.clear.copy()

    # construction between the dates
    before = list(enumerate(targets))
    after = []
    for key, o in before:
        u = ch_rng.random()
        if u < p_remove:
            continue
        if u < p_remove + p_rebuild:
            n = _rebuild(ch_rng, o, pal, gsd, [q for k, q in before if k != key])
            after.append((key, n if n is not None else o))
        else:
            after.append((key, o))
    # new targets come without new roads: the plan's tracks belong to groups mostly not kept
    added, _add_tracks, add_occl = so.plan_targets(add_rng, occ, pal, gsd, True)
    standing = [o for _, o in before]
    next_key = len(targets)
    for o in added:
        if add_rng.random() < p_add and so._box_iou_ok(o, standing, gsd, limit=0.0):
            after.append((next_key, o))
            standing.append(o)
            next_key += 1
    # foliage over a standing target on one date only
    hide = {0: [], 1: []}
    after_keys = {k for k, _ in after}
    for key, o in before:
        if key in after_keys and fol_rng.random() < p_foliage:
            date = int(fol_rng.integers(0, 2))
            hide[date].append(_foliage(fol_rng, dict(after)[key] if date else o, gsd, pal))

    # the ground both dates share; after's clearings include the new targets
    trees_all = bgd.trees
    season = (1 + fol_rng.uniform(-season_tint, season_tint, 3)).astype(np.float32)
    imgs, boxes = [], []
    for date, (tg, cond, clear) in enumerate(((before, cond_a, clear_a), (after, cond_b, occ.clear))):
        keep = clear[np.clip(trees_all["y"].astype(int), 0, shape[0] - 1),
                     np.clip(trees_all["x"].astype(int), 0, shape[1] - 1)] == 0
        trees = st.concat_trees({k: v[keep] for k, v in trees_all.items()}, occl)
        if date == 1 and len(add_occl["x"]):
            trees = st.concat_trees(trees, add_occl)
        for f in hide[date]:
            trees = st.concat_trees(trees, f)
        albedo = bgd.albedo if date == 0 else np.clip(bgd.albedo * season, 0, 1)
        img, bx = _render_date(bgd, albedo, tracks, tg, negs, trees,
                               gsd, cond, int(seed) * 2 + date, style, shape)
        imgs.append(img)
        boxes.append(bx)

    # after image: resample the ground grid with a GSD change and an unknown offset
    geo = np.random.default_rng([int(seed), 14])
    r, ang = geo.uniform(0, max_offset_px), geo.uniform(0, 2 * np.pi)
    off = np.array([r * np.cos(ang), r * np.sin(ang)])
    s = float(1 + geo.uniform(-gsd_change, gsd_change))
    margin = np.ceil(max_offset_px) + 1
    o_x, o_y = margin + off
    wb = int((width - 1 - o_x - 1) / s)
    hb = int((height - 1 - o_y - 1) / s)
    # ground pixel (edges) = s * after pixel + o; cv2 wants pixel-centre coordinates
    M = np.float64([[s, 0, o_x + 0.5 * s - 0.5], [0, s, o_y + 0.5 * s - 0.5]])
    img_b = cv2.warpAffine(imgs[1], M, (wb, hb), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REFLECT)
    valid = np.ones((hb, wb), bool)
    cut = wb - int(round(swath * wb)) if swath else wb
    img_b = np.maximum(img_b, 1)  # 0 is nodata
    if cut < wb:
        img_b[:, cut:] = 0
        valid[:, cut:] = False
    t_a = scene_transform(gsd)
    t_true = t_a @ Affine(s, 0, o_x, 0, s, o_y)
    t_decl = t_a @ Affine(s, 0, margin, 0, s, margin)
    shift_m = (-off[0] * gsd, off[1] * gsd)  # declared minus true, metres east / north

    def to_after(b):
        nb = (b - [o_x, o_y, o_x, o_y]) / s
        cx, cy = (nb[0] + nb[2]) / 2, (nb[1] + nb[3]) / 2
        if not (0 <= cx < cut and 0 <= cy < hb):
            return None
        return np.clip(nb, 0, [cut, hb, cut, hb])

    objects = []
    keys = sorted({k for k, _ in before} | {k for k, _ in after})
    lab_b, lab_a = dict((k, o.label) for k, o in before), dict((k, o.label) for k, o in after)
    for k in keys:
        la, lb = lab_b.get(k, -1), lab_a.get(k, -1)
        vb = boxes[0].get(k)
        va = boxes[1].get(k)
        box_a = to_after(va[1]) if va is not None else None
        # ground box: where the object stands (before box, else after's ground-grid box)
        ground = vb[1] if vb is not None else (va[1] if va is not None else None)
        obj = next(o for kk, o in (after if lb >= 0 else before) if kk == k)
        ref = ground if ground is not None else so.aabb(obj, gsd)
        cx, cy = (ref[0] + ref[2]) / 2, (ref[1] + ref[3]) / 2
        acx, acy = (cx - o_x) / s, (cy - o_y) / s
        covered = 0 <= acx < cut and 0 <= acy < hb
        if vb is None and va is None:
            continue  # hidden on both dates (or removed while hidden): nobody could see it
        if la >= 0 and lb >= 0 and (vb is None or box_a is None) and covered:
            status = "hidden"
        elif not covered:
            status = "not_covered"
        elif la >= 0 and lb >= 0:
            status = "persisted" if la == lb else "changed"
        elif la >= 0:
            status = "disappeared"
        else:
            status = "appeared"
        objects.append(PairObject(k, la, lb, None if vb is None else vb[1], box_a, ref, status))
    return Pair(imgs[0], img_b, t_a, t_decl, t_true, off, s, shift_m, objects, valid, (cond_a, cond_b))


def write_rgb(path, image: np.ndarray, transform, *, nodata: int | None = None) -> None:
    """``(H, W, 3)`` uint8 RGB GeoTIFF in the generator's CRS, nodata 0 when asked."""
    import rasterio

    h, w = image.shape[:2]
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs=CRS, transform=transform,
                   photometric="RGB", compress="deflate", predictor=2)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(image, 2, 0))


def _features(items, transform) -> list:
    from rasterio.warp import transform as warp

    feats = []
    for i, (b, props) in enumerate(items):
        x1, y1, x2, y2 = (float(c) for c in b)
        px = [(x1, y1), (x1, y2), (x2, y2), (x2, y1), (x1, y1)]
        mx, my = zip(*[transform @ p for p in px])
        lon, lat = warp(CRS, "EPSG:4326", list(mx), list(my))
        ring = [[round(lo, 9), round(la, 9)] for lo, la in zip(lon, lat)]
        x, y = np.asarray(ring).T
        if (x[:-1] * y[1:] - x[1:] * y[:-1]).sum() < 0:
            ring = ring[::-1]
        p = {k: (so.TARGETS[v] if k.startswith("class") and isinstance(v, (int, np.integer)) and v >= 0
                 else (None if k.startswith("class") and isinstance(v, (int, np.integer)) else v))
             for k, v in props.items()}
        feats.append({"type": "Feature", "id": i, "geometry": {"type": "Polygon", "coordinates": [ring]},
                      "properties": p})
    return feats


def write_pair(out_dir, pair: Pair) -> dict:
    """Write a pair: ``before.tif``, ``after.tif`` (nodata 0), ``labels_before.geojson``,
    ``labels_after.geojson``, ``changes_truth.geojson`` and ``pair.json``. Returns pair.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_rgb(out / "before.tif", pair.before, pair.transform_before)
    write_rgb(out / "after.tif", pair.after, pair.transform_after, nodata=0)
    lb = [(o.box_before, {"class": o.label_before, "key": o.key}) for o in pair.objects if o.box_before is not None]
    la = [(o.box_after, {"class": o.label_after, "key": o.key}) for o in pair.objects if o.box_after is not None]
    tr = [(o.box_ground, {"status": o.status, "class_before": o.label_before, "class_after": o.label_after,
                          "key": o.key}) for o in pair.objects]
    for name, items, t in (("labels_before", lb, pair.transform_before), ("labels_after", la, pair.transform_after),
                           ("changes_truth", tr, pair.transform_before)):
        with open(out / f"{name}.geojson", "w") as f:
            json.dump({"type": "FeatureCollection", "features": _features(items, t)}, f)
    statuses = [o.status for o in pair.objects]
    meta = {"offset_px": [round(float(v), 3) for v in pair.offset_px], "scale": round(pair.scale, 5),
            "expected_shift_m": [round(float(v), 3) for v in pair.shift_m],
            "before_shape": list(pair.before.shape[:2]), "after_shape": list(pair.after.shape[:2]),
            "after_valid_fraction": round(float(pair.valid_after.mean()), 4),
            "sun": [[round(c.azimuth, 1), round(c.elevation, 1)] for c in pair.conditions],
            "truth": {s: statuses.count(s) for s in sorted(set(statuses))}}
    (out / "pair.json").write_text(json.dumps(meta, indent=1))
    return meta


def generate_pairs(out_dir, n: int, *, seed: int = 0, size: int = 2048, gsd: float = 0.5,
                   negatives: bool = True, style: Style = Style(), swath: float = 0.0) -> list[dict]:
    """``n`` pairs under ``out_dir/pair_NNN/`` (see :func:`write_pair`), seeds :func:`pair_seed`."""
    metas = []
    for i in range(int(n)):
        pair = render_pair(pair_seed(seed, i), size, size, gsd=gsd, negatives=negatives, style=style, swath=swath)
        meta = write_pair(Path(out_dir) / f"pair_{i:03d}", pair)
        meta["dir"] = str(Path(out_dir) / f"pair_{i:03d}")
        metas.append(meta)
    return metas
