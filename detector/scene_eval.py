"""Scene-level evaluation: a whole raster scored as ``revet predict`` scores it, against vector
labels. Torch-free for ``.onnx`` models.

Rules (also in ``docs/evaluate.md``):

- Detections: :meth:`detector.runner.Detector.predict_scene` (windows of the spec's
  ``tile_size`` and ``overlap``, merged across overlaps) with ``min_score`` 0.001, so AP sees
  the whole PR curve; precision, recall and false alarms are read at the operating threshold.
- Labels: polygons in any vector format and CRS (:func:`detector.labels.vector.read_vector`),
  reprojected vertex by vertex to the scene CRS; a label's box is the bounds of its vertices in
  the scene grid, clipped to the scene. For a north-up scene (no rotation terms) matching boxes
  in scene pixels is matching them in the scene's map coordinates (the transform only scales
  and shifts, IoU is unchanged). Labels wholly outside the scene are left out; labels whose
  box centre lies on nodata are left out too (the runner drops detections centred on nodata,
  so they could never be found); both counts are reported.
- Matching: per class, greedy by score, IoU >= 0.5 (COCO's rule), with no cap on detections
  per scene.
- Area: valid-data area = pixels that are valid in every band the model reads (nodata value,
  mask, alpha; the runner's rule) times the pixel area. Pixel area is ``|det(transform)|`` in
  CRS units squared, converted to square metres for projected CRSs; for a geographic CRS it is
  approximated at the scene centre's latitude. False positives per km² = unmatched detections
  with ``score >= threshold`` / valid-data km².
- Window boundaries: a label *crosses a window boundary* when no single window of the runner's
  grid (:func:`detector.tiling.scene_windows` with the spec's ``tile_size`` and ``overlap``)
  wholly contains its box, i.e. the model never sees it whole and the merge step has to make
  it one detection. Recall is reported separately for crossing labels and for the others.
  A label is *cut* when some window overlaps its box without containing it (that window sees
  a truncated object); recall and duplicates (detections at the operating threshold left
  unmatched though they overlap an already-found label of their class at IoU >= 0.5) are
  reported for cut and uncut labels.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from detector import raster
from detector.eval_run import (EVAL_MIN_SCORE, EvalRun, Source, finish_run, load_detector,
                               operating_class_thresholds, operating_threshold, stamp_metrics)
from detector.labels.vector import boxes_on_raster, overlap_error, read_vector
from detector.metrics import ImageEval, evaluate_full, match_images
from detector.runner import Detector
from detector.spec import above_threshold
from detector.tiling import box_iou, scene_windows, window_starts

_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQUATOR = 111_320.0
_ROWS_PER_READ = 512


def _window_spans(boxes, width: int, height: int, tile: int, overlap: int, tol: float):
    """Each box against each column span and each row span of the window grid
    ``scene_windows(width, height, tile, overlap)`` (a product of column and row starts):
    ``(overlaps_x, holds_x, overlaps_y, holds_y)``, each (N, spans) bool."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    cols = np.asarray(window_starts(width, tile, overlap), np.float64)[None]
    rows = np.asarray(window_starts(height, tile, overlap), np.float64)[None]
    ix = (cols < boxes[:, 2:3] - tol) & (cols + tile > boxes[:, :1] + tol)
    iy = (rows < boxes[:, 3:4] - tol) & (rows + tile > boxes[:, 1:2] + tol)
    cx = (cols <= boxes[:, :1] + tol) & (boxes[:, 2:3] <= cols + tile + tol)
    cy = (rows <= boxes[:, 1:2] + tol) & (boxes[:, 3:4] <= rows + tile + tol)
    return ix, cx, iy, cy


def crossing_mask(boxes: np.ndarray, width: int, height: int, tile: int, overlap: int,
                  tol: float = 1e-3) -> np.ndarray:
    """(N,) bool: box (scene pixels, xyxy) lies wholly inside no single window of the grid
    ``scene_windows(width, height, tile, overlap)``. The grid is a product of column and row
    starts, so a box fits some window iff it fits some column span and some row span."""
    _, cx, _, cy = _window_spans(boxes, width, height, tile, overlap, tol)
    return ~(cx.any(1) & cy.any(1))


def cut_mask(boxes: np.ndarray, width: int, height: int, tile: int, overlap: int,
             tol: float = 1e-3) -> np.ndarray:
    """(N,) bool: some window of the grid cuts the box: overlaps it without containing it
    (the objects at risk of being split or reported twice by the merge step)."""
    ix, cx, iy, cy = _window_spans(boxes, width, height, tile, overlap, tol)
    return ((ix & ~cx).any(1) & iy.any(1)) | (ix.any(1) & (iy & ~cy).any(1))


