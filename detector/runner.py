"""The runner: score tiles and whole scenes with an exported model. Torch-free.

    det = Detector.load("model.onnx")             # spec read from the file
    result = det.predict_scene("scene.tif")       # any size, bounded memory
    tiles = det.predict_tiles([array_hwc, ...])   # raw arrays, bands already in spec order

Scenes are read window by window (``detector.tiling``), in batches, with the next batch read
by a background thread while the model runs; windows that are all nodata are skipped, and so are
windows the first pass finds certainly empty (``detector.prescreen``; ``skip=False`` scores them), nodata
pixels are fed to the model as training saw them (0 after scaling, ``raster.fill_invalid``) and
detections lying mostly on nodata (``MIN_VALID_FRACTION``) are dropped. Boxes are in scene pixels; the scene's
CRS and transform ride along for georeferencing (``detector.outputs``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rasterio
from rasterio.windows import Window

from detector import prescreen as _prescreen
from detector import raster, tiling
from detector.spec import ModelSpec, above_threshold

log = logging.getLogger("revet.runner")


GDAL_CACHE_MB = 64  # GDAL's block cache for scene reads (its default grows with RAM)
BATCH_TILE = 512  # batch sizes are counted in windows of this size (see Detector.windows_per_batch)
MIN_VALID_FRACTION = 0.5  # detections with less of their box on valid pixels are dropped
LARGE_SCENE_WINDOWS = 10_000  # scenes of at least this many windows are announced (size, windows)


@dataclass
class Detections:
    """Detections in one image or scene.

    boxes (N, 4) float32 ``x1, y1, x2, y2`` in pixels of the source image; scores (N,) float32;
    labels (N,) int64 indices into ``classes``. ``crs``/``transform`` are the source's (None
    for plain images); ``path`` the source file; ``extra`` for scenes: ``windows`` (windows planned),
    ``truncated`` ((N,) bool: the box touches an interior window edge) and the windows not scored
    (``skipped``, ``skipped_nodata``, ``skip_fraction``, ``prescreen``: :func:`skip_extra`).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    path: Path | str | None = None  # a str for GDAL paths (/vsicurl/..., raster.is_gdal_path)
    crs: object = None
    transform: object = None
    width: int = 0
    height: int = 0
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)



@dataclass
class ScenePlan:
    """How one raster is scored, decided from its header before any pixel is read.

    ``width`` x ``height``: the grid the windows tile, in model pixels (the raster's own pixels
    unless resampled); ``factor``: raster pixels per model pixel (1.0: read as stored);
    ``windows``: ``(col_off, row_off)`` of each ``tile``-pixel window of that grid, row-major, the
    index being the window id; ``raster_width`` x ``raster_height`` (pixels), ``crs`` and
    ``transform``: the raster's, to map boxes back (:meth:`Detector.finish_scene`).
    """

    path: Path | str
    width: int
    height: int
    tile: int
    windows: list[tuple[int, int]]
    factor: float = 1.0
    raster_width: int = 0
    raster_height: int = 0
    crs: object = None
    transform: object = None

    @property
    def megapixels(self) -> float:
        """Raster pixels / 1e6."""
        return self.raster_width * self.raster_height / 1e6


class WindowPart(NamedTuple):
    """The kept detections of one window, in grid pixels (:class:`ScenePlan`): ``boxes`` (N, 4)
    float32 xyxy, ``scores`` (N,) float32, ``labels`` (N,) int64, ``truncated`` (N,) bool
    (touches an interior window edge); ``wid`` the window's index in the plan."""

    wid: int
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    truncated: np.ndarray


