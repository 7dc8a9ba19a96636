"""Our numpy COCO metrics against pycocotools on the same random detections."""

import numpy as np
import pytest

from detector.metrics import ImageEval, evaluate_detections, evaluate_full

pycocotools = pytest.importorskip("pycocotools")
from pycoco_ref import pycoco_eval  # noqa: E402


def _random_case(rng, n_images=25, classes=3):
    images = []
    for _ in range(n_images):
        n = rng.integers(0, 6)
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(8, 90, (n, 2))
        gt = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        gl = rng.integers(0, classes, n)
        # detections: jittered copies of some GT, plus false positives
        keep = rng.random(n) < 0.8
        jit = gt[keep] + rng.normal(0, 6, (keep.sum(), 4)).astype(np.float32)
        fp_xy = rng.uniform(0, 400, (rng.integers(0, 4), 2))
        fp = np.concatenate([fp_xy, fp_xy + rng.uniform(8, 60, (len(fp_xy), 2))], 1).astype(np.float32)
        boxes = np.concatenate([jit, fp])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.concatenate([gl[keep], rng.integers(0, classes, len(fp))])
        flip = rng.random(len(labels)) < 0.1
        labels[flip] = rng.integers(0, classes, flip.sum())
        scores = rng.random(len(boxes)).astype(np.float32)
        images.append(ImageEval(gt, gl, boxes, scores, labels))
    return images


def _pycoco(images, classes, max_dets=100):
    ev = pycoco_eval(images, classes, max_dets)
    per_class = []
    for k in range(len(classes)):
        p = ev.eval["precision"][0, :, k, 0, 2]
        per_class.append(float(np.mean(p[p > -1])) if (p > -1).any() else float("nan"))
    # from COCO's precision array (IoU, recall, class, area all, last maxDets), as summarize()
    # does, so that a maxDets other than 100 works too
    pr = ev.eval["precision"][:, :, :, 0, 2]
    return float(np.mean(pr[0][pr[0] > -1])), float(np.mean(pr[pr > -1])), per_class


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocotools(seed):
    classes = ["bunker", "revetment", "shelter"]
    images = _random_case(np.random.default_rng(seed))
    ours = evaluate_detections(images, classes)
    map50, map5095, per_class = _pycoco(images, classes)
    assert ours["mAP50"] == pytest.approx(map50, abs=1e-3)
    assert ours["mAP50_95"] == pytest.approx(map5095, abs=1e-3)
    for c, ap in zip(classes, per_class):
        assert ours["per_class"][c]["AP50"] == pytest.approx(ap, abs=1e-3)