def duplicate_counts(im: ImageEval, det_gt: np.ndarray, threshold, iou: float = 0.5) -> np.ndarray:
    """(N_gt,) int: detections at or above ``threshold`` (one number, or (K,) per class) left unmatched although they overlap
    label i (same class, IoU >= ``iou``) that another detection matched: double reports."""
    dup = np.zeros(len(im.gt_labels), np.int64)
    extra = (det_gt == -1) & above_threshold(im.scores, im.labels, threshold)
    if not extra.any() or not len(im.gt_labels):
        return dup
    ov = box_iou(im.boxes[extra], im.gt_boxes)
    ov[im.labels[extra][:, None] != im.gt_labels[None]] = 0.0
    hit = ov.max(1) >= iou
    np.add.at(dup, ov.argmax(1)[hit], 1)
    return dup


def pixel_area_m2(crs, transform, width: int, height: int) -> float:
    """Area of one pixel in square metres (see the module's area rule)."""
    a = abs(transform.a * transform.e - transform.b * transform.d)
    if crs.is_projected:
        f = crs.linear_units_factor[1]
        return a * f * f
    lat = (transform @ (width / 2, height / 2))[1]
    return a * _M_PER_DEG_LAT * _M_PER_DEG_LON_EQUATOR * math.cos(math.radians(lat))


def _valid_pass(path: Path, bands, centres: np.ndarray) -> tuple[int, np.ndarray]:
    """Count valid pixels (runner's rule) in strips of rows; sample validity at ``centres``
    ((N, 2) int col, row inside the raster). Memory: one strip."""
    ok = np.zeros(len(centres), bool)
    n_valid = 0
    with raster.open_raster(path) as ds:
        for r0 in range(0, ds.height, _ROWS_PER_READ):
            h = min(_ROWS_PER_READ, ds.height - r0)
            _img, valid = raster.read_window(ds, Window(0, r0, ds.width, h), list(bands))
            n_valid += int(valid.sum())
            sel = (centres[:, 1] >= r0) & (centres[:, 1] < r0 + h)
            ok[sel] = valid[centres[sel, 1] - r0, centres[sel, 0]]
    return n_valid, ok


def scene_labels(labels: str | os.PathLike, scene: str | os.PathLike, classes, *,
                 class_field: str = "class", layer=None) -> dict:
    """Vector labels over a scene: ``boxes`` (N, 4) scene pixels (clipped), ``labels`` (N,)
    indices into ``classes``, ``ids`` feature ids, plus ``read`` / ``outside`` counts and the
    scene's info. Raises ValueError naming the file for unknown class names, features that
    cannot be reprojected, a scene without CRS, and labels that do not overlap the scene."""
    scene, labels = Path(scene), Path(labels)
    with raster.open_raster(scene) as ds:
        info = raster.raster_info(ds)
    if info.crs is None:
        raise ValueError(f"{scene}: scene has no CRS/geotransform; expected a georeferenced raster "
                         f"(GeoTIFF) to place the vector labels {labels} on")
    vl = read_vector(labels, class_field=class_field, layer=layer)
    if len(vl) == 0:
        raise ValueError(f"{labels}: no labelled features; expected polygons with a {class_field!r} attribute")
    classes = list(classes)
    unknown = sorted(set(vl.names) - set(classes))
    if unknown:
        first = {n: vl.ids[vl.names.index(n)] for n in unknown}
        raise ValueError(f"{labels}: class names {unknown} in attribute {class_field!r} (first at "
                         f"features {[first[n] for n in unknown]}) are not among the model's classes "
                         f"{classes}; rename them or choose the attribute with --class-field")
    cls = np.array([classes.index(n) for n in vl.names], np.int64)
    placed = boxes_on_raster(vl, info.crs, info.transform, info.width, info.height, raster=scene)
    bad = ~np.isfinite(placed.boxes).all(1)
    if bad.any():
        ids = [vl.ids[i] for i in np.flatnonzero(bad)][:10]
        raise ValueError(f"{labels}: features {ids} cannot be reprojected from {vl.crs} to the "
                         f"scene's CRS {info.crs} ({scene}); expected coordinates valid in {vl.crs}")
    inside = placed.inside
    if not inside.any():
        raise ValueError(overlap_error(vl, scene, info.crs, info.width, info.height))
    return {"boxes": placed.clipped[inside].astype(np.float32), "labels": cls[inside],
            "ids": [vl.ids[i] for i in np.flatnonzero(inside)], "read": len(vl),
            "outside": int((~inside).sum()), "info": info, "label_crs": vl.crs}