class Detector:
    """A model plus the rules to apply it. ``backend.run`` does the maths (ONNX Runtime, or
    PyTorch for checkpoints); everything else here is numpy and rasterio."""

    #: join fragments of one object after the merge across windows (:func:`tiling.join_fragments`);
    #: False only to measure what the join does (benchmarks/bench_fragments.py)
    join_fragments: bool = True
    #: one class per object (:meth:`one_class_per_object`; ``revet predict --one-class``): of
    #: boxes of different classes on the same ground only the best-scoring is reported
    one_class: bool = False

    def __init__(self, backend, spec: ModelSpec, *, scene: "Detector | None" = None) -> None:
        self.backend = backend
        self.spec = spec
        # the first pass of scene scoring (detector.prescreen); None scores every window with data
        self.prescreen: _prescreen.Prescreen | None = _prescreen.DEFAULT
        # the same network exported with a larger window (scene_model_path): used for a scene
        # whenever it scores fewer pixels than this model's windows would (for_grid)
        self._scene = scene
        self._scene_loader = None  # loads a companion found by load() on first use (scene)
        if scene is not None:
            check_scene_model(spec, scene.spec, getattr(scene.backend, "path", "scene model"))

    @property
    def scene(self) -> "Detector | None":
        """The scene companion, or None. One that :meth:`load` found beside the model file is
        opened on first use, so jobs that only score tiles never start its session."""
        if self._scene_loader is not None:
            loader, self._scene_loader = self._scene_loader, None
            self._scene = loader()
        return self._scene

    @scene.setter
    def scene(self, value: "Detector | None") -> None:
        self._scene_loader = None
        self._scene = value

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "auto", threads: int | None = None,
             **options) -> "Detector":
        """Load an ``.onnx`` model (torch-free), a ``.ckpt`` checkpoint (needs revet[train]) or a
        shipped model by name (``revet-base``, ``revet-base:int8``; see :mod:`detector.zoo`).
        ``options`` go to the ONNX backend (``trt_cache``: :class:`detector.backends.OnnxBackend`)."""
        from detector import zoo

        from detector.backends import load_backend

        path = zoo.resolve(path)
        # .ckpt: the backend export registers (detector.backends.register_backend); torch only then
        backend = load_backend(path, device=device, threads=threads, **options)
        det = cls(backend, backend.spec)
        companion = scene_model_path(path)
        if companion is not None and companion.exists():
            def load_scene() -> "Detector | None":
                sb = load_backend(companion, device=device, threads=threads, **options)
                try:
                    check_scene_model(backend.spec, sb.spec, companion, getattr(backend, "meta", None),
                                      getattr(sb, "meta", None))
                except ValueError as e:
                    log.warning("%s; scoring scenes with %s's own windows", e, path)
                    return None
                return cls(sb, sb.spec)

            det._scene_loader = load_scene
        return det

    def for_grid(self, width: int, height: int, overlap: int | None = None) -> "Detector":
        """The detector to score a ``width`` x ``height`` grid (model pixels) with: the scene
        model (:attr:`scene`, larger windows, less overlap work) when its windows cover the grid
        with fewer scored pixels than this model's, else this one. ``overlap`` (pixels) as given
        to the scene, default the spec's."""
        scene = self.scene
        if scene is None:
            return self
        ov = self.spec.overlap if overlap is None else overlap

        def scored(t: int) -> int:
            return tiling.window_count(width, height, t, ov) * t * t

        if scored(scene.spec.tile_size) >= scored(self.spec.tile_size):
            return self
        scene.one_class = self.one_class  # the companion merges as this model does
        return scene

    # ---------------------------------------------------------------- tiles
    def prepare_batch(self, tiles, valid) -> np.ndarray:
        """tiles: B raw ``(T, T, C)`` arrays (or one ``(B, T, T, C)`` array), valid: their
        ``(T, T)`` bool masks -> the ``(B, C, T, T)`` float32 model input, no-data pixels filled
        as in training (:func:`raster.fill_invalid`)."""
        batch = np.stack([np.moveaxis(t, -1, 0) for t in tiles]).astype(np.float32)
        raster.fill_invalid(batch, np.stack(valid), self.spec.offset)
        return batch

    def _run_batch(self, tiles: list[np.ndarray], valid: list[np.ndarray]):
        """tiles: (T, T, C) raw arrays, valid: their (T, T) masks -> backend outputs for the
        stacked batch: boxes (B, D, 4) in window pixels, scores (B, D), labels (B, D)."""
        return self.backend.run(self.prepare_batch(tiles, valid))

    def window_part(self, wid: int, col: int, row: int, boxes: np.ndarray, scores: np.ndarray,
                    labels: np.ndarray, valid: np.ndarray, width: int, height: int, thr) -> WindowPart:
        """One window's raw outputs -> its kept detections (:class:`WindowPart`).

        boxes (D, 4) float32 in window pixels, scores (D,), labels (D,) as the model gave them for
        the window at ``(col, row)`` of a ``width`` x ``height`` grid; valid (T, T) its mask.
        Padding past the grid edge is not image: boxes are clipped to the grid, then those above
        ``thr`` (one score, or (K,) per class: :meth:`ModelSpec.thresholds`) and mostly on
        valid pixels are kept and moved to grid pixels.
        """
        b = boxes.copy()
        b[:, 0::2] = np.clip(b[:, 0::2], 0, width - col)
        b[:, 1::2] = np.clip(b[:, 1::2], 0, height - row)
        ok = self._keep(b, scores, labels, valid, thr)
        b = b[ok] + np.array([col, row, col, row], np.float32)
        return WindowPart(int(wid), b, scores[ok], labels[ok].astype(np.int64),
                          tiling.truncated_mask(b, col, row, self.spec.tile_size, width, height))

    def merge_parts(self, parts, width: int, height: int, n_windows: int) -> Detections:
        """The windows' detections (:class:`WindowPart`, any order; windows with nothing left out)
        -> the scene's, merged across overlaps (:func:`tiling.merge_windows`), fragments of one
        object joined (:func:`tiling.join_fragments`) and sorted by score.

        Parts are taken in window order whatever order they came in, so any engine (one
        process, shards, Ray workers finishing in any order) gets the same result. Boxes in grid
        pixels; ``extra``: ``windows`` (= ``n_windows``) and ``truncated`` (N,) bool.
        """
        parts = sorted(parts, key=lambda p: p.wid)
        if parts:
            boxes = np.concatenate([p.boxes for p in parts])
            scores = np.concatenate([p.scores for p in parts])
            labels = np.concatenate([p.labels for p in parts])
            wids = np.concatenate([np.full(len(p.boxes), p.wid) for p in parts])
            trunc = np.concatenate([p.truncated for p in parts])
        else:
            boxes, scores, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
            wids, trunc = np.zeros(0, int), np.zeros(0, bool)
        keep = tiling.merge_windows(boxes, scores, labels, wids, trunc, iou=self.spec.nms_iou)
        # one box per object: pieces and collinear fragments of one confident object joined
        if self.join_fragments:
            jb, js, jl, src, _ = tiling.join_fragments(boxes[keep], scores[keep], labels[keep],
                                                       min_score=self.spec.thresholds()[labels[keep]])
        else:
            src = np.argsort(-scores[keep], kind="stable")  # indices into keep
            jb, js, jl = boxes[keep][src].astype(np.float32), scores[keep][src].astype(np.float32), labels[keep][src]
        return self.one_class_per_object(Detections(jb, js, jl, self.spec.classes, width=width, height=height,
                                                    extra={"windows": n_windows, "truncated": trunc[keep][src]}))

    def one_class_per_object(self, det: Detections) -> Detections:
        """With :attr:`one_class` set: of boxes of different classes on the same ground (IoU >=
        ``spec.nms_iou``) keep the best-scoring (:func:`tiling.one_class_per_ground`) and record
        the runner-up class in ``extra``: ``runner_up`` (N,) int64 class index (-1: none) and
        ``runner_up_score`` (N,) float32 (NaN: none). Otherwise ``det`` unchanged. In place;
        returns ``det``."""
        if not self.one_class:
            return det
        keep, ru = tiling.one_class_per_ground(det.boxes, det.scores, det.labels, iou=self.spec.nms_iou)
        has, at = ru >= 0, np.maximum(ru, 0)
        det.extra["runner_up"] = np.where(has, det.labels[at], -1).astype(np.int64)
        det.extra["runner_up_score"] = np.where(has, det.scores[at], np.nan).astype(np.float32)
        det.boxes, det.scores, det.labels = det.boxes[keep], det.scores[keep], det.labels[keep]
        if "truncated" in det.extra:
            det.extra["truncated"] = det.extra["truncated"][keep]
        return det

    def _keep(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, valid: np.ndarray,
              thr) -> np.ndarray:
        """(N,) bool: at or above the threshold of its class (``thr``: one score or (K,) per
        class; :func:`detector.spec.above_threshold`), a proper box, and mostly on valid pixels
        of its window."""
        ok = (above_threshold(scores, labels, np.maximum(thr, 1e-9))
              & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        if not valid.all():
            ok &= tiling.valid_fraction(boxes, valid) >= MIN_VALID_FRACTION
        return ok

    def predict_tiles(self, arrays, *, valid=None, min_score: float | None = None,
                      batch_size: int = 8) -> list[Detections]:
        """Score in-memory images, each ``(H, W, C)`` raw values with bands in spec order;
        ``valid``: one ``(H, W)`` bool mask per image (False: no data), default all valid.

        Images of exactly ``tile_size`` are batched directly; other sizes are scored as small
        scenes (windows and merging).
        """
        thr = self.spec.thresholds(min_score)  # per class, or min_score for every class
        out: list[Detections | None] = [None] * len(arrays)
        masks = [np.ones(a.shape[:2], bool) for a in arrays] if valid is None else list(valid)
        if len(masks) != len(arrays) or any(m.shape != a.shape[:2] for m, a in zip(masks, arrays)):
            raise ValueError("valid: expected one (H, W) mask per image, of the image's height and width")
        t = self.spec.tile_size
        direct = [i for i, a in enumerate(arrays) if a.shape[:2] == (t, t)]
        per = self.windows_per_batch(batch_size)
        for s in range(0, len(direct), per):
            idx = direct[s:s + per]
            boxes, scores, labels = self._run_batch([self._check(arrays[i], f"array {i}") for i in idx],
                                                    [masks[i] for i in idx])
            for k, i in enumerate(idx):
                keep = self._keep(boxes[k], scores[k], labels[k], masks[i], thr)
                out[i] = self.one_class_per_object(Detections(
                    boxes[k][keep], scores[k][keep], labels[k][keep].astype(np.int64), self.spec.classes,
                    width=t, height=t))
        for i, a in enumerate(arrays):
            if out[i] is None:
                a = self._check(a, f"array {i}")
                out[i] = self._score_windows(_ArraySource(a, masks[i], t), a.shape[1], a.shape[0], thr,
                                             self.spec.overlap, batch_size)
        return out

    def windows_per_batch(self, batch_size: int) -> int:
        """``batch_size`` counts 512 x 512 windows: a model with larger windows gets fewer per
        batch, so a batch holds the same number of pixels and memory stays the same."""
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive number of windows, got {batch_size}")
        return max(1, int(batch_size * BATCH_TILE ** 2 // self.spec.tile_size ** 2))

    def _check(self, a: np.ndarray, name: str) -> np.ndarray:
        if a.ndim != 3 or a.shape[2] != self.spec.num_bands:
            raise ValueError(
                f"{name}: expected an (H, W, {self.spec.num_bands}) array with bands "
                f"{list(self.spec.bands)}, got shape {a.shape}"
            )
        return a

    # ---------------------------------------------------------------- scenes
    def predict_scene(self, path: str | os.PathLike, *, min_score: float | None = None,
                      overlap: int | None = None, batch_size: int = 8, resample: bool = True,
                      max_megapixels: float | None = raster.MAX_MEGAPIXELS, skip: bool = True) -> Detections:
        """Score a raster of any size window by window. Boxes in the raster's pixels.

        When the raster's pixel size differs from the model's ``spec.gsd`` by more than 2 %
        (both known), windows are resampled to the model's pixel size (bilinear) and boxes
        mapped back, so objects appear at the size in pixels the model was trained on.
        A raster larger than ``max_megapixels`` (None: no limit) is refused from its header
        (:func:`raster.check_size`); windows on blocks a sparse GeoTIFF never wrote are skipped
        unread (:func:`raster.sparse_empty`).
        ``extra["seconds"]``: time spent reading, inferring (preprocessing included) and merging.
        ``skip``: windows the first pass (``self.prescreen``, :mod:`detector.prescreen`) finds
        certainly empty are not scored; False scores every window with data. ``extra``:
        ``skipped``, ``skip_fraction``, ``prescreen`` (:func:`skip_extra`).
        """
        path = raster.as_path(path)
        thr = self.spec.thresholds(min_score)  # per class, or min_score for every class
        ov = self.spec.overlap if overlap is None else overlap
        # GDAL's block cache defaults to 5 % of RAM and would grow with the scene: cap it so
        # memory stays flat whatever the scene size.
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20), raster.open_raster(path) as ds:
            plan = self._plan(ds, path, ov, resample, max_megapixels)
            run = self.for_grid(plan.width, plan.height, ov)  # the detector whose window the plan has
            det = run._score_windows(_RasterSource(ds, self.spec.bands, plan.tile, plan.factor),
                                     plan.width, plan.height, thr, ov, batch_size,
                                     screen=self.prescreen if skip else None)
        det.extra["window"] = plan.tile
        return self.finish_scene(det, plan)

    def plan_scene(self, path: str | os.PathLike, *, overlap: int | None = None,
                   resample: bool = True, max_megapixels: float | None = raster.MAX_MEGAPIXELS) -> ScenePlan:
        """Open ``path`` (header only), check its bands, dtype and size against the spec and the
        limit and return its :class:`ScenePlan`; raises as :meth:`predict_scene` does."""
        path = raster.as_path(path)
        ov = self.spec.overlap if overlap is None else overlap
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20), raster.open_raster(path) as ds:
            return self._plan(ds, path, ov, resample, max_megapixels)

    def _plan(self, ds, path, overlap: int, resample: bool,
              max_megapixels: float | None = raster.MAX_MEGAPIXELS) -> ScenePlan:
        info = raster.raster_info(ds)
        raster.check_bands(path, ds.count, self.spec.bands)
        raster.check_dtype(path, info.dtype, self.spec.dtype)
        if ds.count > self.spec.num_bands:
            log.info("%s: %d bands; the model reads bands %s", path, ds.count, list(self.spec.bands))
        f = raster.resample_factor(info.gsd, self.spec.gsd) if resample else 1.0  # raster px per model px
        w, h = (ds.width, ds.height) if f == 1.0 else (int(np.ceil(ds.width / f)), int(np.ceil(ds.height / f)))
        t = self.for_grid(w, h, overlap).spec.tile_size  # the scene model's window where it does less work
        # before the window list is built: a header claiming 10^6 x 10^6 px means ~20 M windows
        n = tiling.window_count(w, h, t, overlap)
        raster.check_size(path, ds.width, ds.height, max_megapixels, windows=n)
        if n >= LARGE_SCENE_WINDOWS:
            log.info("%s: %d x %d pixels (%.0f MP), %d windows of %d px", path, ds.width, ds.height,
                     ds.width * ds.height / 1e6, n, t)
        return ScenePlan(path, w, h, t, tiling.scene_windows(w, h, t, overlap), f, ds.width, ds.height,
                         info.crs, info.transform)

    def finish_scene(self, det: Detections, plan: ScenePlan) -> Detections:
        """Merged detections in grid pixels -> in the raster's pixels, with its path, CRS and
        transform (in place; returns ``det``)."""
        if plan.factor != 1.0:
            w, h = plan.raster_width, plan.raster_height
            det.boxes = np.clip(det.boxes * np.float32(plan.factor), 0, [w, h, w, h]).astype(np.float32)
            det.width, det.height = w, h
            det.extra["resampled"] = plan.factor
        det.path, det.crs, det.transform = plan.path, plan.crs, plan.transform
        return det

    def skip_reason(self, tile: np.ndarray, valid: np.ndarray, screen=None) -> str | None:
        """Why a window is not given to the model: ``"nodata"`` (no valid pixel), ``"screened"``
        (``screen``, a :class:`~detector.prescreen.Prescreen`, finds it certainly empty) or None
        (score it). The one rule of every engine, so they skip the same windows."""
        if not valid.any():
            return "nodata"
        if screen is not None and not screen.may_hold(tile, valid, self.spec):
            return "screened"
        return None

    def _score_windows(self, source, width: int, height: int, thr: float, overlap: int,
                       batch_size: int, screen=None) -> Detections:
        t = self.spec.tile_size
        windows = tiling.scene_windows(width, height, t, overlap)
        parts: list[WindowPart] = []
        clock = {"read": 0.0, "infer": 0.0, "merge": 0.0}  # seconds per stage
        skipped: dict[str, int] = {}
        reason = lambda tile, valid: self.skip_reason(tile, valid, screen)  # noqa: E731
        with contextlib.closing(_prefetch(source, windows, self.windows_per_batch(batch_size), clock,
                                          reason, skipped)) as batches:
            for batch in batches:
                t0 = time.perf_counter()
                boxes, scores, labels = self._run_batch([b[2] for b in batch], [b[3] for b in batch])
                clock["infer"] += time.perf_counter() - t0
                for k, (wid, (col, row), _tile, valid) in enumerate(batch):
                    parts.append(self.window_part(wid, col, row, boxes[k], scores[k], labels[k], valid,
                                                  width, height, thr))
        t0 = time.perf_counter()
        det = self.merge_parts(parts, width, height, len(windows))
        clock["merge"] = time.perf_counter() - t0
        det.extra["seconds"] = clock
        det.extra.update(skip_extra(len(windows), skipped, screen))
        return det


def skip_extra(n_windows: int, skipped: dict, screen) -> dict:
    """A scene's ``Detections.extra`` entries on windows not scored, from ``skipped`` (windows
    per :meth:`Detector.skip_reason`): ``skipped`` (all windows not given to the model),
    ``skipped_nodata`` (of those, all nodata), ``skip_fraction`` (``skipped`` / windows, 0..1)
    and ``prescreen`` (the first pass's settings, None when it was off)."""
    n = sum(skipped.values())
    return {"skipped": int(n), "skipped_nodata": int(skipped.get("nodata", 0)),
            "skip_fraction": round(n / n_windows, 4) if n_windows else 0.0,
            "prescreen": screen.to_dict() if screen is not None else None}


SCENE_TAG = ".scene"  # model.onnx -> model.scene.onnx, model.int8.onnx -> model.scene.int8.onnx
_VARIANT_TAGS = (".int8", ".fp16")  # the suffixes revet export gives its variants


def scene_model_path(path: str | os.PathLike) -> Path | None:
    """Where the scene companion of the ONNX model ``path`` lives (the same network exported with
    a larger window, ``revet export --scene-window``): ``X.onnx`` -> ``X.scene.onnx``,
    ``X.int8.onnx`` -> ``X.scene.int8.onnx`` (as export names that file's variants). None for
    other files and for a scene model itself."""
    p = Path(path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else None
    if stem is None:
        return None
    variant = next((v for v in _VARIANT_TAGS if stem.endswith(v)), "")
    base = stem[: len(stem) - len(variant)]
    if base.endswith(SCENE_TAG):
        return None
    return p.with_name(f"{base}{SCENE_TAG}{variant}.onnx")


def check_scene_model(tile: ModelSpec, scene: ModelSpec, source, tile_meta: dict | None = None,
                      scene_meta: dict | None = None) -> None:
    """Raise ValueError naming ``source`` unless the spec ``scene`` is ``tile``'s network in a
    larger window: the same classes, bands, dtype, pixel size, scaling, normalization,
    thresholds and overlap, a larger ``tile_size``, and (when both ONNX files record it) the
    same ``weights_sha256``."""
    same = ("arch", "classes", "bands", "dtype", "gsd", "offset", "scale", "mean", "std", "overlap",
            "nms_iou", "score_threshold", "class_thresholds")
    diff = [k for k in same if getattr(tile, k) != getattr(scene, k)]
    if diff:
        raise ValueError(f"{source}: scene model differs from the model in {diff}")
    if scene.tile_size <= tile.tile_size:
        raise ValueError(f"{source}: scene model window {scene.tile_size} px is not larger than the "
                         f"model's {tile.tile_size} px")
    a, b = (tile_meta or {}).get("weights_sha256"), (scene_meta or {}).get("weights_sha256")
    if a and b and a != b:
        raise ValueError(f"{source}: scene model holds other weights than the model (weights_sha256 differs)")


def read_scene_window(ds, bands, tile: int, col: int, row: int, factor: float = 1.0):
    """Window ``(col, row)`` of a scene's grid (:class:`ScenePlan`) from the open raster ``ds``:
    ``(tile, tile, C)`` raw pixels of the 1-based ``bands`` (padded past the raster's edge) and
    the ``(tile, tile)`` bool valid mask. With ``factor`` != 1 the grid is of model-size pixels,
    each ``factor`` raster pixels wide, read resampled (bilinear values, nearest mask)."""
    f = factor
    win = Window(col, row, tile, tile) if f == 1.0 else Window(col * f, row * f, tile * f, tile * f)
    if raster.sparse_empty(ds, win):  # blocks never written: nothing to read (all invalid)
        return np.zeros((tile, tile, len(bands)), ds.dtypes[bands[0] - 1]), np.zeros((tile, tile), bool)
    if f == 1.0:
        return raster.read_window(ds, win, bands)
    return raster.read_window_resampled(ds, win, bands, tile)


class _RasterSource:
    """Windows of an open raster; with ``factor`` != 1, windows are in a virtual grid of
    model-size pixels, each ``factor`` raster pixels wide, read resampled."""

    def __init__(self, ds, bands, tile: int, factor: float = 1.0) -> None:
        self.ds, self.bands, self.tile, self.factor = ds, list(bands), tile, factor

    def read(self, col: int, row: int):
        return read_scene_window(self.ds, self.bands, self.tile, col, row, self.factor)


class _ArraySource:
    """An in-memory (H, W, C) image read like a raster: windows padded past the edge."""

    def __init__(self, array: np.ndarray, valid: np.ndarray, tile: int) -> None:
        self.array, self.valid, self.tile = array, valid, tile

    def read(self, col: int, row: int):
        t = self.tile
        return _pad_to(self.array[row:row + t, col:col + t], self.valid[row:row + t, col:col + t], t)


def _prefetch(source, windows, batch_size: int, clock: dict | None = None, reason=None,
              skipped: dict | None = None):
    """Yield batches of (window_id, (col, row), tile (T, T, C), valid (T, T)), reading the next
    batch in a background thread while the caller runs the model. At most two batches are in
    memory. A batch is a chunk of ``batch_size`` consecutive windows (ids ``k * batch_size`` to
    ``(k + 1) * batch_size - 1``) less those that are all nodata, so every engine puts the same
    windows in the same model call (ONNX Runtime's outputs for a window can differ in the last
    bit with the batch around it, and tied scores then pick other boxes). When the consumer stops early (the model
    raised, or the generator is closed) the reader is told to stop and joined before the
    generator returns, so no thread outlives the scene or reads from a closed raster.
    ``clock["read"]`` (if given) accumulates the seconds spent reading. ``reason(tile, valid)``
    (default: all nodata) names why a window is left out of its batch (None: keep it), counted
    per reason in ``skipped``; it runs here, in the reader thread, beside the model."""
    reason = reason or (lambda tile, valid: None if valid.any() else "nodata")
    q: queue.Queue = queue.Queue(maxsize=1)
    error: list[BaseException] = []
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            batch = []
            for wid, (col, row) in enumerate(windows):
                if stop.is_set():
                    return
                t0 = time.perf_counter()
                tile, valid = source.read(col, row)
                if clock is not None:
                    clock["read"] = clock.get("read", 0.0) + time.perf_counter() - t0
                why = reason(tile, valid)
                if why is None:
                    batch.append((wid, (col, row), tile, valid))
                elif skipped is not None:
                    skipped[why] = skipped.get(why, 0) + 1
                if (wid + 1) % batch_size == 0 and batch:
                    if not put(batch):
                        return
                    batch = []
            if batch:
                put(batch)
        except BaseException as e:  # re-raised in the consumer
            error.append(e)
        finally:
            put(None)

    th = threading.Thread(target=produce, daemon=True, name="revet-reader")
    th.start()
    try:
        while True:
            item = q.get()
            if item is None:
                break
            yield item
    finally:
        stop.set()
        th.join()
    if error:
        raise error[0]


def _pad_to(tile: np.ndarray, valid: np.ndarray, size: int):
    h, w = tile.shape[:2]
    if (h, w) == (size, size):
        return tile, valid
    out = np.zeros((size, size, tile.shape[2]), tile.dtype)
    out[:h, :w] = tile
    v = np.zeros((size, size), bool)
    v[:h, :w] = valid
    return out, v