def test_perfect_and_empty():
    gt = np.array([[10, 10, 50, 50]], np.float32)
    im = ImageEval(gt, np.array([0]), gt.copy(), np.array([0.9], np.float32), np.array([0]))
    m = evaluate_detections([im], ["a", "b"])
    assert m["mAP50"] == pytest.approx(1.0) and np.isnan(m["per_class"]["b"]["AP50"])
    miss = ImageEval(gt, np.array([0]), np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert evaluate_detections([miss], ["a"])["mAP50"] == 0.0


def _coco_counts(ev, k, thr):
    """TP, FP, number of GT of category index k at IoU 0.5 from COCO's own per-image matches."""
    tp = fp = n_gt = 0
    cat = ev.params.catIds[k]
    for e in ev.evalImgs:
        if e is None or e["category_id"] != cat or e["aRng"] != ev.params.areaRng[0]:
            continue
        s = np.asarray(e["dtScores"])
        m = np.asarray(e["dtMatches"])[0] > 0
        ign = np.asarray(e["dtIgnore"])[0].astype(bool)
        sel = (s >= thr) & ~ign
        tp += int((m & sel).sum())
        fp += int((~m & sel).sum())
        n_gt += int((~np.asarray(e["gtIgnore"]).astype(bool)).sum())
    return tp, fp, n_gt


@pytest.mark.parametrize("seed,max_dets", [(0, 100), (1, 100), (3, 3), (4, 10000)])
def test_operating_point_sweep_and_curves_match_pycocotools(seed, max_dets):
    classes = ["bunker", "revetment", "shelter"]
    images = _random_case(np.random.default_rng(seed))
    if max_dets == 10000:  # one big "scene": every detection counts
        images = [_as_one_image(images)]
    ours = evaluate_full(images, classes, threshold=0.3, max_dets=max_dets)
    ev = pycoco_eval(images, classes, max_dets)
    tot = np.zeros(3, int)
    for k, c in enumerate(classes):
        tp, fp, n = _coco_counts(ev, k, 0.3)
        pc = ours["per_class"][c]
        assert (pc["tp"], pc["fp"], pc["fn"]) == (tp, fp, n - tp)
        assert pc["recall"] == pytest.approx(tp / n, abs=1e-3)
        assert pc["precision"] == pytest.approx(tp / (tp + fp), abs=1e-3)
        # COCO's recall array (IoU 0.5, area all, last maxDets) is the recall of all detections
        assert pc["recall50"] == pytest.approx(ev.eval["recall"][0, k, 0, 2], abs=1e-3)
        p = ev.eval["precision"][0, :, k, 0, 2]
        np.testing.assert_allclose(ours["pr_curves"]["precision"][c], p, atol=1e-3)
        tot += (tp, fp, n)
    tp, fp, n = tot
    op = ours["operating"]
    assert op["precision"] == pytest.approx(tp / (tp + fp), abs=1e-3)
    assert op["recall"] == pytest.approx(tp / n, abs=1e-3)
    assert op["f1"] == pytest.approx(2 * tp / (2 * tp + fp + (n - tp)), abs=1e-3)
    # the sweep at each threshold is COCO's matches counted above it
    sw = ours["sweep"]
    for i in range(0, 101, 10):
        t = sw["thresholds"][i]
        c = np.sum([_coco_counts(ev, k, t) for k in range(3)], axis=0)
        assert sw["recall"][i] == pytest.approx(c[0] / c[2], abs=1e-3)
        if c[0] + c[1]:
            assert sw["precision"][i] == pytest.approx(c[0] / (c[0] + c[1]), abs=1e-3)
    # best F1 is the maximum over every distinct score
    b = sw["best"]
    f1s = []
    for t in np.unique(np.concatenate([im.scores for im in images])):
        c = np.sum([_coco_counts(ev, k, t) for k in range(3)], axis=0)
        f1s.append(2 * c[0] / (c[0] + c[1] + c[2]))
    assert b["f1"] == pytest.approx(max(f1s), abs=1e-9)
    assert b["f1"] >= max(f for f in sw["f1"] if f == f) - 1e-12
    if max_dets == 10000:  # the scene case: mAP against COCO with no cap on detections
        map50, map5095, per_class = _pycoco(images, classes, max_dets)
        assert ours["mAP50"] == pytest.approx(map50, abs=1e-3)
        assert ours["mAP50_95"] == pytest.approx(map5095, abs=1e-3)


def _as_one_image(images):
    """Lay the images side by side into one wide image (a scene of many objects)."""
    cat = lambda xs: np.concatenate(xs) if xs else xs
    off = [np.array([600.0 * i, 0, 600.0 * i, 0], np.float32) for i in range(len(images))]
    return ImageEval(cat([im.gt_boxes + o for im, o in zip(images, off)]), cat([im.gt_labels for im in images]),
                     cat([im.boxes + o for im, o in zip(images, off)]), cat([im.scores for im in images]),
                     cat([im.labels for im in images]))


def test_confusion_matrix():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]], np.float32)
    gt_l = np.array([0, 0, 1, 1])
    # det 0: right class on gt 0; det 1: class 1 on gt 1 (class 0) -> confusion; det 2: below
    # threshold on gt 2; det 3: class 0 on empty ground -> false alarm. gt 3: missed.
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [90, 90, 99, 99]], np.float32)
    im = ImageEval(a, gt_l, boxes, np.array([0.9, 0.8, 0.1, 0.7], np.float32), np.array([0, 1, 1, 0]))
    m = evaluate_full([im], ["a", "b"], threshold=0.5)
    assert m["confusion"]["labels"] == ["a", "b", "background"]
    cm = np.array(m["confusion"]["matrix"])
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 0, 2], [1, 0, 0]])
    assert cm[:2].sum(1).tolist() == [2, 2]  # rows: every ground truth once
    assert m["per_class"]["a"]["tp"] == 1 and m["per_class"]["a"]["fp"] == 1
    assert m["per_class"]["b"]["fp"] == 1 and m["per_class"]["b"]["fn"] == 2
