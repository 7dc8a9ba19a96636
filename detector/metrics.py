"""COCO-style detection metrics in numpy. Torch-free.

Follows the COCO evaluation protocol (pycocotools ``COCOeval``, bbox, area "all",
maxDets 100): per class and IoU threshold, detections sorted by score are greedily matched to
the unmatched ground truth of highest IoU in the same image; precision is made monotone and
sampled at 101 recall points. A class with no ground truth is left out of the mean (as COCO
does). Boxes are ``x1, y1, x2, y2`` pixels. IoU here uses continuous areas (COCO's ``+0``
convention for bbox), so results match pycocotools to rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.tiling import box_iou

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)
RECALL_POINTS = np.linspace(0, 1, 101)


@dataclass
class ImageEval:
    """Ground truth and detections of one image (pixels, xyxy)."""

    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def _match(images: list[ImageEval], cls: int, thr: float, max_dets: int):
    """-> (scores, is_tp) of all detections of ``cls`` over images, and the number of GT."""
    all_scores, all_tp, n_gt = [], [], 0
    for im in images:
        g = im.gt_boxes[im.gt_labels == cls]
        m = im.labels == cls
        d, s = im.boxes[m], im.scores[m]
        order = np.argsort(-s, kind="mergesort")[:max_dets]
        d, s = d[order], s[order]
        n_gt += len(g)
        tp = np.zeros(len(d), bool)
        if len(g) and len(d):
            ious = box_iou(d, g)
            taken = np.zeros(len(g), bool)
            for i in range(len(d)):
                cand = np.where(taken, -1.0, ious[i])
                j = int(np.argmax(cand))
                if cand[j] >= thr:
                    taken[j] = True
                    tp[i] = True
        all_scores.append(s)
        all_tp.append(tp)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tps = np.concatenate(all_tp) if all_tp else np.zeros(0, bool)
    return scores, tps, n_gt


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
    # Monotone envelope, then sample at the recall points.
    env = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.array([env[i] if i < len(env) else 0.0 for i in idx])
    return float(sampled.mean()), float(recall[-1]) if len(recall) else 0.0, precision, recall


def evaluate_detections(images: list[ImageEval], classes, *, max_dets: int = 100) -> dict:
    """mAP@0.5, mAP@0.5:0.95, per-class AP@0.5 and AP@0.5:0.95, and recall@0.5 per class."""
    per_class = {}
    ap50s, aps = [], []
    for c, name in enumerate(classes):
        row = []
        rec50 = float("nan")
        for thr in IOU_THRESHOLDS:
            s, tp, n = _match(images, c, float(thr), max_dets)
            ap, rec, _, _ = average_precision(s, tp, n)
            row.append(ap)
            if thr == 0.5:
                rec50 = rec
        n_gt = int(sum((im.gt_labels == c).sum() for im in images))
        per_class[name] = {"AP50": row[0], "AP": float(np.mean(row)) if n_gt else float("nan"),
                           "recall50": rec50, "num_gt": n_gt}
        if n_gt:
            ap50s.append(row[0])
            aps.append(float(np.mean(row)))
    return {
        "mAP50": float(np.mean(ap50s)) if ap50s else float("nan"),
        "mAP50_95": float(np.mean(aps)) if aps else float("nan"),
        "per_class": per_class,
        "num_images": len(images),
    }
