"""Offline HTML report of changes: one section per changed site, before/after chips side by
side (when the scenes are given) with the boxes drawn, and the change table. Torch-free; no
JavaScript, no CDN: ``index.html`` plus PNG chips in ``chips/``, openable from disk.

Box colours by status: persisted grey, appeared green, disappeared red, changed orange,
uncertain blue. On the before chip the before objects are drawn, on the after chip the after
objects (each in its own image's georeferencing).
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from detector.display import display_rgb
from detector.objects import to_local

STATUS_COLOURS = {"persisted": (170, 170, 170), "appeared": (40, 220, 60), "disappeared": (255, 50, 50),
                  "changed": (255, 150, 0), "uncertain": (60, 140, 255)}
CHIP_PX = 360


def _chip(scene, frame, bounds, boxes, statuses, path: Path, title: str) -> bool:
    """Write a PNG of ``scene`` over ``bounds`` (local metres) with ``boxes`` (local metres)."""
    import rasterio
    from PIL import Image, ImageDraw
    from rasterio.windows import from_bounds

    with rasterio.open(scene) as ds:
        x0, y0, x1, y1 = bounds
        xs, ys = to_local([x0, x1, x1, x0], [y0, y0, y1, y1], frame, ds.crs)
        win = from_bounds(min(xs), min(ys), max(xs), max(ys), ds.transform)
        if win.width < 1 or win.height < 1:
            return False
        scale = min(1.0, CHIP_PX / max(win.width, win.height))
        h, w = max(1, int(round(win.height * scale))), max(1, int(round(win.width * scale)))
        data = ds.read(window=win, out_shape=(ds.count, h, w), boundless=True, fill_value=0)
        valid = ds.dataset_mask(window=win, out_shape=(h, w), boundless=True) > 0
        wt = rasterio.windows.transform(win, ds.transform) @ rasterio.Affine.scale(win.width / w, win.height / h)
        crs = ds.crs
    im = Image.fromarray(display_rgb(np.moveaxis(data, 0, 2), valid))
    d = ImageDraw.Draw(im)
    for b, s in zip(boxes, statuses):
        bx, by = to_local([b[0], b[2]], [b[1], b[3]], frame, crs)
        cols, rows = ~wt @ (np.asarray(bx), np.asarray(by))
        d.rectangle([min(cols), min(rows), max(cols), max(rows)], outline=STATUS_COLOURS.get(s, (255, 255, 255)),
                    width=2)
    d.text((4, 4), title, fill=(255, 255, 255))
    im.save(path)
    return True


def _row(cells) -> str:
    return "<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in cells) + "</tr>"


def write_change_report(ch, out_dir, *, scene_before=None, scene_after=None, max_sites: int = 50) -> Path:
    """Write ``out_dir/index.html`` (+ ``chips/*.png``) for a :class:`detector.changes.Changes`."""
    from detector.outputs import atomic_write_text

    out = Path(out_dir)
    (out / "chips").mkdir(parents=True, exist_ok=True)
    cb, ca = ch.record_classes()  # methods, not this module importing detector.changes (which imports it)
    summaries = [s for s in ch.site_summaries() if s["changed"]][:max_sites]
    sites = {s.site_id: s for s in ch.sites}
    sh = ch.shift
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Revet changes</title><style>",
             "body{font-family:sans-serif;margin:1.5em;max-width:1100px}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}img{margin:4px;border:1px solid #888}"
             ".k{display:inline-block;width:12px;height:12px;margin:0 3px 0 10px}</style></head><body>",
             "<h1>Changes between two dates</h1>",
             f"<p>before: {html.escape(str(ch.before.path))}<br>after: {html.escape(str(ch.after.path))}<br>"
             f"frame {html.escape(ch.before.crs.to_string())}; estimated shift of the after date "
             f"dx={sh.dx:.2f} m, dy={sh.dy:.2f} m from {sh.support} pairs; coverage from "
             f"{html.escape(str(ch.coverage))}</p>",
             "<p>" + ", ".join(f"{k}: {v}" for k, v in ch.counts().items()) + "</p><p>"
             + "".join(f"<span class='k' style='background:rgb{c}'></span>{s}" for s, c in STATUS_COLOURS.items())
             + "</p>",
             f"<h2>{len(summaries)} changed site(s)</h2>"]
    for s in summaries:
        site = sites[s["site_id"]]
        sel = np.flatnonzero(ch.site_of == s["site_id"])
        x0, y0 = site.polygon.min(0)
        x1, y1 = site.polygon.max(0)
        bounds = (x0, y0, x1, y1)
        parts.append(f"<h3>Site {s['site_id']}: {html.escape(s['summary'])}</h3>"
                     f"<p>{s['objects']} objects, {s['area_m2'] / 1e4:.1f} ha</p><div>")
        for tag, scene, objs, idx, dxy in (("before", scene_before, ch.before, ch.ib, (0.0, 0.0)),
                                           ("after", scene_after, ch.after, ch.ia, (sh.dx, sh.dy))):
            if not scene:
                continue
            has = sel[idx[sel] >= 0]
            b = (bounds[0] + dxy[0], bounds[1] + dxy[1], bounds[2] + dxy[0], bounds[3] + dxy[1])
            name = f"chips/site{s['site_id']:04d}_{tag}.png"
            if _chip(scene, ch.before.crs, b, objs.boxes[idx[has]], ch.status[has], out / name, tag):
                parts.append(f"<img src='{name}' alt='{tag}'>")
        parts.append("</div><table><tr><th>status</th><th>class before</th><th>class after</th>"
                     "<th>score before</th><th>score after</th><th>distance m</th><th>reason</th></tr>")
        for r in sel.tolist():
            b, a = ch.ib[r], ch.ia[r]
            fmt = lambda v: None if not np.isfinite(v) else f"{v:.2f}"  # noqa: E731
            parts.append(_row([ch.status[r], cb[r], ca[r],
                               fmt(ch.before.scores[b]) if b >= 0 else None,
                               fmt(ch.after.scores[a]) if a >= 0 else None,
                               fmt(ch.distance_m[r]), ch.reason[r]]))
        parts.append("</table>")
    parts.append("</body></html>")
    return atomic_write_text(out / "index.html", "\n".join(parts))
