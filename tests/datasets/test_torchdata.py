import numpy as np
import pytest

pytest.importorskip("torch")

from detector.datasets.labels import ImageRecord, LabelSet  # noqa: E402
from detector.datasets.torchdata import DetectionDataset, balanced_weights  # noqa: E402
from detector.spec import ModelSpec  # noqa: E402


def _set():
    box = [[0, 0, 10, 10]]
    ims = [ImageRecord(f"c{i}.tif", 64, 64, box, [0]) for i in range(8)]   # common class
    ims += [ImageRecord("rare.tif", 64, 64, box * 2, [0, 1])]               # holds the rare class
    ims += [ImageRecord("empty.tif", 64, 64)]
    return LabelSet(["common", "rare"], ims)


def test_balanced_weights_favour_rare_classes_and_keep_negatives():
    w = balanced_weights(_set())
    assert w.sum() == pytest.approx(1.0)
    assert w[8] == pytest.approx(9 * w[0])         # 9 "common" objects vs 1 "rare" one
    assert w[9] == pytest.approx(np.mean(w[:9]))   # empty image: the mean weight


def test_object_biased_crop_keeps_the_chosen_object_whole():
    spec = ModelSpec()
    ds = DetectionDataset(LabelSet(list(spec.classes), []), spec, crop=128, object_bias=1.0)
    img = np.zeros((512, 512, 3), np.uint8)
    valid = np.ones((512, 512), bool)
    boxes = np.array([[300, 310, 360, 350]], np.float32)
    for seed in range(20):
        out, v, b, l = ds.random_crop(img, valid, boxes, np.array([1]), np.random.default_rng(seed))
        assert out.shape == (128, 128, 3) and v.shape == (128, 128)
        assert len(b) == 1 and b[0, 2] - b[0, 0] == 60 and b[0, 3] - b[0, 1] == 40  # whole, not clipped
