"""Peak memory and time of chipping a large GeoTIFF (``detector.datasets.chip``).

Writes a ``SIZE x SIZE`` 3-band uint8 GeoTIFF (UTM, tiled 512, deflate, nodata 0 on a left
border strip) block by block, never holding it in memory, plus ``BOXES`` random box labels as
GeoJSON in EPSG:4326; then chips it in a fresh process and reports that process's peak RSS
(``resource.getrusage``) and wall time. The issue's bound: under 1 GB for 20000 x 20000.

    python benchmarks/bench_chip.py --size 20000 --boxes 5000 --work /tmp/bench_chip
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CRS = "EPSG:32637"
GSD = 0.5


def make_raster(path: Path, size: int, block: int = 512, border: int = 1000) -> float:
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    t0 = time.perf_counter()
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=CRS,
                   transform=Affine(GSD, 0, 600000, 0, -GSD, 4300000), nodata=0, tiled=True,
                   blockxsize=block, blockysize=block, compress="deflate", photometric="RGB",
                   BIGTIFF="IF_SAFER")
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, size, block):
            for x in range(0, size, block):
                h, w = min(block, size - y), min(block, size - x)
                yy, xx = np.mgrid[y:y + h, x:x + w]
                base = 90 + 60 * np.sin(xx / 97.0) * np.cos(yy / 131.0)
                data = np.stack([base, base * 0.9 + 10, base * 0.8 + 20]).astype(np.float32)
                data += rng.integers(0, 4, (3, h, w))
                data = np.clip(data, 1, 255).astype(np.uint8)
                if x < border:
                    data[:, :, :max(0, min(w, border - x))] = 0
                dst.write(data, window=Window(x, y, w, h))
    return time.perf_counter() - t0


def make_labels(path: Path, size: int, n: int) -> None:
    from affine import Affine
    from rasterio.warp import transform as warp

    rng = np.random.default_rng(1)
    wh = rng.uniform(8, 80, (n, 2))
    xy = rng.uniform(0, size - 80, (n, 2))
    tr = Affine(GSD, 0, 600000, 0, -GSD, 4300000)
    feats = []
    xs, ys = [], []
    for (x, y), (w, h) in zip(xy, wh):
        for px, py in ((x, y), (x, y + h), (x + w, y + h), (x + w, y), (x, y)):
            mx, my = tr @ (px, py)
            xs.append(mx)
            ys.append(my)
    lon, lat = warp(CRS, "EPSG:4326", xs, ys)
    for i in range(n):
        ring = [[lon[5 * i + k], lat[5 * i + k]] for k in range(5)]
        feats.append({"type": "Feature", "id": i, "properties": {"class": ["bunker", "revetment", "shelter"][i % 3]},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


def chip_stage(raster: str, labels: str, out: str, tile: int, overlap: int, keep_empty: float) -> None:
    from detector.datasets.chip import chip

    t0 = time.perf_counter()
    s = chip([raster], labels, out, tile_size=tile, overlap=overlap, keep_empty=keep_empty)
    dt = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": round(dt, 1), "peak_rss_mb": round(peak_mb, 1), "tiles": s["tiles"],
                      "empty_tiles": s["empty_tiles"], "nodata_tiles_skipped": s["nodata_tiles_skipped"],
                      "objects": s["objects"]}))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=20000)
    p.add_argument("--boxes", type=int, default=5000)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--keep-empty", type=float, default=0.1)
    p.add_argument("--work", default="/tmp/bench_chip")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    work = Path(a.work)
    if a.stage == "chip":
        chip_stage(str(work / "big.tif"), str(work / "labels.geojson"), str(work / "out"), a.tile,
                   a.overlap, a.keep_empty)
        return {}
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    make_s = make_raster(work / "big.tif", a.size)
    make_labels(work / "labels.geojson", a.size, a.boxes)
    file_mb = (work / "big.tif").stat().st_size / 2**20
    cmd = [sys.executable, __file__, "--stage", "chip", "--work", str(work), "--tile", str(a.tile),
           "--overlap", str(a.overlap), "--keep-empty", str(a.keep_empty)]
    res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    res.update({"raster": f"{a.size}x{a.size}x3 uint8", "raw_mb": round(a.size * a.size * 3 / 2**20),
                "file_mb": round(file_mb), "make_seconds": round(make_s, 1), "boxes": a.boxes,
                "tile": a.tile, "overlap": a.overlap, "under_1gb": res["peak_rss_mb"] < 1024})
    print(json.dumps(res, indent=2))
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
