"""Review page on a large scene, measured in the browser (headless Chromium, Playwright).

    python benchmarks/bench_review.py [--size 16384] [--candidates 5000] [--out /tmp/revet-bench-review]

1. writes a SIZE x SIZE 3-band uint8 GeoTIFF (smooth numpy noise, strip by strip) and
   CANDIDATES random detections;
2. ``build_review`` (the pyramid: seconds reported, not part of "open");
3. serves it (``revet review --serve`` in a subprocess) and opens the page: time from
   navigation to the page ready, and to every tile of the first view loaded;
4. presses ``n`` (next candidate) 200 times: wall time per press through Playwright, and the
   page's own handler + render time (``revet.stats.lastKeyMs``); then 1000 ``n`` key events
   dispatched inside the page (no Playwright round trip).

Needs playwright and a chromium executable (``REVET_CHROMIUM`` or ``chromium`` on PATH).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def cpu_flags() -> str:
    try:
        line = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    flags = set(line.split(":", 1)[1].split())
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return ", ".join(have) or "no avx2"


def write_scene(path: Path, size: int) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    strip = 1024
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32637", transform=from_origin(500000, 4000000, 0.5, 0.5),
                       tiled=True, blockxsize=512, blockysize=512, photometric="RGB") as ds:
        xx = np.arange(size, dtype=np.float32)
        for y0 in range(0, size, strip):
            yy = np.arange(y0, min(size, y0 + strip), dtype=np.float32)[:, None]
            base = 110 + 40 * np.sin(xx / 700) * np.cos(yy / 500) + 20 * np.sin((xx + yy) / 90)
            for b in range(3):
                band = base + 10 * b + rng.normal(0, 6, (len(yy), size)).astype(np.float32)
                ds.write(np.clip(band, 0, 255).astype(np.uint8), b + 1,
                         window=Window(0, y0, size, len(yy)))


def write_detections(path: Path, size: int, n: int) -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, size - 80, (n, 2))
    wh = rng.uniform(15, 70, (n, 2))
    classes = ["bunker", "revetment", "shelter"]
    feats = [{"type": "Feature", "geometry": None,
              "properties": {"class": classes[i % 3], "score": float(rng.uniform(0.2, 1.0)),
                             "pixel_box": [float(x), float(y), float(x + w), float(y + h)]}}
             for i, ((x, y), (w, h)) in enumerate(zip(xy, wh))]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(v, q):
    return float(np.percentile(np.asarray(v), q))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--candidates", type=int, default=5000)
    ap.add_argument("--out", default="/tmp/revet-bench-review")
    ap.add_argument("--presses", type=int, default=200)
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from detector.review import build_review

    chromium = os.environ.get("REVET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"cpu: {os.cpu_count()} cores, flags: {cpu_flags()}")
    scene = out / f"scene{a.size}.tif"
    if not scene.exists():
        t = time.perf_counter()
        write_scene(scene, a.size)
        print(f"scene {a.size}x{a.size}x3 uint8 written in {time.perf_counter() - t:.1f} s")
    dets = out / f"dets{a.candidates}.geojson"
    write_detections(dets, a.size, a.candidates)
    rv = out / "review"
    if rv.exists():
        shutil.rmtree(rv)
    s = build_review(scene, dets, rv)
    print(f"build_review: {s['candidates']} candidates, {s['levels']} levels, pyramid {s['pyramid_seconds']:.1f} s, "
          f"total {s['seconds']:.1f} s")
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-c", f"from detector.review import serve; serve({str(rv)!r}, {port})"],
                           stdout=subprocess.PIPE, text=True)
    try:
        srv.stdout.readline()  # the URL line: listening
        url = f"http://127.0.0.1:{port}/"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            external = []
            page.on("request", lambda r: external.append(r.url) if not re.match(r"https?://127\.0\.0\.1[:/]", r.url) else None)
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_function("window.revet && window.revet.ready")
            t_ready = time.perf_counter() - t0
            page.wait_for_load_state("networkidle")
            t_tiles = time.perf_counter() - t0
            nav = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0].toJSON())")
            dom = json.loads(nav)
            walls, inpage = [], []
            for _ in range(a.presses):
                t = time.perf_counter()
                page.keyboard.press("n")
                walls.append((time.perf_counter() - t) * 1000)
                inpage.append(page.evaluate("revet.stats.lastKeyMs"))
            burst = page.evaluate("""() => { const out = [];
                for (let i = 0; i < 1000; i++) { const t = performance.now();
                  document.dispatchEvent(new KeyboardEvent('keydown', {key: i % 2 ? 'n' : 'p', bubbles: true}));
                  out.push(performance.now() - t); } return out; }""")
            browser.close()
    finally:
        srv.terminate()
        srv.wait(timeout=10)
    res = {"scene_px": a.size, "candidates": a.candidates, "pyramid_s": s["pyramid_seconds"],
           "open_ready_s": round(t_ready, 3), "open_tiles_loaded_s": round(t_tiles, 3),
           "dom_content_loaded_ms": round(dom.get("domContentLoadedEventEnd", 0), 1),
           "next_press_wall_ms_median": round(pct(walls, 50), 2), "next_press_wall_ms_p95": round(pct(walls, 95), 2),
           "next_handler_render_ms_median": round(pct(inpage, 50), 2), "next_handler_render_ms_p95": round(pct(inpage, 95), 2),
           "next_dispatch_ms_median": round(pct(burst, 50), 2), "next_dispatch_ms_p95": round(pct(burst, 95), 2),
           "external_requests": len(external), "cpu_flags": cpu_flags()}
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
