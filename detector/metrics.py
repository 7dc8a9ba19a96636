"""COCO-style detection metrics in numpy. Torch-free.

Follows the COCO evaluation protocol (pycocotools ``COCOeval``, bbox, area "all",
maxDets 100): per class and IoU threshold, detections sorted by score are greedily matched to
the unmatched ground truth of highest IoU in the same image; precision is made monotone and
sampled at 101 recall points. A class with no ground truth is left out of the mean (as COCO
does). Boxes are ``x1, y1, x2, y2`` pixels. IoU here uses continuous areas (COCO's ``+0``
convention for bbox), so results match pycocotools to rounding.

Beyond COCO's summary numbers (:func:`evaluate_detections`), :func:`evaluate_full` gives what an
analyst acts on, all at IoU 0.5 with the same greedy matching:

- the operating point: precision, recall, F1 and TP/FP/FN counts of the detections with
  ``score >= threshold``, one threshold for every class or one per class (the model's
  ``class_thresholds``), applied by :func:`detector.spec.above_threshold` as the runner applies them. Because matching runs in score order, the detections above any
  threshold are matched exactly as in the full COCO matching (a prefix of it), so these counts
  are COCO's ``dtMatches`` counted above the threshold;
- a threshold sweep (micro-averaged over classes) and the threshold of best F1;
- the 101-point interpolated PR curve of each class (COCO's ``eval["precision"]``);
- a confusion matrix with a background row and column (see :func:`confusion_matrix`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detector.spec import above_threshold
from detector.tiling import box_iou

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)
RECALL_POINTS = np.linspace(0, 1, 101)
SWEEP_THRESHOLDS = np.round(np.linspace(0, 1, 101), 2)
BACKGROUND = "background"


@dataclass
class ImageEval:
    """Ground truth and detections of one image (pixels, xyxy)."""

    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class ImageMatch:
    """Same-class matching of one image at one IoU threshold (COCO's greedy rule).

    det_gt: (D,) index of the ground truth each detection matched; -1 unmatched; -2 not
        evaluated (beyond ``max_dets`` of its class in this image, as COCO drops them).
    gt_det: (G,) index of the detection that matched each ground truth; -1 none.
    """

    det_gt: np.ndarray
    gt_det: np.ndarray


def match_image(im: ImageEval, num_classes: int, iou: float = 0.5, max_dets: int | None = 100) -> ImageMatch:
    """Greedy same-class matching of one image (all scores; ``max_dets`` per class, None = all)."""
    det_gt = np.full(len(im.scores), -1, np.int64)
    gt_det = np.full(len(im.gt_labels), -1, np.int64)
    for c in range(num_classes):
        gi = np.flatnonzero(np.asarray(im.gt_labels) == c)
        di = np.flatnonzero(np.asarray(im.labels) == c)
        order = di[np.argsort(-np.asarray(im.scores)[di], kind="mergesort")]
        if max_dets is not None:
            det_gt[order[max_dets:]] = -2
            order = order[:max_dets]
        if not (len(gi) and len(order)):
            continue
        taken = np.zeros(len(gi), bool)
        # Only pairs with IoU >= iou can match: find them in chunks (a scene may hold 1e5
        # detections), then run the greedy loop over detections that have any.
        for k, js, vs in _candidate_pairs(np.asarray(im.boxes)[order], np.asarray(im.gt_boxes)[gi], iou):
            free = ~taken[js]
            if not free.any():
                continue
            j = js[free][int(np.argmax(vs[free]))]  # first of the highest IoU, as np.argmax over all
            taken[j] = True
            det_gt[order[k]] = gi[j]
            gt_det[gi[j]] = order[k]
    return ImageMatch(det_gt, gt_det)


def _candidate_pairs(boxes: np.ndarray, gt: np.ndarray, iou: float, chunk: int = 4096):
    """Yield (detection index, gt indices, IoUs) for detections with some IoU >= ``iou``, in
    detection order; gt indices ascending."""
    for start in range(0, len(boxes), chunk):
        ious = box_iou(boxes[start:start + chunk], gt)
        rows, cols = np.nonzero(ious >= iou)
        if not len(rows):
            continue
        cuts = np.flatnonzero(np.diff(rows)) + 1
        for r, c in zip(np.split(rows, cuts), np.split(cols, cuts)):
            yield start + int(r[0]), c, ious[r[0], c]


def match_images(images: list[ImageEval], num_classes: int, iou: float = 0.5,
                 max_dets: int | None = 100) -> list[ImageMatch]:
    return [match_image(im, num_classes, iou, max_dets) for im in images]


def class_scores(images: list[ImageEval], matches: list[ImageMatch], cls: int):
    """-> (scores, is_tp, n_gt) of class ``cls`` pooled over images, in image then detection order."""
    scores, tps, n_gt = [], [], 0
    for im, m in zip(images, matches):
        sel = (np.asarray(im.labels) == cls) & (m.det_gt != -2)
        scores.append(np.asarray(im.scores, np.float64)[sel])
        tps.append(m.det_gt[sel] >= 0)
        n_gt += int((np.asarray(im.gt_labels) == cls).sum())
    if not scores:
        return np.zeros(0), np.zeros(0, bool), 0
    return np.concatenate(scores), np.concatenate(tps), n_gt


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """COCO 101-point AP. Returns (ap, max recall, precision curve, recall curve)."""
    if n_gt == 0:
        return float("nan"), float("nan"), np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[order]
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return (float(interpolated_precision(precision, recall).mean()),
            float(recall[-1]) if len(recall) else 0.0, precision, recall)


def interpolated_precision(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """COCO's (101,) precision at ``RECALL_POINTS``: monotone envelope, 0 past the last recall."""
    env = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    return np.array([env[i] if i < len(env) else 0.0 for i in idx])


def evaluate_detections(images: list[ImageEval], classes, *, max_dets: int | None = 100) -> dict:
    """mAP@0.5, mAP@0.5:0.95, per-class AP@0.5 and AP@0.5:0.95, and recall@0.5 per class."""
    per_class = {}
    ap50s, aps = [], []
    rows = []
    for thr in IOU_THRESHOLDS:
        matches = match_images(images, len(classes), float(thr), max_dets)
        rows.append([average_precision(*class_scores(images, matches, c))[:2] for c in range(len(classes))])
    for c, name in enumerate(classes):
        row = [r[c][0] for r in rows]
        n_gt = int(sum((np.asarray(im.gt_labels) == c).sum() for im in images))
        per_class[name] = {"AP50": row[0], "AP": float(np.mean(row)) if n_gt else float("nan"),
                           "recall50": rows[0][c][1], "num_gt": n_gt}
        if n_gt:
            ap50s.append(row[0])
            aps.append(float(np.mean(row)))
    return {
        "mAP50": float(np.mean(ap50s)) if ap50s else float("nan"),
        "mAP50_95": float(np.mean(aps)) if aps else float("nan"),
        "per_class": per_class,
        "num_images": len(images),
    }


# -- operating point, sweep, curves, confusion (IoU 0.5) -------------------------------------

def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def operating_point(scores: np.ndarray, tp: np.ndarray, n_gt: int, threshold, labels=None) -> dict:
    """Counts and rates of the detections with ``score >= threshold`` (one number, or (K,) per
    class with ``labels`` (N,) the detections' classes: :func:`detector.spec.above_threshold`).

    precision = TP / (TP + FP) (NaN with no detection), recall = TP / n_gt (NaN with no ground
    truth), F1 = 2 TP / (2 TP + FP + FN).
    """
    sel = above_threshold(scores, labels, threshold)
    n_tp, n_fp = int(tp[sel].sum()), int((~tp[sel]).sum())
    n_fn = int(n_gt - n_tp)
    return {"precision": _ratio(n_tp, n_tp + n_fp), "recall": _ratio(n_tp, n_gt),
            "f1": _ratio(2 * n_tp, 2 * n_tp + n_fp + n_fn), "tp": n_tp, "fp": n_fp, "fn": n_fn}


def threshold_sweep(scores: np.ndarray, tp: np.ndarray, n_gt: int,
                    thresholds: np.ndarray = SWEEP_THRESHOLDS) -> dict:
    """Precision, recall and F1 of ``score >= t`` for each t in ``thresholds``, and the best F1
    over every distinct score (``best``: the threshold is the lowest score kept)."""
    pts = [operating_point(scores, tp, n_gt, float(t)) for t in thresholds]
    out = {"thresholds": [float(t) for t in thresholds],
           "precision": [p["precision"] for p in pts], "recall": [p["recall"] for p in pts],
           "f1": [p["f1"] for p in pts]}
    out["best"] = best_f1(scores, tp, n_gt)
    return out


def best_f1(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> dict:
    """The best F1 of ``score >= t`` over every distinct score t: ``threshold`` (the lowest
    score kept), ``precision``, ``recall``, ``f1`` and ``rounded``: the shortest decimal (at
    most 6 places) that keeps exactly the same detections, for storing as a model's threshold
    (above the next lower score, at most ``threshold``). All NaN when nothing is found."""
    best = {"threshold": float("nan"), "precision": float("nan"), "recall": float("nan"), "f1": float("nan"),
            "rounded": float("nan")}
    if len(scores) and n_gt:
        order = np.argsort(-scores, kind="mergesort")
        s, t = np.asarray(scores, np.float64)[order], tp[order]
        ctp, cfp = np.cumsum(t), np.cumsum(~t)
        last = np.r_[s[1:] != s[:-1], True]  # end of each group of tied scores
        f1 = np.where(last, 2 * ctp / (ctp + cfp + n_gt), -1.0)
        k = int(np.argmax(f1))
        if ctp[k] > 0:  # else nothing is found at any threshold: no best threshold
            best = {"threshold": float(s[k]), "precision": float(ctp[k] / (k + 1)),
                    "recall": float(ctp[k] / n_gt), "f1": float(f1[k]),
                    "rounded": _short_between(float(s[k]), float(s[k + 1]) if k + 1 < len(s) else 0.0)}
    return best


def _short_between(hi: float, lo: float) -> float:
    """The shortest decimal t (at most 6 places) with ``lo < t <= hi``; ``hi`` if none."""
    for places in range(1, 7):
        t = math.floor(hi * 10 ** places) / 10 ** places
        if lo < t <= hi:
            return t
    return hi


def confusions(im: ImageEval, m: ImageMatch, threshold, iou: float = 0.5):
    """Class confusions of one image at ``score >= threshold`` (one number, or (K,) per class,
    as in :func:`operating_point`): each detection without a
    same-class match, highest score first, takes the still unclaimed ground truth *of another
    class* with the highest IoU >= ``iou``. Returns ``(det_other, gt_other)``: (D,) index of
    the other-class ground truth each detection took, (G,) index of the detection that took
    each ground truth; -1 for none."""
    labels, gl, scores = np.asarray(im.labels), np.asarray(im.gt_labels), np.asarray(im.scores)
    keep = above_threshold(scores, labels, threshold) & (m.det_gt != -2)
    det_other = np.full(len(labels), -1, np.int64)
    gt_other = np.full(len(gl), -1, np.int64)
    found = np.zeros(len(gl), bool)
    tp = keep & (m.det_gt >= 0)
    found[m.det_gt[tp]] = True
    rest = np.flatnonzero(keep & (m.det_gt < 0))
    rest = rest[np.argsort(-scores[rest], kind="mergesort")]
    if len(rest) and (~found).any():
        for k, js, vs in _candidate_pairs(np.asarray(im.boxes)[rest], np.asarray(im.gt_boxes), iou):
            d = rest[k]
            free = ~found[js] & (gl[js] != labels[d])
            if free.any():
                j = js[free][int(np.argmax(vs[free]))]
                found[j] = True
                det_other[d], gt_other[j] = j, d
    return det_other, gt_other


def confusion_matrix(images: list[ImageEval], matches: list[ImageMatch], num_classes: int,
                     threshold, iou: float = 0.5) -> np.ndarray:
    """(C + 1, C + 1) counts at ``score >= threshold`` (one number or (K,) per class): rows are the truth, columns the
    prediction; index C is background.

    Diagonal: same-class matches (the TPs of :func:`operating_point`). Off the diagonal: class
    confusions (see :func:`confusions`). Detections still unmatched are false alarms (row
    background); ground truth still unmatched are misses (column background). Row sums are the
    ground-truth counts, column sums the counts of detections above the threshold.
    """
    C = num_classes
    cm = np.zeros((C + 1, C + 1), np.int64)
    for im, m in zip(images, matches):
        labels, gl = np.asarray(im.labels), np.asarray(im.gt_labels)
        keep = above_threshold(im.scores, labels, threshold) & (m.det_gt != -2)
        det_other, gt_other = confusions(im, m, threshold, iou)
        tp = keep & (m.det_gt >= 0)
        np.add.at(cm, (labels[tp], labels[tp]), 1)
        conf = det_other >= 0
        np.add.at(cm, (gl[det_other[conf]], labels[conf]), 1)
        alarm = keep & (m.det_gt < 0) & ~conf
        np.add.at(cm, (np.full(int(alarm.sum()), C), labels[alarm]), 1)
        found = np.zeros(len(gl), bool)
        found[m.det_gt[tp]] = True
        missed = ~found & (gt_other < 0)
        np.add.at(cm, (gl[missed], np.full(int(missed.sum()), C)), 1)
    return cm


def evaluate_full(images: list[ImageEval], classes, *, threshold: float, class_thresholds=None,
                  max_dets: int | None = 100) -> dict:
    """:func:`evaluate_detections` plus, at IoU 0.5: ``threshold``, ``operating`` (micro
    precision/recall/F1/TP/FP/FN over all classes at ``score >= threshold``), per-class
    ``threshold``, ``precision``, ``recall``, ``f1``, ``tp``, ``fp``, ``fn`` and ``best_f1`` (the class's own
    best F1 over its scores, :func:`best_f1`) added to ``per_class``, ``sweep``
    (micro, see :func:`threshold_sweep`), ``pr_curves`` ({class: 101 interpolated precisions
    at ``recall_points``}) and ``confusion`` ({"labels": classes + background, "matrix"}).

    ``class_thresholds`` ((K,), in ``classes`` order; None: ``threshold`` for every class): the
    operating point of each class is read at its own threshold, as the runner keeps detections
    (:meth:`detector.spec.ModelSpec.thresholds`); ``operating`` and ``confusion`` pool the
    classes at their thresholds and ``class_thresholds`` ({class: threshold}) is added. The
    sweep stays one threshold for every class."""
    classes = list(classes)
    m = evaluate_detections(images, classes, max_dets=max_dets)
    matches = match_images(images, len(classes), 0.5, max_dets)
    thr = np.full(len(classes), float(threshold)) if class_thresholds is None else \
        np.asarray(class_thresholds, np.float64)
    if thr.shape != (len(classes),):
        raise ValueError(f"class_thresholds: expected {len(classes)} numbers (one per class {classes}), "
                         f"got {list(np.ravel(class_thresholds))}")
    pooled_s, pooled_t, pooled_l, pooled_n = [], [], [], 0
    curves = {}
    for c, name in enumerate(classes):
        s, t, n = class_scores(images, matches, c)
        pooled_s.append(s)
        pooled_t.append(t)
        pooled_l.append(np.full(len(s), c, np.int64))
        pooled_n += n
        m["per_class"][name]["threshold"] = float(thr[c])
        m["per_class"][name].update(operating_point(s, t, n, thr[c]))
        m["per_class"][name]["best_f1"] = best_f1(s, t, n)
        _, _, prec, rec = average_precision(s, t, n)
        curves[name] = [float(v) for v in interpolated_precision(prec, rec)] if n else []
    s, t, lab = np.concatenate(pooled_s), np.concatenate(pooled_t), np.concatenate(pooled_l)
    m["threshold"] = float(threshold)
    if class_thresholds is not None:
        m["class_thresholds"] = dict(zip(classes, (float(v) for v in thr)))
    m["operating"] = operating_point(s, t, pooled_n, thr, lab)
    m["sweep"] = threshold_sweep(s, t, pooled_n)
    m["pr_curves"] = {"recall_points": [float(r) for r in RECALL_POINTS], "precision": curves}
    m["confusion"] = {"labels": classes + [BACKGROUND],
                      "matrix": confusion_matrix(images, matches, len(classes), thr).tolist()}
    return m


def operating_rule(m: dict, fmt: str = ".3f") -> str:
    """The operating point of an :func:`evaluate_full` dict in words: ``score >= 0.560``, or
    ``score >= the class's threshold (bunker 0.31, ...)`` when it was read per class."""
    ct = m.get("class_thresholds")
    if ct:
        return "score >= the class's threshold (" + ", ".join(f"{c} {format(t, fmt)}" for c, t in ct.items()) + ")"
    return f"score >= {format(m['threshold'], fmt)}"


def format_value(v, fmt: str = ".4f", na: str = "n/a") -> str:
    """A metric for text and tables: ``na`` for None/NaN/inf, counts as integers (signed when
    ``fmt`` starts with ``+``), everything else with ``fmt``."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return na
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):  # counts stay counts
        return format(int(v), "+d" if fmt.startswith("+") else "d")
    return format(v, fmt)
