"""An evaluation report to look at: one self-contained HTML page plus PNG figures. Torch-free.

``write_report(run, DIR)`` writes ``DIR/index.html`` (inline CSS, no scripts, no fonts, images
as relative PNG files in ``DIR``, so it opens offline), ``pr_curves.png``, ``confusion.png``,
``sweep.png``, crops under ``DIR/crops/`` and every false positive and miss as CSV
(``false_positives.csv``, ``misses.csv``) with pixel and map coordinates. Figures are drawn
by :mod:`detector.plots` (Pillow, a base dependency; no plotting library needed).

Gallery rules, at the operating threshold and IoU 0.5: a *false positive* is a detection with
``score >= threshold`` that matches no ground truth of its class (a class confusion counts, and
says what the object really is); a *miss* is a ground-truth object that no detection of its
class above the threshold matches (the caption gives the score at which it would have been
found, if any, and what it was taken for, if confused). Galleries show the highest-scoring
false positives and the largest misses first, up to ``max_crops`` each; the CSV files list all.
"""
from __future__ import annotations

import csv
import html
import io
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from rasterio.windows import Window

from detector import raster
from detector.display import DET_COLOUR, GT_COLOUR, display_rgb
from detector.metrics import confusions, format_value, match_images, operating_rule
from detector.plots import plot_confusion, plot_pr_curves, plot_sweep
from detector.spec import above_threshold

SECTIONS = [("summary", "Summary"), ("per-class", "Per-class metrics"),
            ("pr-curves", "Precision-recall curves"), ("confusion", "Confusion matrix"),
            ("sweep", "Threshold sweep"), ("false-positives", "False positives"),
            ("misses", "Misses"), ("method", "How these numbers are computed")]
SCENE_SECTIONS = [("boundary", "Window boundaries")]
CROP_PX = 192


# -- galleries -------------------------------------------------------------------------------

def gallery_items(run) -> tuple[list[dict], list[dict]]:
    """(false positives, misses) of ``run`` at its threshold, as dicts (module rules), sorted
    for display: false positives by score, highest first; misses by box area, largest first."""
    classes, thr = run.classes, run.thresholds  # per class, as the operating point was read
    fps, misses = [], []
    for i, (im, m) in enumerate(zip(run.images, match_images(run.images, len(classes), 0.5, run.max_dets))):
        det_other, gt_other = confusions(im, m, thr)
        scores = np.asarray(im.scores)
        kept = above_threshold(scores, im.labels, thr)
        for k in np.flatnonzero(kept & (m.det_gt == -1)):
            note = "false alarm" if det_other[k] < 0 else \
                f"is a {classes[int(im.gt_labels[det_other[k]])]} (class confusion)"
            fps.append(_item(run, i, "false positive", im.boxes[k], classes[int(im.labels[k])],
                             float(scores[k]), note))
        for g in range(len(im.gt_labels)):
            d = m.gt_det[g]
            if d >= 0 and kept[d]:
                continue
            notes = []
            if d >= 0:
                notes.append(f"found only at score {scores[d]:.3f}")
            if gt_other[g] >= 0:
                o = gt_other[g]
                notes.append(f"detected as {classes[int(im.labels[o])]} ({scores[o]:.3f})")
            misses.append(_item(run, i, "miss", im.gt_boxes[g], classes[int(im.gt_labels[g])],
                                float(scores[d]) if d >= 0 else None, "; ".join(notes) or "no detection",
                                gt_index=g))
    fps.sort(key=lambda r: -r["score"])
    misses.sort(key=lambda r: -(r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]))
    return fps, misses


def _item(run, i: int, kind: str, box, cls: str, score, note: str, gt_index: int | None = None) -> dict:
    src = run.sources[i]
    box = [float(v) for v in box]
    item = {"kind": kind, "class": cls, "score": score, "note": note, "image": str(src.path),
            "image_index": i, "box": box, "map_x": None, "map_y": None, "crs": None, "lon": None, "lat": None}
    if run.mode == "scene" and gt_index is not None and "label_ids" in run.extra:
        item["label_id"] = run.extra["label_ids"][gt_index]
        item["crosses_window"] = bool(run.extra["crossing"][gt_index])
    if src.crs is not None and src.transform is not None:
        x, y = src.transform @ ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        item.update(map_x=x, map_y=y, crs=src.crs.to_string())
        if src.crs.is_geographic:
            item.update(lon=x, lat=y)
        else:
            from rasterio.warp import transform as warp

            lon, lat = warp(src.crs, "EPSG:4326", [x], [y])
            item.update(lon=lon[0], lat=lat[0])
    return item


