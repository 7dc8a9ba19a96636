"""The first pass (detector/prescreen.py): windows skipped and objects lost, per scene kind.

Renders one scene per kind with Revet's generator (datasets/synth.py), scores it with a model
(default the shipped ``revet-base:int8``) twice, with every window scored (``skip=False``) and
with the first pass, and prints per kind: windows, windows skipped (fraction; all-nodata ones
apart), objects the full pass finds, of those lost with the first pass (same class, IoU >= 0.5:
the miss rate against the full pass), the smallest margin of a window that gave the full pass a
detection (its statistic over the skip threshold, best band; < 1 would have been skipped), the
first pass's cost per window against the detector's, and MP/s both ways. Then the CPU's flags.

Kinds: the five seasons (standard style), the varied style (wide sun, haze, gain, gamma, noise),
a heavy-haze scene, the 16-bit-sensor look (percentile stretch), a 16-bit 4-band scene with a
nodata border (the first pass judges the uint16 file under a 16-bit spec; the RGB model scores
the 8-bit rendering, nodata alike), and ``uniform``: the generator draws no water, cloud or
snow fields, so this benchmark paints them over a standard scene (a flat lake with 1.5 DN noise
and a gentle gradient, a saturating cloud with soft edges, a flat field) and a nodata strip.

    python benchmarks/bench_prescreen.py [--size 2048] [--model revet-base:int8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from detector.datasets import synth
from detector.datasets.synth import render as sr
from detector.datasets.synth.geo import scene_transform
from detector.datasets.synth.style import SEASONS, Style, draw_wide_conditions
from detector.prescreen import Prescreen
from detector.runner import Detector, read_scene_window
from detector import raster, tiling
from detector.tiling import box_iou

SPEC16 = dict(dtype="uint16", offset=(300.0,) * 3, scale=(14 * 255.0,) * 3)  # synth.to_multiband16's DNs


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split(":", 1)[1].split()
    except (OSError, StopIteration):
        return []
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16") if f in flags]


def hazy_seed(start: int, least: float = 0.25) -> int:
    """The first seed from ``start`` whose varied-style conditions have haze >= ``least``
    (the generator's own draw, replayed without rendering)."""
    for seed in range(start, start + 10000):
        ss = np.random.SeedSequence(seed)
        kids = ss.spawn(5)
        cond = sr.draw_conditions(np.random.default_rng(kids[3]))
        cond = draw_wide_conditions(np.random.default_rng(ss.spawn(1)[0]), cond)
        if cond.haze >= least:
            return seed
    raise RuntimeError("no hazy seed found")


def paint_uniform(img: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Paint a lake, a cloud and a flat field over an (H, W, 3) uint8 scene; returns the image
    and a valid mask with a nodata strip on the right (8 % of the width)."""
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    out = img.astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lake = ((xx - 0.3 * w) / (0.28 * w)) ** 2 + ((yy - 0.35 * h) / (0.3 * h)) ** 2 < 1
    water = np.float32([38, 52, 58]) + 6 * (yy / h)[..., None] + rng.normal(0, 1.5, (h, w, 1))
    out[lake] = water[lake]
    cloud_d = np.hypot((xx - 0.78 * w) / (0.2 * w), (yy - 0.75 * h) / (0.2 * h))
    a = np.clip((1.3 - cloud_d) / 0.4, 0, 1)[..., None]
    out = out * (1 - a) + a * 255.0  # saturates in its core
    field = (xx > 0.45 * w) & (xx < 0.85 * w) & (yy < 0.3 * h)
    out[field] = np.float32([120, 130, 70]) + rng.normal(0, 1.0, (int(field.sum()), 3))
    valid = np.ones((h, w), bool)
    valid[:, int(0.92 * w):] = False
    img = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    img[~valid] = 0
    return img, valid


def write_rgb(path: Path, img: np.ndarray, nodata: bool) -> Path:
    import rasterio

    from detector.datasets.synth.geo import CRS, scene_transform

    h, w = img.shape[:2]
    prof = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs=CRS,
                transform=scene_transform(0.5),
                tiled=True, blockxsize=512, blockysize=512, compress="deflate")
    if nodata:
        prof["nodata"] = 0
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(np.moveaxis(img, 2, 0))
    return path


def make_scenes(folder: Path, size: int) -> list[dict]:
    """One scene per kind: ``{"kind", "path" (8-bit RGB scored), "screen_path" (the file the first
    pass judges), "spec16"}``."""
    scenes = []

    def add(kind, seed, style, post=None, sixteen=False):
        r = synth.render_image(seed, size, size, style=style, contain=False)
        img, valid = r.image, None
        if post is not None:
            img, valid = post(img, seed)
        if sixteen:
            ms, _, _ = synth.to_multiband16(img, r.boxes, r.labels, seed, border=0.15)
            img = img.copy()
            img[ms[..., 0] == 0] = 0  # the 8-bit rendering gets the same nodata border
            p16 = folder / f"{kind}.u16.tif"
            synth.write_geotiff16(p16, ms, scene_transform(0.5))
            path = write_rgb(folder / f"{kind}.tif", img, nodata=True)
            scenes.append({"kind": kind, "path": path, "screen_path": p16, "spec16": True})
            return
        path = write_rgb(folder / f"{kind}.tif", img, nodata=valid is not None)
        scenes.append({"kind": kind, "path": path, "screen_path": path, "spec16": False})

    for i, season in enumerate(SEASONS):
        add(f"standard-{season}", 100 + i, Style().only(season))
    add("varied", 200, Style.varied())
    add("haze", hazy_seed(300), Style.varied())
    add("stretch16-look", 400, Style(sensor=True, stretch16=1.0))
    add("uint16-4band-nodata", 500, Style(), sixteen=True)
    add("uniform-water-cloud-field", 600, Style(), post=paint_uniform)
    return scenes


class _Decided(Detector):
    """A Detector whose first pass is decided beforehand per window ``(col, row)`` (the 16-bit
    kind: windows of the uint16 file judged under the 16-bit spec, while the RGB model scores
    the 8-bit copy). The runner reads windows in plan order, so the hook walks the same grid."""

    def __init__(self, det: Detector, keep: dict) -> None:
        super().__init__(det.backend, det.spec)
        self.keep = keep

    def _score_windows(self, source, width, height, thr, overlap, batch_size, screen=None):
        self._grid = iter(tiling.scene_windows(width, height, self.spec.tile_size, overlap))
        return super()._score_windows(source, width, height, thr, overlap, batch_size, screen)

    def skip_reason(self, tile, valid, screen=None):
        where = next(self._grid)
        if not valid.any():
            return "nodata"
        return None if screen is None or self.keep.get(where, True) else "screened"


def window_stats(det: Detector, path, screen: Prescreen, spec) -> tuple[dict, dict, float]:
    """Per window ``(col, row)``: may_hold, and margin = max over bands of C / (min_contrast +
    noise_margin * N); the mean seconds of the first pass per window with data."""
    import rasterio

    keep, margin, secs = {}, {}, []
    with raster.open_raster(path) as ds, rasterio.Env():
        t = det.spec.tile_size
        for col, row in tiling.scene_windows(ds.width, ds.height, t, det.spec.overlap):
            tile, valid = read_scene_window(ds, list(det.spec.bands), t, col, row)
            if not valid.any():
                continue
            t0 = time.perf_counter()
            keep[(col, row)] = screen.may_hold(tile, valid, spec)
            secs.append(time.perf_counter() - t0)
            c, n = screen.statistics(tile, valid, spec.offset, spec.scale)
            margin[(col, row)] = float(np.max(c / np.maximum(screen.min_contrast + screen.noise_margin * n, 1e-12)))
    return keep, margin, float(np.mean(secs)) if secs else 0.0


def lost(full, fast, iou: float = 0.5) -> np.ndarray:
    """(N,) bool over ``full``'s detections: no same-class detection of ``fast`` at IoU >= iou."""
    out = np.ones(len(full), bool)
    if len(full) and len(fast):
        m = box_iou(full.boxes, fast.boxes) >= iou
        m &= full.labels[:, None] == fast.labels[None, :]
        out = ~m.any(1)
    return out


def run(size: int, model: str, folder: Path) -> dict:
    det = Detector.load(model, device="cpu")
    screen = det.prescreen
    scenes = make_scenes(folder, size)
    rows = []
    for s in scenes:
        spec = det.spec.replace(**SPEC16, bands=(1, 2, 3)) if s["spec16"] else det.spec
        keep, margin, screen_s = window_stats(det, s["screen_path"], screen, spec)
        t0 = time.perf_counter()
        full = det.predict_scene(s["path"], skip=False)
        t_full = time.perf_counter() - t0
        d = _Decided(det, keep) if s["spec16"] else det
        t0 = time.perf_counter()
        fast = d.predict_scene(s["path"], skip=True)
        t_fast = time.perf_counter() - t0
        gone = lost(full, fast)
        # windows that gave the full pass a detection: the smallest margin among them
        t = det.spec.tile_size
        used = [k for k in margin if any(
            (full.boxes[:, 0] < k[0] + t) & (full.boxes[:, 2] > k[0]) & (full.boxes[:, 1] < k[1] + t)
            & (full.boxes[:, 3] > k[1]))]
        infer_per = full.extra["seconds"]["infer"] / max(full.extra["windows"] - full.extra["skipped"], 1)
        mp = full.width * full.height / 1e6
        rows.append({
            "kind": s["kind"], "windows": full.extra["windows"], "skipped": fast.extra["skipped"],
            "skipped_nodata": fast.extra["skipped_nodata"], "skip_fraction": fast.extra["skip_fraction"],
            "objects_full": len(full), "lost": int(gone.sum()),
            "miss_rate": round(float(gone.mean()), 4) if len(full) else 0.0,
            "min_margin_detection_windows": round(min((margin[k] for k in used), default=float("nan")), 2),
            "prescreen_ms": round(1000 * screen_s, 2), "detector_ms": round(1000 * infer_per, 1),
            "cost_share": round(screen_s / infer_per, 4) if infer_per else None,
            "mp_s_full": round(mp / t_full, 3), "mp_s_skip": round(mp / t_fast, 3),
        })
        print(_line(rows[-1]), flush=True)
    total = sum(r["objects_full"] for r in rows)
    lost_all = sum(r["lost"] for r in rows)
    return {"model": model, "size": size, "prescreen": screen.to_dict(), "cpu_flags": cpu_flags(),
            "threads": os.cpu_count(), "kinds": rows, "objects_full": total, "lost": lost_all,
            "miss_rate": round(lost_all / max(total, 1), 4),
            "worst_kind_miss_rate": max(r["miss_rate"] for r in rows)}


HEAD = (f"{'kind':28s} {'windows':>7s} {'skipped':>8s} {'(nodata)':>8s} {'frac':>6s} {'objects':>7s} "
        f"{'lost':>5s} {'miss':>6s} {'margin':>6s} {'pre ms':>7s} {'det ms':>7s} {'share':>6s} "
        f"{'MP/s full':>9s} {'MP/s skip':>9s}")


def _line(r: dict) -> str:
    return (f"{r['kind']:28s} {r['windows']:7d} {r['skipped']:8d} {r['skipped_nodata']:8d} {r['skip_fraction']:6.3f} "
            f"{r['objects_full']:7d} {r['lost']:5d} {r['miss_rate']:6.3f} {r['min_margin_detection_windows']:6.2f} "
            f"{r['prescreen_ms']:7.2f} {r['detector_ms']:7.1f} {r['cost_share']:6.3f} {r['mp_s_full']:9.3f} "
            f"{r['mp_s_skip']:9.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2048, help="scene side in pixels (default 2048)")
    p.add_argument("--model", default="revet-base:int8")
    p.add_argument("--json", help="also write the figures to this file")
    a = p.parse_args(argv)
    print(HEAD)
    with tempfile.TemporaryDirectory(prefix="revet-prescreen-") as d:
        res = run(a.size, a.model, Path(d))
    print(f"\nall kinds: {res['lost']} of {res['objects_full']} full-pass objects lost "
          f"(miss rate {res['miss_rate']:.4f}; worst kind {res['worst_kind_miss_rate']:.4f}); "
          f"prescreen {json.dumps(res['prescreen'])}")
    print(f"CPU flags: {' '.join(res['cpu_flags']) or '(none of avx2, avx512f, avx512_vnni, avx512_bf16)'}; "
          f"{res['threads']} cores")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
