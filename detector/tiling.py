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
reported exactly once, with its whole-object box. Then fragments that survive (pieces inside
a whole box of the same window, collinear parts of a long shelter at IoU 0.25-0.5) are joined
into one box per object (:func:`join_fragments`).
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


def window_count(width: int, height: int, tile: int, overlap: int) -> int:
    """How many windows :func:`scene_windows` gives, without building the list (a header can
    claim 10^6 x 10^6 pixels)."""
    return len(window_starts(width, tile, overlap)) * len(window_starts(height, tile, overlap))


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


def join_fragments(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, *, min_score=0.0,
                   containment: float = 0.7, along: float = 0.25, across: float = 0.8, elongation: float = 2.0,
                   max_rounds: int = 8):
    """One box per object: join same-class boxes that are parts of one object.

    Runs after the per-window NMS and :func:`merge_windows`, on the scene's detections (boxes
    (N, 4) xyxy scene pixels, scores (N,), labels (N,)). Two boxes of one class are parts of
    one object when

    - the smaller lies mostly (``containment`` of its area) inside the larger: the larger box
      is kept, with the higher of the two scores; or
    - they are collinear fragments of an elongated object, end to end along x (or y): they
      overlap along that axis by at least ``along`` of the shorter one's length, their extents
      across it agree (the overlap is at least ``across`` of the thinner one's width), and
      their union is elongated along it (length / width at least ``elongation``): their
      union, with the higher score.

    Distinct objects side by side are offset across the joining axis, and distinct compact
    objects that touch make no elongated union, so they stay apart. Repeats until nothing
    joins (at most ``max_rounds``). Only boxes scoring at least ``min_score`` (the operating
    threshold: a number, or (N,) one per box, e.g. its class's) take part: weaker candidates of a high-recall pass are returned as the model
    gave them, and never reshape a confident box. Returns ``(boxes, scores, labels, source, joined)``: the new
    arrays sorted by score, ``source`` (N',) the input index of each output's highest-scoring
    part and ``joined`` (N',) how many input boxes each output box stands for.
    """
    b_all = np.asarray(boxes, np.float64).reshape(-1, 4)
    s_all = np.asarray(scores, np.float64)
    lab_all = np.asarray(labels)
    weak = np.where(s_all < min_score)[0]
    strong = np.where(s_all >= min_score)[0]
    b, s, lab = b_all[strong].copy(), s_all[strong].copy(), lab_all[strong].copy()
    count = np.ones(len(b), np.int64)
    src = strong.copy()
    for _ in range(max_rounds):
        if len(b) < 2:
            break
        order = np.argsort(-s, kind="stable")
        b, s, lab, count, src = b[order], s[order], lab[order], count[order], src[order]
        i, j = _touching_pairs(b)
        keep = lab[i] == lab[j]
        i, j = i[keep], j[keep]
        bi, bj = b[i], b[j]
        area = box_area(b)
        ox = np.minimum(bi[:, 2], bj[:, 2]) - np.maximum(bi[:, 0], bj[:, 0])
        oy = np.minimum(bi[:, 3], bj[:, 3]) - np.maximum(bi[:, 1], bj[:, 1])
        ux = np.maximum(bi[:, 2], bj[:, 2]) - np.minimum(bi[:, 0], bj[:, 0])
        uy = np.maximum(bi[:, 3], bj[:, 3]) - np.minimum(bi[:, 1], bj[:, 1])
        min_w = np.maximum(np.minimum(bi[:, 2] - bi[:, 0], bj[:, 2] - bj[:, 0]), 1e-12)
        min_h = np.maximum(np.minimum(bi[:, 3] - bi[:, 1], bj[:, 3] - bj[:, 1]), 1e-12)
        inter = np.clip(ox, 0, None) * np.clip(oy, 0, None)
        contained = inter / np.maximum(np.minimum(area[i], area[j]), 1e-12) > containment
        in_x = (ox >= along * min_w) & (oy >= across * min_h) & (ux >= elongation * uy)
        in_y = (oy >= along * min_h) & (ox >= across * min_w) & (uy >= elongation * ux)
        part = contained | in_x | in_y
        if not part.any():
            break
        parts: dict[int, list[tuple[int, bool]]] = {}
        for a_, b_, c_ in zip(i[part], j[part], contained[part]):  # a_ < b_: a_ scores higher
            parts.setdefault(int(a_), []).append((int(b_), bool(c_)))
        used = np.zeros(len(b), bool)
        nb, ns, nl, nc, ni = [], [], [], [], []
        for k in range(len(b)):  # highest score first: each box absorbs its unused parts
            if used[k]:
                continue
            used[k] = True
            box, n = b[k].copy(), count[k]
            for m, inside in parts.get(k, ()):
                if used[m]:
                    continue
                used[m] = True
                if inside:  # one lies in the other: keep the larger box
                    if area[m] > box_area(box):
                        box = b[m].copy()
                else:
                    box = np.array([min(box[0], b[m, 0]), min(box[1], b[m, 1]),
                                    max(box[2], b[m, 2]), max(box[3], b[m, 3])])
                n += count[m]
            nb.append(box), ns.append(s[k]), nl.append(lab[k]), nc.append(n), ni.append(src[k])
        b, s, lab = np.array(nb), np.array(ns), np.array(nl)
        count, src = np.array(nc, np.int64), np.array(ni, np.int64)
    b = np.concatenate([b.reshape(-1, 4), b_all[weak]])
    s, lab = np.concatenate([s, s_all[weak]]), np.concatenate([lab, lab_all[weak]])
    src, count = np.concatenate([src, weak]), np.concatenate([count, np.ones(len(weak), np.int64)])
    order = np.argsort(-s, kind="stable")
    return (b[order].astype(np.float32), s[order].astype(np.float32), lab[order].astype(np.int64),
            src[order], count[order])


