"""pycocotools run on in-memory ground truth and detections: the independent reference our
numpy metrics are checked against (shared by test_metrics.py and test_evaluate.py)."""
import contextlib
import io

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def pycoco_eval(images, classes, max_dets=100):
    gt = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    dets = []
    for i, im in enumerate(images):
        gt["images"].append({"id": i + 1, "width": 4096, "height": 4096})
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
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate(); ev.accumulate(); ev.summarize()
    return ev
