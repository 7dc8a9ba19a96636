"""Scenes and datasets: one image rendered from a plan, tiles, the large scene, GeoTIFF/COCO writing.

Every image is rendered physically from a height map (metres) and an albedo map (linear RGB):
one sun (random azimuth and elevation) gives Lambertian slope shading and cast shadows, a
bluish sky gives ambient light, then haze, optical blur, gain, gamma and noise (see
``render``). Backgrounds (``terrain``): grass, bare soil, rocky ground, field
patchworks, forest with individual crowns, curved roads and dirt tracks, seasons. Objects
(``objects``) are drawn at their real size in metres at any orientation.

Box convention: a label is the axis-aligned bounding box, in pixel-edge coordinates
(x right, y down; a box over pixel columns 10..19 has x1=10, x2=20), of the *visible footprint*
of a target: its raised part seen from above (bunker: earth mound incl. slopes, headwall, door;
revetment: the berm; shelter: the roof), minus pixels hidden under tree crowns. Aprons, roads,
vehicles outside, and cast shadows are not part of it. Negatives (houses, barns, greenhouses,
ponds, tanks, ring berms, dykes, spoil heaps, hay bales) are never labelled.

Command line: ``revet synth OUT_DIR`` (:mod:`detector.cli`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from detector.display import class_colour

from . import objects as so
from . import render as sr
from . import terrain as st
from .geo import CRS, check_gsd, scene_transform
from .style import Style, draw_wide_conditions, sensor_look

CLASSES = ("bunker", "revetment", "shelter")
SPLITS = ("train", "val", "test")
_SCENE_KEY = 7  # seed-sequence key of the large scene (splits use 0, 1, 2)

assert so.TARGETS == CLASSES


@dataclass
class Rendered:
    """One rendered image.

    image: ``(H, W, 3)`` uint8 RGB. boxes: ``(N, 4)`` float32 x1, y1, x2, y2 pixels.
    labels: ``(N,)`` int64 into ``CLASSES``. targets, negatives: the planned objects.
    conditions: sun and sensor parameters.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    targets: list
    negatives: list
    conditions: sr.Conditions


def render_image(seed: int, height: int, width: int, *, gsd: float = 0.5, negatives: bool = True,
                 contain: bool = True, targets: bool = True, style: Style = Style()) -> Rendered:
    """Render one ``height x width`` image from ``seed`` (deterministic).

    Independent random streams drive background, targets, negatives, light and textures, so the
    targets (and their boxes) of a seed are the same with ``negatives`` True or False.
    ``targets=False`` draws no targets (a negatives-only image: every detection on it is false).
    ``contain``: every target footprint lies inside the image (tiles); the large scene uses
    the same rule, objects fall anywhere else (across any 512-px window boundary).
    ``style`` (:class:`~detector.datasets.synth.style.Style`): how far terrain, materials, light
    and sensor vary; the standard style gives the generator's standard images.
    """
    check_gsd(gsd)
    if height < 32 or width < 32:
        raise ValueError(f"image size must be at least 32 x 32 pixels, got {height} x {width}")
    shape = (int(height), int(width))
    ss = np.random.SeedSequence(int(seed))
    bg_rng, tg_rng, ng_rng, ph_rng, tx_rng = (np.random.default_rng(s) for s in ss.spawn(5))
    cond = sr.draw_conditions(ph_rng)
    sty_rng = np.random.default_rng(ss.spawn(1)[0])  # a sixth stream: the standard five stay as they were
    if style.sensor:
        cond = draw_wide_conditions(sty_rng, cond)

    bgd = st.make_background(bg_rng, shape, gsd, style)
    occ = so.Occupancy(shape, gsd)
    for tr in bgd.tracks:
        occ.add_track(tr)
    if targets:
        targets, tracks, occluders = so.plan_targets(tg_rng, occ, bgd.palette, gsd, contain)
    else:
        targets, tracks = [], []
        occluders = {k: v[:0] for k, v in bgd.trees.items()}
    negs = so.plan_negatives(ng_rng, occ, bgd.palette, gsd, bgd.tracks) if negatives else []

    albedo = bgd.albedo
    st.draw_tracks(albedo, tracks, gsd, tx_rng)
    obj_h = np.zeros(shape, np.float32)
    footprints = []
    for o in targets + negs:
        drawn = so.draw(o, gsd, shape)
        if drawn is None:
            continue
        y0, x0, pt = drawn
        sl = (slice(y0, y0 + pt.height.shape[0]), slice(x0, x0 + pt.height.shape[1]))
        obj_h[sl] = np.maximum(obj_h[sl], pt.height)
        albedo[sl] = albedo[sl] * (1 - pt.alpha[..., None]) + pt.colour
        if o.label >= 0:
            footprints.append((o.label, sl, pt.footprint))

    trees = bgd.trees
    keep = occ.clear[np.clip(trees["y"].astype(int), 0, shape[0] - 1),
                     np.clip(trees["x"].astype(int), 0, shape[1] - 1)] == 0
    trees = st.concat_trees({k: v[keep] for k, v in trees.items()}, occluders)
    tree_h, tree_a, tree_col = st.crowns(shape, gsd, trees, tx_rng)
    albedo = albedo * (1 - tree_a[..., None]) + tree_col * tree_a[..., None]
    height_map = bgd.height + np.maximum(obj_h, tree_h)

    image = sensor_look(sr.render(height_map, albedo, gsd, cond, tx_rng), sty_rng, style)
    boxes, labels = _boxes(footprints, tree_a)
    return Rendered(image, boxes, labels, targets, negs, cond)


