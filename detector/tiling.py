"""Windows over a scene and merging of detections across their overlaps. Torch-free.

Window rule: windows are ``tile`` pixels square, stepped by ``tile - overlap``; the last row
and column are shifted inward so every window lies inside the raster (no padding) unless the
raster is smaller than one tile, in which case the single window is padded past the edge.

Merge rule (objects cut by a window edge): a detection touching an *interior* window edge
(one that is not the raster's edge) is marked truncated. Across windows, duplicates are
suppressed greedily per class, preferring untruncated detections, then higher scores; two
detections from different windows are duplicates when their IoU exceeds ``iou`` or when the
smaller one lies mostly (``containment``) inside the larger one (a cut-off piece of the same
object). An object no larger than the overlap is seen whole in at least one window, so it is
reported exactly once, with its whole-object box.
"""
from __future__ import annotations

import numpy as np


def window_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis covering ``[0, length)`` with windows of ``tile`` pixels."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def scene_windows(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(col_off, row_off) of each window, row-major."""
    return [(c, r) for r in window_starts(height, tile, overlap) for c in window_starts(width, tile, overlap)]


def truncated_mask(boxes: np.ndarray, col: int, row: int, tile: int, width: int, height: int,
                   margin: float = 2.0) -> np.ndarray:
    """(N,) bool: box (scene pixels) touches an edge of window (col, row) that is inside the scene."""
    x1, y1, x2, y2 = boxes.T if len(boxes) else (np.zeros(0),) * 4
    t = np.zeros(len(boxes), bool)
    if col > 0:
        t |= x1 <= col + margin
    if row > 0:
        t |= y1 <= row + margin
    if col + tile < width:
        t |= x2 >= col + tile - margin
    if row + tile < height:
        t |= y2 >= row + tile - margin
    return t


def valid_fraction(boxes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N,) share of each box's pixels that are valid (not nodata, not padding).

    boxes: (N, 4) xyxy in the pixels of ``valid`` (H, W) bool; a pixel counts when its centre
    lies in the box; boxes are clipped to the mask, and a box covering no pixel gets 0.
    """
    if len(boxes) == 0:
        return np.zeros(0, np.float64)
    h, w = valid.shape
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(valid, axis=0, dtype=np.int64), axis=1)
    # pixel i covers [i, i + 1): it is in the box when x1 <= i + 0.5 < x2
    x1 = np.clip(np.ceil(boxes[:, 0] - 0.5), 0, w).astype(int)
    x2 = np.clip(np.ceil(boxes[:, 2] - 0.5), 0, w).astype(int)
    y1 = np.clip(np.ceil(boxes[:, 1] - 0.5), 0, h).astype(int)
    y2 = np.clip(np.ceil(boxes[:, 3] - 0.5), 0, h).astype(int)
    x2, y2 = np.maximum(x2, x1), np.maximum(y2, y1)
    n = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
    area = (x2 - x1) * (y2 - y1)
    return np.where(area > 0, n / np.maximum(area, 1), 0.0)


def box_area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def pairwise_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection areas of boxes a (N, 4) and b (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes."""
    inter = pairwise_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def merge_windows(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, window_ids: np.ndarray,
                  truncated: np.ndarray, *, iou: float = 0.5, containment: float = 0.7) -> np.ndarray:
    """Indices of detections kept after merging across windows (see the module's merge rule).

    All arrays are over N detections in scene pixels; ``window_ids`` (N,) says which window
    each came from. Returns kept indices, highest priority first.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((-scores, truncated))  # untruncated first, then by score
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    keep: list[int] = []
    suppressed = np.zeros(n, bool)
    areas = box_area(boxes)
    # Overlapping boxes have centres closer than the largest box: bucket centres on a grid of
    # that cell size and compare each box only with the 3 x 3 cells around it.
    cell = max(float(np.max(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))), 1.0)
    cx = np.floor((boxes[:, 0] + boxes[:, 2]) / 2 / cell).astype(np.int64)
    cy = np.floor((boxes[:, 1] + boxes[:, 3]) / 2 / cell).astype(np.int64)
    buckets: dict[tuple[int, int], list[int]] = {}
    for i in range(n):
        buckets.setdefault((int(cx[i]), int(cy[i])), []).append(i)
    buckets_np = {k: np.asarray(v, np.int64) for k, v in buckets.items()}
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        near = [buckets_np[k] for k in ((cx[i] + dx, cy[i] + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1))
                if k in buckets_np]
        rest = np.concatenate(near)
        rest = rest[(rank[rest] > rank[i]) & (~suppressed[rest]) & (labels[rest] == labels[i])
                    & (window_ids[rest] != window_ids[i])]
        if len(rest) == 0:
            continue
        inter = pairwise_intersection(boxes[i:i + 1], boxes[rest])[0]
        union = areas[i] + areas[rest] - inter
        ious = inter / np.maximum(union, 1e-12)
        contained = inter / np.maximum(np.minimum(areas[i], areas[rest]), 1e-12)
        suppressed[rest[(ious > iou) | (contained > containment)]] = True
    return np.asarray(keep, np.int64)