def one_class_per_ground(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray | None = None, *,
                         iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One class per object: greedy NMS across classes. ``boxes`` (N, 4) xyxy in any unit
    (pixels, metres), ``scores`` (N,). Of boxes overlapping at IoU >= ``iou``, whatever their
    class, the best-scoring is kept and the others dropped (a detector often reports one
    structure as two classes: 0.87 shelter, 0.3 bunker). Returns ``(keep, runner_up)``: the
    kept indices, ascending, and (len(keep),) the index of the best-scoring box each kept box
    dropped whose class (``labels``; None: any box) differs from its own, -1 where none."""
    n = len(scores)
    keep_all = np.ones(n, bool)
    runner = np.full(n, -1, np.int64)
    i, j = _touching_pairs(np.asarray(boxes, np.float64).reshape(-1, 4))
    if len(i):
        b = np.asarray(boxes, np.float64)
        over = box_iou_pairs(b[i], b[j]) >= iou
        i, j = i[over], j[over]
        order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        strong, weak = np.where(rank[i] < rank[j], i, j), np.where(rank[i] < rank[j], j, i)
        # strongest first (then by the weak one's rank), so a box dropped before it can drop
        # others suppresses nothing, and each kept box's first other-class victim is its runner-up
        for k in np.lexsort((rank[weak], rank[strong])).tolist():
            s, w = int(strong[k]), int(weak[k])
            if keep_all[s] and keep_all[w]:
                keep_all[w] = False
                if runner[s] < 0 and (labels is None or labels[w] != labels[s]):
                    runner[s] = w
    keep = np.flatnonzero(keep_all)
    return keep, runner[keep]


def box_iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) IoU of ``a[k]`` with ``b[k]``, both (N, 4) xyxy."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    return inter / np.maximum(box_area(a) + box_area(b) - inter, 1e-9)


def _touching_pairs(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) with i < j of the xyxy boxes ``b`` (N, 4) that intersect (positive area).

    Boxes that intersect have centres closer (per axis) than the largest box side, so only
    pairs a k-d tree finds within that Chebyshev distance are tested: memory grows with the
    number of neighbours, not with N squared."""
    from scipy.spatial import cKDTree

    if len(b) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    centres = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)
    reach = float(np.max(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])))
    pairs = cKDTree(centres).query_pairs(max(reach, 1e-6), p=np.inf, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, j = pairs.min(axis=1), pairs.max(axis=1)
    ox = np.minimum(b[i, 2], b[j, 2]) - np.maximum(b[i, 0], b[j, 0])
    oy = np.minimum(b[i, 3], b[j, 3]) - np.maximum(b[i, 1], b[j, 1])
    hit = (ox > 0) & (oy > 0)
    order = np.lexsort((j[hit], i[hit]))
    return i[hit][order].astype(np.int64), j[hit][order].astype(np.int64)