def _boxes(footprints: list, tree_alpha: np.ndarray):
    """Boxes ``(N, 4)`` float32 and labels ``(N,)`` int64 of the visible footprints."""
    boxes, labels = [], []
    for label, sl, fp in footprints:
        vis = fp & (tree_alpha[sl] < 0.5)
        if not vis.any():
            continue
        rows = np.nonzero(vis.any(1))[0]
        cols = np.nonzero(vis.any(0))[0]
        y0, x0 = sl[0].start, sl[1].start
        boxes.append([x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1])
        labels.append(label)
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64))


def render_tile(seed: int, *, size: int = 512, gsd: float = 0.5, negatives: bool = True,
                targets: bool = True, style: Style = Style()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one square tile: ``(image, boxes, labels)``.

    image: ``(size, size, 3)`` uint8 RGB. boxes: ``(N, 4)`` float32 ``x1, y1, x2, y2`` in pixels
    (x right, y down, pixel edges: a box over pixel columns 10..19 has x1=10, x2=20), each fully
    inside the tile. labels: ``(N,)`` int64 indices into ``CLASSES``. Deterministic in ``seed``.
    """
    r = render_image(seed, size, size, gsd=gsd, negatives=negatives, contain=True, targets=targets,
                     style=style)
    return r.image, r.boxes, r.labels


def tile_gsd(seed: int, gsd: float, gsd_range: tuple[float, float] | None) -> float:
    """Ground sample distance (m/px) of a tile: ``gsd``, or drawn log-uniformly from ``gsd_range``
    by the tile's seed (a fixed function, so datasets are reproducible)."""
    if not gsd_range:
        return gsd
    lo, hi = (float(v) for v in gsd_range)
    check_gsd(lo), check_gsd(hi)
    u = np.random.default_rng([int(seed) % 2**63, 5]).random()
    return float(round(np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))), 4))