def render_crop(run, item: dict, path: Path) -> Path:
    """A square crop around ``item``'s box: the box thick (green: a missed object; magenta: a
    false positive), other ground truth thin green, other detections above the threshold thin
    magenta."""
    x1, y1, x2, y2 = item["box"]
    side = max(x2 - x1, y2 - y1)
    side = max(48.0, side + 2 * max(16.0, 0.6 * side))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    c0, r0 = int(math.floor(cx - side / 2)), int(math.floor(cy - side / 2))
    n = int(math.ceil(side))
    with raster.open_raster(item["image"]) as ds:
        tile, valid = raster.read_window(ds, Window(c0, r0, n, n), list(run.spec.bands))
    img = Image.fromarray(display_rgb(tile, valid)).resize((CROP_PX, CROP_PX), Image.BILINEAR)
    s = CROP_PX / n
    d = ImageDraw.Draw(img)
    im = run.images[item["image_index"]]

    def rect(b, colour, w):
        d.rectangle([(b[0] - c0) * s, (b[1] - r0) * s, (b[2] - c0) * s - 1, (b[3] - r0) * s - 1],
                    outline=colour, width=w)

    near = lambda b: b[2] > c0 and b[0] < c0 + n and b[3] > r0 and b[1] < r0 + n  # noqa: E731
    for b in np.asarray(im.gt_boxes):
        if near(b):
            rect(b, GT_COLOUR, 1)
    kept = above_threshold(im.scores, im.labels, run.thresholds)
    for b, k in zip(np.asarray(im.boxes), kept):
        if k and near(b):
            rect(b, DET_COLOUR, 1)
    rect(item["box"], GT_COLOUR if item["kind"] == "miss" else DET_COLOUR, 3)
    img.save(path)
    return path