def evaluate_scene_run(model: str | os.PathLike | Detector, scene: str | os.PathLike,
                       labels: str | os.PathLike, *, class_field: str = "class", layer=None,
                       threshold: float | None = None, device: str = "auto",
                       batch_size: int = 8, min_score: float = EVAL_MIN_SCORE) -> EvalRun:
    """Score ``scene`` with ``model`` and evaluate against vector ``labels`` (module rules).

    The metrics are those of :func:`detector.metrics.evaluate_full` (one image, no detection
    cap) plus ``scene`` (areas, false positives per km², window grid, boundary recall, label
    counts) and, per class, ``fp_per_km2``, ``num_crossing``, ``recall_crossing`` and
    ``recall_inside``.
    """
    det = load_detector(model, device)
    spec = det.spec
    thr = operating_threshold(spec, threshold, min_score)
    cls_thr = operating_class_thresholds(spec, threshold, min_score)  # None: thr for every class
    op = np.full(spec.num_classes, thr) if cls_thr is None else cls_thr
    scene = Path(scene)
    raster.check_bands(scene, _band_count(scene), spec.bands)
    lab = scene_labels(labels, scene, spec.classes, class_field=class_field, layer=layer)
    info = lab["info"]
    boxes, cls = lab["boxes"], lab["labels"]
    centres = np.stack([np.clip(((boxes[:, 0] + boxes[:, 2]) / 2).astype(int), 0, info.width - 1),
                        np.clip(((boxes[:, 1] + boxes[:, 3]) / 2).astype(int), 0, info.height - 1)], 1)
    n_valid, on_data = _valid_pass(scene, spec.bands, centres)
    boxes, cls = boxes[on_data], cls[on_data]
    ids = [i for i, ok in zip(lab["ids"], on_data) if ok]

    d = det.predict_scene(scene, min_score=min_score, batch_size=batch_size)
    im = ImageEval(boxes, cls, d.boxes, d.scores, d.labels)
    m = evaluate_full([im], spec.classes, threshold=thr, class_thresholds=cls_thr, max_dets=None)

    # scene extras: areas, false alarms per km2, recall across window boundaries
    px_m2 = pixel_area_m2(info.crs, info.transform, info.width, info.height)
    valid_km2 = n_valid * px_m2 / 1e6
    match = match_images([im], len(spec.classes), 0.5, None)[0]
    hit = np.maximum(match.gt_det, 0)
    found = ((match.gt_det >= 0) & above_threshold(d.scores[hit], d.labels[hit], op)) if len(cls) else np.zeros(0, bool)
    cross = crossing_mask(boxes, info.width, info.height, spec.tile_size, spec.overlap)
    cut = cut_mask(boxes, info.width, info.height, spec.tile_size, spec.overlap)
    dup = duplicate_counts(im, match.det_gt, op)

    def part(sel):
        n = int(sel.sum())
        k = int((found & sel).sum())
        return {"num_gt": n, "found": k, "recall": k / n if n else float("nan"),
                "duplicates": int(dup[sel].sum())}

    for c, name in enumerate(spec.classes):
        pc = m["per_class"][name]
        pc["fp_per_km2"] = pc["fp"] / valid_km2 if valid_km2 > 0 else float("nan")
        pc["num_crossing"] = int((cross & (cls == c)).sum())
        pc["recall_crossing"] = part(cross & (cls == c))["recall"]
        pc["recall_inside"] = part(~cross & (cls == c))["recall"]
    warnings = []
    if spec.gsd and info.gsd and abs(info.gsd / spec.gsd - 1) > 0.25:
        warnings.append(f"{scene}: pixel size {info.gsd:.3g} differs from the model's training GSD "
                        f"{spec.gsd:.3g} by more than 25%")
    stamp_metrics(m, mode="scene", min_score=min_score, model=model, data=scene)
    m["scene"] = {
        "path": str(scene), "labels": str(labels), "class_field": class_field,
        "crs": info.crs.to_string(), "labels_crs": lab["label_crs"].to_string() if lab["label_crs"] else None,
        "width": info.width, "height": info.height, "pixel_area_m2": px_m2,
        "scene_km2": info.width * info.height * px_m2 / 1e6, "valid_km2": valid_km2,
        "fp_per_km2": m["operating"]["fp"] / valid_km2 if valid_km2 > 0 else float("nan"),
        "windows": {"tile": spec.tile_size, "overlap": spec.overlap,
                    "count": len(scene_windows(info.width, info.height, spec.tile_size, spec.overlap))},
        "boundary": {"rule": "crossing: the label box lies wholly inside no single window of the "
                             "runner's grid", "crossing": part(cross), "inside": part(~cross),
                     "cut_rule": "cut: some window overlaps the label box without containing it",
                     "cut": part(cut), "uncut": part(~cut)},
        "labels_read": lab["read"], "labels_outside": lab["outside"],
        "labels_on_nodata": int((~on_data).sum()), "labels_evaluated": int(len(cls)),
        "detections": int(len(d)), "warnings": warnings,
    }
    return EvalRun(m, [im], [Source(scene, info.crs, info.transform)], spec, "scene", None,
                   extra={"label_ids": ids, "crossing": cross})


def evaluate_scene(model: str | os.PathLike | Detector, scene: str | os.PathLike,
                   labels: str | os.PathLike, *, class_field: str = "class", layer=None,
                   threshold: float | None = None, out=None, report=None, device: str = "auto",
                   batch_size: int = 8, min_score: float = EVAL_MIN_SCORE) -> dict:
    """:func:`evaluate_scene_run`'s metrics; JSON to ``out`` and HTML report to ``report``."""
    run = evaluate_scene_run(model, scene, labels, class_field=class_field, layer=layer,
                             threshold=threshold, device=device, batch_size=batch_size,
                             min_score=min_score)
    return finish_run(run, out, report)


def _band_count(path: Path) -> int:
    with raster.open_raster(path) as ds:
        return ds.count
