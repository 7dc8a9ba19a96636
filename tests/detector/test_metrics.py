"""Our numpy COCO metrics against pycocotools on the same random detections."""
import contextlib
import io

import numpy as np
import pytest

from detector.metrics import ImageEval, evaluate_detections

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


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


def _pycoco(images, classes):
    gt = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    dets = []
    for i, im in enumerate(images):
        gt["images"].append({"id": i + 1, "width": 512, "height": 512})
        for b, l in zip(im.gt_boxes, im.gt_labels):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": int(l) + 1,
                                      "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": 0})
        for b, s, l in zip(im.boxes, im.scores, im.labels):
            dets.append({"image_id": i + 1, "category_id": int(l) + 1, "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate(); ev.accumulate(); ev.summarize()
    per_class = []
    for k in range(len(classes)):
        p = ev.eval["precision"][0, :, k, 0, 2]
        per_class.append(float(np.mean(p[p > -1])) if (p > -1).any() else float("nan"))
    return ev.stats[1], ev.stats[0], per_class


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
