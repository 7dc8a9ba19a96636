"""Throughput of the synthetic generator: 512 x 512 tiles per second, rendered and written.

Runs ``generate_dataset`` (GeoTIFF + COCO, no scene, no preview) into a temporary folder with
``workers=1`` and ``workers=2``, a few repeats each, and prints the median tiles/s.

    python benchmarks/bench_synth.py [--tiles 24] [--repeats 3] [--gsd 0.5]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from detector.datasets.synth import generate_dataset


def tiles_per_second(n_tiles: int, workers: int, gsd: float, seed: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_dataset(tmp, n_train=n_tiles, n_val=0, n_test=0, tile_size=512, scene_size=0,
                         gsd=gsd, seed=seed, workers=workers)
        return n_tiles / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gsd", type=float, default=0.5)
    a = ap.parse_args(argv)
    result = {}
    for workers in (1, 2):
        runs = [tiles_per_second(a.tiles, workers, a.gsd, seed=r) for r in range(a.repeats)]
        result[workers] = statistics.median(runs)
        print(f"workers={workers}: median {result[workers]:.2f} tiles/s "
              f"(runs: {', '.join(f'{r:.2f}' for r in runs)}; {a.tiles} tiles of 512 px, "
              f"gsd {a.gsd} m)")
    return result


if __name__ == "__main__":
    main()
