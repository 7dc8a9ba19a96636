"""Charts drawn with Pillow (a base dependency, no plotting library): the one home of every
figure Revet draws from numbers. Torch-free.

- :class:`Chart`: a line chart on the unit square (x and y in [0, 1]; PR curves, sweeps);
- :class:`Axes`: a line chart with data ranges, nice ticks, dashes, markers, epoch marks;
- :func:`plot_pr_curves`, :func:`plot_sweep`, :func:`plot_confusion`: the evaluation figures
  of a metrics dict (:mod:`detector.metrics`), used by ``revet evaluate --report``
  (:mod:`detector.report`) and the training run report (:mod:`detector.train.run_report`);
- :func:`plot_training_curves`: ``curves.png`` of a training run's logged series.

Classes are drawn in their map colours (:func:`detector.display.class_colour`); other series
(precision, recall, losses) in ``SERIES_COLOURS``. Image coordinates in pixels, y down.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from detector.display import class_colour

# colours of series that are not classes (tab10)
SERIES_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                  (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font, fixed size
        return ImageFont.load_default()


class Chart:
    """A unit-square line chart (x and y in [0, 1]) drawn with Pillow."""

    def __init__(self, title: str, xlabel: str, ylabel: str, size=(900, 460), legend_w: int = 260) -> None:
        self.img = Image.new("RGB", size, "white")
        self.d = ImageDraw.Draw(self.img)
        # the legend sits right of the axes, never over a curve
        self.l, self.t, self.r, self.b = 64, 40, size[0] - legend_w - 20, size[1] - 56
        self.legend: list[tuple[str, tuple, bool]] = []
        f, fs = font(16), font(13)
        self.d.text(((self.l + self.r) / 2, 10), title, fill="black", font=f, anchor="mt")
        for i in range(6):
            v = i / 5
            x, y = self.px(v, 0)[0], self.px(0, v)[1]
            self.d.line([(x, self.t), (x, self.b)], fill=(225, 225, 225))
            self.d.line([(self.l, y), (self.r, y)], fill=(225, 225, 225))
            self.d.text((x, self.b + 6), f"{v:.1f}", fill="black", font=fs, anchor="mt")
            self.d.text((self.l - 6, y), f"{v:.1f}", fill="black", font=fs, anchor="rm")
        self.d.rectangle([self.l, self.t, self.r, self.b], outline="black")
        self.d.text(((self.l + self.r) / 2, size[1] - 8), xlabel, fill="black", font=fs, anchor="mb")
        label = Image.new("RGB", (200, 18), "white")
        ImageDraw.Draw(label).text((100, 9), ylabel, fill="black", font=fs, anchor="mm")
        label = label.rotate(90, expand=True)
        self.img.paste(label, (4, (self.t + self.b) // 2 - 100))

    def px(self, x: float, y: float) -> tuple[float, float]:
        return (self.l + x * (self.r - self.l), self.b - y * (self.b - self.t))

    def line(self, xs, ys, colour, label: str | None = None, width: int = 2, dashed: bool = False) -> None:
        pts = [self.px(x, y) for x, y in zip(xs, ys) if x == x and y == y]  # skip NaN
        if dashed:
            for a, b in zip(pts[::2], pts[1::2]):
                self.d.line([a, b], fill=colour, width=width)
        elif len(pts) > 1:
            self.d.line(pts, fill=colour, width=width, joint="curve")
        if label:
            self.legend.append((label, colour, dashed))

    def vline(self, x: float, colour, label: str | None = None) -> None:
        y = np.linspace(0, 1, 41)
        self.line(np.full_like(y, x), y, colour, label, width=2, dashed=True)

    def draw_legend(self, row: int = 20, dash: tuple[int, int] = (4, 4)) -> None:
        """The legend right of the axes, one ``row``-px line per entry (``dash``: on, off px for
        dashed entries); entries past the image's bottom become "... and N more"."""
        fs = font(13)
        x0, y0 = self.r + 20, self.t + 4
        fits = max(1, int(self.img.height - 10 - y0) // row)
        items = self.legend
        if len(items) > fits:  # many classes: the rest are still drawn, only unnamed
            items = items[:fits - 1]
            self.d.text((x0, y0 + row * len(items) + 8), f"... and {len(self.legend) - len(items)} more",
                        fill=(90, 90, 90), font=fs, anchor="lm")
        on, off = dash
        for i, (text, colour, dashed) in enumerate(items):
            y = y0 + row * i + 8
            if dashed:
                for k in range(0, 28, on + off):
                    self.d.line([(x0 + k, y), (x0 + k + on, y)], fill=colour, width=3)
            else:
                self.d.line([(x0, y), (x0 + 28, y)], fill=colour, width=3)
            self.d.text((x0 + 36, y), text, fill="black", font=fs, anchor="lm")

    def save(self, path: Path) -> Path:
        self.draw_legend()
        self.img.save(path)
        return path


def plot_pr_curves(m: dict, path: Path) -> Path:
    p = Chart("Precision-recall at IoU 0.5 (COCO 101-point interpolation)", "recall", "precision")
    rec = m["pr_curves"]["recall_points"]
    for k, (name, prec) in enumerate(m["pr_curves"]["precision"].items()):
        if prec:
            ap = m["per_class"][name]["AP50"]
            p.line(rec, prec, class_colour(k), f"{name}  AP@0.5 {ap:.3f}")  # the map's class colour
    return p.save(path)


def plot_sweep(m: dict, path: Path) -> Path:
    sw = m["sweep"]
    p = Chart("Threshold sweep (all classes pooled)", "score threshold", "value")
    p.line(sw["thresholds"], sw["precision"], SERIES_COLOURS[0], "precision")
    p.line(sw["thresholds"], sw["recall"], SERIES_COLOURS[1], "recall")
    p.line(sw["thresholds"], sw["f1"], SERIES_COLOURS[2], "F1")
    p.vline(m["threshold"], (90, 90, 90), f"operating threshold {m['threshold']:.3f}")
    b = sw["best"]["threshold"]
    if b == b:
        p.vline(b, SERIES_COLOURS[3], f"best F1 {sw['best']['f1']:.3f} at {b:.3f}")
    return p.save(path)


def plot_confusion(m: dict, path: Path) -> Path:
    labels = m["confusion"]["labels"]
    cm = np.asarray(m["confusion"]["matrix"], np.float64)
    n = len(labels)
    cell, left, top = 92, 130, 90
    img = Image.new("RGB", (left + cell * n + 30, top + cell * n + 40), "white")
    d = ImageDraw.Draw(img)
    f, fs = font(16), font(13)
    d.text((img.width / 2, 10), f"Confusion matrix at score >= {m['threshold']:.3f}, IoU 0.5", fill="black",
           font=f, anchor="mt")
    d.text((left + cell * n / 2, 36), "prediction", fill="black", font=fs, anchor="mt")
    rows = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    frac[-1] = cm[-1] / max(cm[-1].sum(), 1)
    for j, name in enumerate(labels):
        d.text((left + cell * j + cell / 2, top - 8), name, fill="black", font=fs, anchor="mb")
    for i, name in enumerate(labels):
        d.text((left - 8, top + cell * i + cell / 2), name, fill="black", font=fs, anchor="rm")
        for j in range(n):
            x, y = left + cell * j, top + cell * i
            if i == n - 1 and j == n - 1:
                d.rectangle([x, y, x + cell, y + cell], fill=(240, 240, 240), outline=(180, 180, 180))
                d.text((x + cell / 2, y + cell / 2), "-", fill="grey", font=f, anchor="mm")
                continue
            v = frac[i, j]
            good = i == j
            base = np.array((44, 160, 44) if good else (214, 39, 40), float)
            colour = tuple(int(c) for c in 255 - (255 - base) * min(v, 1.0) * 0.85)
            d.rectangle([x, y, x + cell, y + cell], fill=colour, outline=(180, 180, 180))
            d.text((x + cell / 2, y + cell / 2), f"{int(cm[i, j])}", fill="black", font=f, anchor="mm")
    label = Image.new("RGB", (cell * n, 18), "white")
    ImageDraw.Draw(label).text((cell * n / 2, 9), "truth", fill="black", font=fs, anchor="mm")
    img.paste(label.rotate(90, expand=True), (8, top))
    img.save(path)
    return path


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def nice_max(v: float) -> float:
    """The first 'nice' tick at or above ``v`` (> 0), for the top of an axis."""
    if not v > 0:
        return 1.0
    ticks = nice_ticks(0.0, v)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else v
    return ticks[-1] if ticks[-1] >= v - 1e-12 else ticks[-1] + step


def tick_text(v: float, step: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or step < 1e-4:
        return f"{v:.1e}"
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{v:.{decimals}f}"


class Axes(Chart):
    """:class:`Chart` with data ranges: ``x`` in ``xlim``, ``y`` in ``ylim``.

    Lines (``line``) and their legend come from ``Chart``; this adds range ticks, proper dashes
    for sparse series, point markers and a note in place of missing data."""

    def __init__(self, title: str, xlabel: str, ylabel: str, xlim, ylim, size=(1000, 330),
                 legend_w: int = 250, xticks=None) -> None:
        self.img = Image.new("RGB", size, "white")
        self.d = ImageDraw.Draw(self.img)
        self.l, self.t, self.r, self.b = 74, 36, size[0] - legend_w - 20, size[1] - 50
        self.legend = []
        self.xlim, self.ylim = (float(xlim[0]), float(xlim[1])), (float(ylim[0]), float(ylim[1]))
        f, fs = font(16), font(13)
        self.d.text(((self.l + self.r) / 2, 8), title, fill="black", font=f, anchor="mt")
        xt = xticks if xticks is not None else nice_ticks(*self.xlim)
        yt = nice_ticks(*self.ylim)
        for v in xt:
            if self.xlim[0] - 1e-9 <= v <= self.xlim[1] + 1e-9:
                x = self.px(v, self.ylim[0])[0]
                self.d.line([(x, self.t), (x, self.b)], fill=(225, 225, 225))
                self.d.text((x, self.b + 6), tick_text(v, xt[1] - xt[0] if len(xt) > 1 else 1), fill="black",
                            font=fs, anchor="mt")
        for v in yt:
            if self.ylim[0] - 1e-9 <= v <= self.ylim[1] + 1e-9:
                y = self.px(self.xlim[0], v)[1]
                self.d.line([(self.l, y), (self.r, y)], fill=(225, 225, 225))
                self.d.text((self.l - 6, y), tick_text(v, yt[1] - yt[0] if len(yt) > 1 else 1), fill="black",
                            font=fs, anchor="rm")
        self.d.rectangle([self.l, self.t, self.r, self.b], outline="black")
        self.d.text(((self.l + self.r) / 2, size[1] - 6), xlabel, fill="black", font=fs, anchor="mb")
        h = self.b - self.t
        label = Image.new("RGB", (h, 18), "white")
        ImageDraw.Draw(label).text((h / 2, 9), ylabel, fill="black", font=fs, anchor="mm")
        self.img.paste(label.rotate(90, expand=True), (4, self.t))

    def px(self, x: float, y: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        fx = (x - x0) / (x1 - x0) if x1 > x0 else 0.5
        fy = (y - y0) / (y1 - y0) if y1 > y0 else 0.5
        fy = min(max(fy, -0.02), 1.02)  # an outlier stays at the frame, not over the labels
        return (self.l + fx * (self.r - self.l), self.b - fy * (self.b - self.t))

    def series(self, pts, colour, label: str, *, width: int = 2, dashed: bool = False) -> None:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        if dashed:
            self._dashes([self.px(x, y) for x, y in zip(xs, ys)], colour, width)
            self.legend.append((label, colour, True))
        else:
            self.line(xs, ys, colour, label, width=width)
        if len(pts) <= 40:  # markers show where the sparse points really are
            for x, y in zip(xs, ys):
                cx, cy = self.px(x, y)
                self.d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)

    def _dashes(self, pts, colour, width: int, on: float = 7.0, off: float = 5.0) -> None:
        pos = 0.0
        for (ax, ay), (bx, by) in zip(pts, pts[1:]):
            seg = math.hypot(bx - ax, by - ay)
            s = 0.0
            while s < seg:
                phase = pos % (on + off)
                run = (on - phase) if phase < on else (on + off - phase)
                e = min(seg, s + run)
                if phase < on:
                    self.d.line([(ax + (bx - ax) * s / seg, ay + (by - ay) * s / seg),
                                 (ax + (bx - ax) * e / seg, ay + (by - ay) * e / seg)], fill=colour, width=width)
                pos += e - s
                s = e

    def epoch_marks(self, ends: list[float]) -> None:
        fs = font(11)
        for k, x in enumerate(ends):
            if self.xlim[0] <= x <= self.xlim[1]:
                px = self.px(x, self.ylim[0])[0]
                for y in range(int(self.t), int(self.b), 6):
                    self.d.line([(px, y), (px, y + 2)], fill=(170, 170, 170))
                if len(ends) <= 20 or (k + 1) % math.ceil(len(ends) / 20) == 0:
                    self.d.text((px - 2, self.t + 3), f"ep {k + 1}", fill=(120, 120, 120), font=fs, anchor="rt")

    def note(self, text: str) -> None:
        self.d.text(((self.l + self.r) / 2, (self.t + self.b) / 2), text, fill=(120, 120, 120),
                    font=font(15), anchor="mm")

    def render(self) -> Image.Image:
        self.draw_legend(row=19, dash=(5, 4))
        return self.img


def plot_training_curves(series: dict, path: str | os.PathLike, *, title: str = "") -> tuple[Path, list[str]]:
    """``curves.png`` from :func:`read_metrics_csv` output: three stacked panels sharing the step
    axis (training losses; validation mAP@0.5, mAP@0.5:0.95 and per-class AP@0.5; learning
    rate). A panel whose columns are missing says so. Returns (path, notes on what was missing)."""
    path = Path(path)
    notes: list[str] = []
    losses = sorted((k for k in series if k.startswith("train/") and k != "train/time"),
                    key=lambda k: (k != "train/loss", k))
    losses += sorted(k for k in series if k.startswith("val/") and "loss" in k)
    vals = [k for k in ("val/mAP50", "val/mAP50_95") if k in series]
    per_class = sorted(k for k in series if k.startswith("val/AP50_"))
    lrs = sorted(k for k in series if k == "lr" or k.startswith("lr-") or k.startswith("lr/"))
    plotted = losses + vals + per_class + lrs
    xs = [x for k in plotted for x, _ in series[k]]
    if not xs:
        raise ValueError("metrics.csv has no loss, validation or learning-rate values to plot")
    xkey = "step" if "step" in series else "epoch" if "epoch" in series else "row"
    xlabel = xkey + (" (dotted: end of each epoch)" if "epoch" in series and xkey == "step" else "")
    xlim = (0.0, max(max(xs), 1.0))
    ends = []
    if "epoch" in series and "step" in series:
        # The last step logged in each epoch (validation rows carry the epoch's last step).
        last: dict[int, float] = {}
        for (x, e) in series["epoch"]:
            last[int(e)] = max(last.get(int(e), -1.0), x)
        ends = [last[e] for e in sorted(last)]
    xticks = nice_ticks(*xlim, n=8)

    panels = []
    values = np.array([y for k in losses for _, y in series[k]] or [1.0])
    top, clipped = float(values.max()), ""
    p95 = float(np.percentile(values, 95))
    if p95 > 0 and top > 2 * p95:  # an early spike would flatten the rest of the curve
        top, clipped = 1.25 * p95, " (y axis clipped: early values off the top)"
    ax = Axes("Training loss" + (f" \u00b7 {title}" if title else "") + clipped, xlabel, "loss",
               xlim, (min(0.0, float(values.min())), nice_max(top)), xticks=xticks)
    for i, k in enumerate(losses):
        pts = series[k]
        colour = (30, 30, 30) if k == "train/loss" else SERIES_COLOURS[i % len(SERIES_COLOURS)]
        ax.series(pts, colour, f"{k} (last {pts[-1][1]:.3g})", width=3 if k == "train/loss" else 2)
    if not losses:
        ax.note("no training loss logged")
        notes.append("no train/* loss columns in metrics.csv")
    ax.epoch_marks(ends)
    panels.append(ax.render())

    ax = Axes("Validation", xlabel, "mAP / AP", xlim, (0.0, 1.0), xticks=xticks)
    for i, k in enumerate(vals):
        pts = series[k]
        ax.series(pts, [(30, 30, 30), (110, 110, 110)][i], f"{k[4:]} (last {pts[-1][1]:.3f})", width=3)
    for i, k in enumerate(per_class):
        pts = series[k]
        ax.series(pts, SERIES_COLOURS[i % len(SERIES_COLOURS)], f"AP@0.5 {k[len('val/AP50_'):]} ({pts[-1][1]:.3f})",
                  dashed=True)
    if not vals and not per_class:
        ax.note("no validation logged yet")
        notes.append("no val/mAP50 or val/AP50_* columns in metrics.csv")
    ax.epoch_marks(ends)
    panels.append(ax.render())

    lr_top = max((y for k in lrs for _, y in series[k]), default=1.0)
    ax = Axes("Learning rate", xlabel, "lr", xlim, (0.0, nice_max(lr_top)),
               size=(1000, 230), xticks=xticks)
    for i, k in enumerate(lrs):
        ax.series(series[k], SERIES_COLOURS[i % len(SERIES_COLOURS)], k)
    if not lrs:
        ax.note("no learning rate logged")
        notes.append("no lr column in metrics.csv")
    ax.epoch_marks(ends)
    panels.append(ax.render())

    img = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels)), "white")
    y = 0
    for p in panels:
        img.paste(p, (0, y))
        y += p.height
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path, notes