def tile_seed(seed: int, split: str, index: int) -> int:
    """Seed of tile ``index`` of ``split`` ("train", "val", "test"): a fixed function."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    state = np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


def scene_seed(seed: int) -> int:
    """Seed of the large scene of a dataset made with ``seed``."""
    return int(np.random.SeedSequence([int(seed), _SCENE_KEY]).generate_state(1)[0])


def tile_transform(split: str, index: int, tile_size: int, gsd: float, grid_gsd: float | None = None):
    """Affine transform of a tile: tiles lie on a grid, 100 m apart, distinct per split/index
    (the grid is spaced for ``grid_gsd``, the largest pixel size of a dataset of mixed GSDs)."""
    from affine import Affine

    step = tile_size * (grid_gsd or gsd) + 100.0
    row = SPLITS.index(split) * 1000 + index // 100
    return Affine(gsd, 0.0, 300000.0 + (index % 100) * step, 0.0, -gsd, 4300000.0 - row * step)


def write_geotiff(path, image: np.ndarray, transform, *, block: int = 512) -> None:
    """Write ``image`` ``(H, W, 3)`` uint8 as an RGB, deflate, tiled GeoTIFF in ``CRS``."""
    import rasterio

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{path}: expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs=CRS,
                   transform=transform, photometric="RGB", compress="deflate", predictor=2)
    if h % 16 == 0 and w % 16 == 0:
        profile.update(tiled=True, blockxsize=min(block, w), blockysize=min(block, h))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(image, 2, 0))


def to_multiband16(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, seed: int, *,
                   border: float | None = None):
    """A 16-bit 4-band (R, G, B, NIR) version of a rendered RGB image with a nodata border.

    Digital numbers mimic a 12-bit sensor: ``DN = 300 + 14 * value`` (0 is nodata); NIR is
    bright on vegetation (green above red) and dark on water and roofs. A strip along one
    side (``border`` of the width; random 0-25 % when None, none in 60 % of images) is nodata,
    as at a scene's edge. Objects whose centre falls in it are dropped, the others clipped.
    Returns (image (H, W, 4) uint16, boxes, labels).
    """
    rng = np.random.default_rng([seed, 16])
    rgb = image.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    nir = np.clip(0.5 * r + 1.4 * g - 0.6 * b, 0, 255)
    out = np.clip(300 + 14 * np.dstack([r, g, b, nir]), 1, 65535).astype(np.uint16)
    h, w = image.shape[:2]
    if border is None:
        border = 0.0 if rng.random() < 0.6 else float(rng.uniform(0.05, 0.25))
    cut = int(round(border * w))
    if cut:
        out[:, :cut] = 0
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        keep = (boxes[:, 0] + boxes[:, 2]) / 2 >= cut
        boxes, labels = boxes[keep].copy(), np.asarray(labels)[keep]
        boxes[:, 0] = np.maximum(boxes[:, 0], cut)
    return out, np.asarray(boxes, np.float32), np.asarray(labels, np.int64)


def write_geotiff16(path, image: np.ndarray, transform, *, block: int = 512) -> None:
    """Write ``image`` ``(H, W, C)`` uint16 as a deflate, tiled GeoTIFF with nodata 0."""
    import rasterio

    h, w, c = image.shape
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype="uint16", crs=CRS, nodata=0,
                   transform=transform, compress="deflate", predictor=2, photometric="minisblack")
    if h % 16 == 0 and w % 16 == 0:
        profile.update(tiled=True, blockxsize=min(block, w), blockysize=min(block, h))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(image, 2, 0))


def _tile_job(job: tuple):
    split, index, seed, tile_size, gsd, (negatives, targets), out_dir, ms16, style, gsd_range = job
    ts = tile_seed(seed, split, index)
    gsd = tile_gsd(ts, gsd, gsd_range)
    grid = max(gsd_range) if gsd_range else None
    img, boxes, labels = render_tile(ts, size=tile_size, gsd=gsd, negatives=negatives, targets=targets,
                                     style=style)
    name = f"{split}/{index:06d}.tif"
    if ms16:
        img16, boxes, labels = to_multiband16(img, boxes, labels, ts)
        write_geotiff16(Path(out_dir) / name, img16, tile_transform(split, index, tile_size, gsd, grid))
    else:
        write_geotiff(Path(out_dir) / name, img, tile_transform(split, index, tile_size, gsd, grid))
    return split, index, name, boxes.tolist(), labels.tolist()


def _scene_job(job: tuple):
    seed, scene_size, gsd, (negatives, targets), out_dir, ms16, style, _gsd_range = job
    r = render_image(scene_seed(seed), scene_size, scene_size, gsd=gsd, negatives=negatives, contain=True,
                     targets=targets, style=style)
    transform = scene_transform(gsd)
    boxes, labels = r.boxes, r.labels
    if ms16:
        img16, boxes, labels = to_multiband16(r.image, boxes, labels, scene_seed(seed), border=0.1)
        write_geotiff16(Path(out_dir) / "scene.tif", img16, transform)
    else:
        write_geotiff(Path(out_dir) / "scene.tif", r.image, transform)
    write_scene_geojson(Path(out_dir) / "scene.geojson", boxes, labels, transform)
    return "scene", 0, "scene.tif", np.asarray(boxes).tolist(), np.asarray(labels).tolist()


def _job(job: tuple):
    return _scene_job(job[1:]) if job[0] == "scene" else _tile_job(job[1:])


def write_scene_geojson(path, boxes: np.ndarray, labels: np.ndarray, transform) -> None:
    """RFC 7946 FeatureCollection (EPSG:4326 lon/lat): one box Polygon per object.

    Each box ``x1, y1, x2, y2`` (pixels) becomes the ring NW, SW, SE, NE, NW (counter-clockwise
    on the map) through ``transform`` into ``CRS``, then reprojected to lon/lat.
    """
    from rasterio.warp import transform as warp

    feats = []
    for i, (b, lab) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), labels)):
        x1, y1, x2, y2 = (float(c) for c in b)
        px = [(x1, y1), (x1, y2), (x2, y2), (x2, y1), (x1, y1)]
        mx, my = zip(*[transform @ p for p in px])
        lon, lat = warp(CRS, "EPSG:4326", list(mx), list(my))
        feats.append({"type": "Feature", "id": i,
                      "geometry": {"type": "Polygon",
                                   "coordinates": [[[lo, la] for lo, la in zip(lon, lat)]]},
                      "properties": {"class": CLASSES[int(lab)],
                                     "pixel_box": [x1, y1, x2, y2]}})
    with open(path, "w") as f:
        json.dump({"type": "FeatureCollection", "features": feats}, f)


def write_split(path: Path, split: str, records: list, tile_size: int) -> Path:
    """One split's COCO file (the shared atomic writer, :func:`detector.labels.coco.write_coco`):
    ``records`` are ``(file name relative to path's folder, boxes, labels)``; image ids 1..N,
    category ids 1..K in ``CLASSES`` order."""
    from detector.labels import ImageRecord, LabelSet
    from detector.labels.coco import write_coco

    images = [ImageRecord(path.parent / name, tile_size, tile_size, boxes, labels, image_id=k)
              for k, (name, boxes, labels) in enumerate(records, start=1)]
    return write_coco(LabelSet(list(CLASSES), images), path, category_ids=list(range(1, len(CLASSES) + 1)),
                      info={"description": f"Revet synthetic {split} split"})


def generate_dataset(out_dir, *, n_train: int = 300, n_val: int = 60, n_test: int = 100,
                     tile_size: int = 512, scene_size: int = 2048, gsd: float = 0.5,
                     seed: int = 0, workers: int = 1, negatives: bool = True,
                     preview: bool = False, multiband16: bool = False, targets: bool = True,
                     style: Style = Style(), gsd_range: tuple[float, float] | None = None,
                     pairs: int = 0) -> dict:
    """Write tiles (GeoTIFF + COCO JSON per split), one large scene (GeoTIFF + GeoJSON).

    Layout: ``out_dir/{train,val,test}/NNNNNN.tif`` and ``out_dir/{split}.json`` (file names
    relative to ``out_dir``), ``out_dir/scene.tif`` + ``scene.geojson`` (skipped when
    ``scene_size`` is 0), ``out_dir/preview/*.png`` when ``preview``. Tile ``i`` of a split is
    ``render_tile(tile_seed(seed, split, i))``; files are byte-identical whatever ``workers``.
    With ``multiband16``, images are 16-bit 4-band (R, G, B, NIR) with nodata 0 and nodata
    borders on some tiles and the scene (see :func:`to_multiband16`). ``negatives=False``: no
    hard negatives (same targets); ``targets=False``: negatives-only images with no labels.
    ``style``: how far terrain, materials, light and sensor vary (see ``style``);
    ``gsd_range``: each tile drawn at its own ground sample distance in this range (metres per
    pixel, log-uniform, :func:`tile_gsd`; the scene stays at ``gsd``).
    ``pairs``: also write that many two-date pairs of ``scene_size`` (2048 when 0) pixels at
    ``gsd`` under ``out_dir/pairs/pair_NNN/`` (:mod:`~detector.datasets.synth.pairs`; seeds
    no tile or scene uses).
    Returns a summary: counts per split and class, paths.
    """
    check_gsd(gsd)
    if not (targets or negatives):
        raise ValueError("targets and negatives are both off: the images would hold only terrain")
    out = Path(out_dir)
    counts = dict(zip(SPLITS, (n_train, n_val, n_test)))
    for split, n in counts.items():
        if n < 0:
            raise ValueError(f"n_{split} must be >= 0, got {n}")
        (out / split).mkdir(parents=True, exist_ok=True)
    jobs = []
    if scene_size:
        jobs.append(("scene", seed, scene_size, gsd, (negatives, targets), str(out), multiband16, style, None))
    jobs += [("tile", split, i, seed, tile_size, gsd, (negatives, targets), str(out), multiband16, style, gsd_range)
             for split, n in counts.items() for i in range(n)]
    if workers > 1:
        with Pool(workers) as pool:
            results = list(pool.imap(_job, jobs, chunksize=4))
    else:
        results = [_job(j) for j in jobs]

    records = {s: [] for s in SPLITS}
    summary = {"out_dir": str(out), "gsd": gsd, "tile_size": tile_size, "seed": seed,
               "classes": list(CLASSES), "splits": {}, "style": style.to_dict(),
               "gsd_range": list(gsd_range) if gsd_range else None}
    for split, _i, name, boxes, labels in results:
        if split == "scene":
            summary["scene"] = {"tif": str(out / "scene.tif"),
                                "geojson": str(out / "scene.geojson"),
                                "objects": _class_counts(labels)}
        else:
            records[split].append((name, boxes, labels))
    for split in SPLITS:
        path = write_split(out / f"{split}.json", split, records[split], tile_size)
        summary["splits"][split] = {
            "json": str(path), "images": len(records[split]),
            "empty": sum(1 for r in records[split] if not r[2]),
            "objects": _class_counts([lab for r in records[split] for lab in r[2]])}
    if preview and not multiband16:
        summary["preview"] = write_previews(out, records)
    if pairs:
        from .pairs import generate_pairs

        summary["pairs"] = generate_pairs(out / "pairs", pairs, seed=seed, size=scene_size or 2048, gsd=gsd,
                                          negatives=negatives, style=style)
    return summary


def _class_counts(labels) -> dict:
    return {c: int(sum(1 for lab in labels if lab == i)) for i, c in enumerate(CLASSES)}


def draw_boxes(image: np.ndarray, boxes, labels, scale: float = 1.0):
    """A Pillow image of ``image`` (resized by ``scale``) with labelled boxes drawn."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    if scale != 1.0:
        im = im.resize((int(im.width * scale), int(im.height * scale)), Image.BILINEAR)
    d = ImageDraw.Draw(im)
    for (x1, y1, x2, y2), lab in zip(boxes, labels):
        name = CLASSES[int(lab)]
        c = class_colour(int(lab))
        d.rectangle([x1 * scale, y1 * scale, x2 * scale - 1, y2 * scale - 1], outline=c, width=2)
        d.text((x1 * scale + 2, max(y1 * scale - 11, 0)), name, fill=c)
    return im


def write_previews(out: Path, records: dict, n: int = 6) -> list:
    """PNG previews of the first ``n`` tiles of the first non-empty split (train, val, test) and
    of the scene (halved), boxes drawn."""
    import rasterio

    pdir = out / "preview"
    pdir.mkdir(exist_ok=True)
    paths = []
    items = [(out / name, boxes, labels, 1.0, f"{Path(name).parent}_{Path(name).stem}.png")
             for name, boxes, labels in next((records[s] for s in SPLITS if records[s]), [])[:n]]
    if (out / "scene.geojson").exists():
        feats = json.load(open(out / "scene.geojson"))["features"]
        items.append((out / "scene.tif", [f["properties"]["pixel_box"] for f in feats],
                      [CLASSES.index(f["properties"]["class"]) for f in feats], 0.5, "scene.png"))
    for path, boxes, labels, scale, png in items:
        with rasterio.open(path) as src:
            img = np.moveaxis(src.read(), 0, 2)
        draw_boxes(img, boxes, labels, scale).save(pdir / png)
        paths.append(str(pdir / png))
    return paths