def _write_csv(path: Path, items: list[dict]) -> None:
    cols = ["kind", "class", "score", "note", "image", "x1", "y1", "x2", "y2", "map_x", "map_y", "crs",
            "lon", "lat", "label_id", "crosses_window"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for it in items:
        row = {**it, **dict(zip(["x1", "y1", "x2", "y2"], [round(v, 2) for v in it["box"]]))}
        w.writerow(["" if row.get(c) is None else row.get(c) for c in cols])
    path.write_text(buf.getvalue())


# -- HTML ------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1160px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
.meta{color:#555;font-size:.9em} .cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:140px;background:#fafafa}
.card .v{font-size:1.5em;font-weight:600} .card .k{color:#555;font-size:.85em}
table{border-collapse:collapse;font-size:.92em} th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f0f0f0} td:first-child,th:first-child{text-align:left}
.pos{color:#1a7f37} .neg{color:#b42318}
.gallery{display:flex;flex-wrap:wrap;gap:10px} figure{margin:0;width:196px;font-size:.78em;color:#333}
figure img{width:192px;height:192px;border:2px solid #ccc;image-rendering:auto}
figcaption{word-wrap:break-word} .warn{background:#fff4e5;border:1px solid #f5a623;padding:6px 10px}
.key span{display:inline-block;width:14px;height:10px;margin:0 4px 0 10px;border:2px solid}
"""


def _f(v, fmt=".3f") -> str:
    return format_value(v, fmt)


def _e(s) -> str:
    return html.escape(str(s))


def _card(k: str, v: str) -> str:
    return f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>'


def _caption(it: dict) -> str:
    x1, y1, x2, y2 = it["box"]
    lines = [f"<b>{_e(it['class'])}</b> " + (f"score {it['score']:.3f}" if it["score"] is not None else "")
             + f" &middot; {_e(it['note'])}",
             f"px ({x1:.0f}, {y1:.0f})&ndash;({x2:.0f}, {y2:.0f})"]
    if it["map_x"] is not None:
        lines.append(f"map {it['map_x']:.2f}, {it['map_y']:.2f} ({_e(it['crs'])})")
        lines.append(f"lon/lat {it['lon']:.6f}, {it['lat']:.6f}")
    if it.get("crosses_window"):
        lines.append("crosses a window boundary")
    lines.append(f"<span class=meta>{_e(Path(it['image']).name)}</span>")
    return "<br>".join(lines)


def _gallery(run, items: list[dict], out: Path, prefix: str, max_crops: int) -> str:
    if not items:
        return "<p>None at this threshold.</p>"
    figs = []
    for k, it in enumerate(items[:max_crops]):
        name = f"crops/{prefix}_{k:04d}.png"
        render_crop(run, it, out / name)
        figs.append(f'<figure><img src="{name}" alt="{_e(prefix)} {k}"><figcaption>{_caption(it)}'
                    f'</figcaption></figure>')
    shown = f"showing {min(len(items), max_crops)} of {len(items)}"
    return f"<p>{shown} (all in the CSV file).</p><div class=gallery>{''.join(figs)}</div>"


def write_report(run, out_dir: str | os.PathLike, *, max_crops: int = 48) -> Path:
    """Write the report of one :class:`detector.eval_run.EvalRun` to ``out_dir``; returns the
    path of ``index.html``."""
    out = Path(out_dir)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    m = run.metrics
    plot_pr_curves(m, out / "pr_curves.png")
    plot_confusion(m, out / "confusion.png")
    plot_sweep(m, out / "sweep.png")
    fps, misses = gallery_items(run)
    _write_csv(out / "false_positives.csv", fps)
    _write_csv(out / "misses.csv", misses)
    key = (f'<p class="key meta">boxes: <span style="border-color:rgb{DET_COLOUR}"></span>detection '
           f'(score &ge; threshold) <span style="border-color:rgb{GT_COLOUR}"></span>ground truth; '
           "the thick box is the item.</p>")
    parts = [_header(run), _section("summary", _summary_cards(m)), _section("per-class", _per_class_table(m)),
             *_figure_sections(m), *([_boundary_section(m["scene"])] if m.get("scene") else []),
             _section("false-positives", key + _gallery(run, fps, out, "fp", max_crops)),
             _section("misses", key + _gallery(run, misses, out, "miss", max_crops)),
             _section("method", _method(run)), "</body></html>"]
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _header(run) -> str:
    """The page head, title, what was evaluated and the scene's warnings."""
    m, sc = run.metrics, run.metrics.get("scene")
    name = _e(Path(str(m.get("model"))).name)
    html_ = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Revet evaluation: {name}</title>"
             f"<style>{CSS}</style></head><body>\n<h1>Revet evaluation &middot; {name}</h1>\n"
             f"<p class=meta>model {_e(m.get('model'))}<br>{'scene' if sc else 'tiles'} {_e(m.get('data'))}"
             + (f"<br>labels {_e(sc['labels'])} (attribute {_e(sc['class_field'])!s})" if sc else "")
             + f"<br>classes {_e(', '.join(run.classes))}; tile {run.spec.tile_size} px, overlap "
               f"{run.spec.overlap} px; operating point {_e(operating_rule(m))}; written "
               f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>")
    return html_ + "".join(f"\n<p class=warn>{_e(w)}</p>" for w in (sc or {}).get("warnings", []))


def _summary_cards(m: dict) -> str:
    """The headline numbers as cards (scene metrics too for a scene evaluation)."""
    sc, op, best = m.get("scene"), m["operating"], m["sweep"]["best"]
    cards = [_card("mAP@0.5", _f(m["mAP50"])), _card("mAP@0.5:0.95", _f(m["mAP50_95"])),
             _card(f"precision at {m['threshold']:.2f}", _f(op["precision"])),
             _card(f"recall at {m['threshold']:.2f}", _f(op["recall"])),
             _card(f"F1 at {m['threshold']:.2f}", _f(op["f1"])),
             _card("best F1 (threshold)", f"{_f(best['f1'])} ({_f(best['threshold'])})"),
             _card("found / labelled", f"{op['tp']} / {op['tp'] + op['fn']}"),
             _card("false positives", str(op["fp"]))]
    if sc:
        cards += [_card("false positives per km²", _f(sc["fp_per_km2"], ".2f")),
                  _card("area with data (km²)", _f(sc["valid_km2"], ".3f")),
                  _card("recall, labels crossing windows", _f(sc["boundary"]["crossing"]["recall"])),
                  _card("recall, labels inside a window", _f(sc["boundary"]["inside"]["recall"]))]
    else:
        cards.append(_card("images", str(m["num_images"])))
    return f"<div class=cards>{''.join(cards)}</div>"


def _per_class_table(m: dict) -> str:
    sc = m.get("scene")
    head = ["class", "labelled", "AP@0.5", "AP@0.5:0.95", "recall (all scores)", "precision", "recall",
            "F1", "TP", "FP", "FN"] + (["FP per km²", "crossing", "recall crossing", "recall inside"] if sc else [])
    rows = []
    for name, c in m["per_class"].items():
        cells = [_e(name), c["num_gt"], _f(c["AP50"]), _f(c["AP"]), _f(c["recall50"]), _f(c["precision"]),
                 _f(c["recall"]), _f(c["f1"]), c["tp"], c["fp"], c["fn"]]
        if sc:
            cells += [_f(c["fp_per_km2"], ".2f"), c["num_crossing"], _f(c["recall_crossing"]),
                      _f(c["recall_inside"])]
        rows.append("<tr>" + "".join(f"<td>{v}</td>" for v in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
            f"<p class=meta>precision, recall, F1, TP, FP, FN at {_e(operating_rule(m))}, IoU 0.5; "
            "AP and &lsquo;recall (all scores)&rsquo; from every detection down to score 0.001.</p>")


def _figure_sections(m: dict) -> list[str]:
    """The PR curves, confusion matrix and threshold sweep sections (figures by :mod:`detector.plots`)."""
    op, best = m["operating"], m["sweep"]["best"]
    return [_section("pr-curves", '<img src="pr_curves.png" alt="precision-recall curves">'),
            _section("confusion", '<img src="confusion.png" alt="confusion matrix"><p class=meta>Rows: '
                     "truth; columns: prediction. Row &lsquo;background&rsquo;: detections on no object "
                     "(false alarms); column &lsquo;background&rsquo;: objects not detected (misses).</p>"),
            _section("sweep", '<img src="sweep.png" alt="threshold sweep">'
                     f"<p>Best F1 {_f(best['f1'])} at score &ge; {_f(best['threshold'])} (precision "
                     f"{_f(best['precision'])}, recall {_f(best['recall'])}); at the operating threshold "
                     f"{m['threshold']:.3f}: F1 {_f(op['f1'])}.</p>")]


def _boundary_section(sc: dict) -> str:
    """Recall of labels crossing a window boundary against those inside one window."""
    bd = sc["boundary"]
    return _section("boundary", (
        "<table><tr><th>labels</th><th>count</th><th>found</th><th>recall</th></tr>"
        f"<tr><td>crossing a window boundary</td><td>{bd['crossing']['num_gt']}</td>"
        f"<td>{bd['crossing']['found']}</td><td>{_f(bd['crossing']['recall'])}</td></tr>"
        f"<tr><td>inside one window</td><td>{bd['inside']['num_gt']}</td><td>{bd['inside']['found']}</td>"
        f"<td>{_f(bd['inside']['recall'])}</td></tr></table>"
        f"<p class=meta>Window grid: {sc['windows']['count']} windows of {sc['windows']['tile']} px, "
        f"overlap {sc['windows']['overlap']} px. A label crosses when no single window contains its "
        "whole box: the model never sees it whole and the merge step must join its pieces.</p>"))


def _section(sid: str, body: str) -> str:
    title = dict(SECTIONS + SCENE_SECTIONS)[sid]
    return f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>'


def _method(run) -> str:
    items = [
        "Every image is scored through the same runner as <code>revet predict</code>; detections down "
        "to score 0.001 are kept for AP and the PR curves (COCO practice).",
        "AP: COCO protocol (greedy matching by score, 101-point interpolated precision); "
        "AP@0.5:0.95 averages IoU 0.50 to 0.95. Classes without ground truth are left out of means.",
        "Precision, recall, F1 and the confusion matrix count detections with score &ge; the operating "
        "threshold, matched at IoU 0.5 exactly as for AP@0.5. The sweep pools all classes.",
    ]
    if run.mode == "scene":
        items += [
            "Scene: detections merged across window overlaps by the runner; labels reprojected to the "
            "scene CRS and boxed in its pixel grid; no cap on detections per scene. Labels outside the "
            f"scene ({run.metrics['scene']['labels_outside']}) or centred on nodata "
            f"({run.metrics['scene']['labels_on_nodata']}) are left out.",
            "False positives per km² divide the false positives by the area with valid data.",
        ]
    else:
        items.append("Tiles: at most 100 detections per image and class are evaluated (COCO maxDets).")
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def write_comparison_report(runs: list, comparison: dict, out_dir: str | os.PathLike) -> Path:
    """Reports of two runs in ``out_dir/a`` and ``out_dir/b`` and ``out_dir/index.html`` with the
    metrics side by side."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for tag, run in zip("ab", runs):
        write_report(run, out / tag)
    rows = []
    for name, r in comparison.items():
        cls = "pos" if r["diff"] > 0 else "neg" if r["diff"] < 0 else ""
        rows.append(f"<tr><td>{_e(name)}</td><td>{_f(r['a'], '.4f')}</td><td>{_f(r['b'], '.4f')}</td>"
                    f'<td class="{cls}">{_f(r["diff"], "+.4f")}</td></tr>')
    a, b = (r.metrics for r in runs)
    body = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Revet comparison</title>"
            f"<style>{CSS}</style></head><body><h1>Revet comparison</h1>"
            f"<p class=meta>A: {_e(a.get('model'))} (<a href=\"a/index.html\">report</a>)<br>"
            f"B: {_e(b.get('model'))} (<a href=\"b/index.html\">report</a>)<br>data {_e(a.get('data'))}</p>"
            f'<section id="comparison"><h2>Side by side</h2><table><tr><th>metric</th><th>A</th><th>B</th>'
            f"<th>B &minus; A</th></tr>{''.join(rows)}</table><p class=meta>fp and fn are counts; a higher "
            "fp, fn or fp_per_km2 is worse.</p></section></body></html>")
    path = out / "index.html"
    path.write_text(body, encoding="utf-8")
    return path
