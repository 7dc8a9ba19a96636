import numpy as np
import pytest

pytest.importorskip("torch")

from detector.labels import ImageRecord, LabelSet  # noqa: E402
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


def test_tiles_are_read_at_the_spec_pixel_size_with_boxes_scaled(tmp_path):
    """A 1.0 m tile seen by a 0.5 m model is upsampled 2x, its boxes with it (as the runner
    resamples scenes); a tile already at 0.5 m is read as stored."""
    from rasterio.transform import Affine

    from detector.datasets.synth import write_geotiff

    img = np.zeros((100, 100, 3), np.uint8)
    img[20:40, 30:60] = 200                          # the object: x 30-60, y 20-40 at 1 m
    write_geotiff(tmp_path / "coarse.tif", img, Affine(1.0, 0, 500000, 0, -1.0, 4000000))
    write_geotiff(tmp_path / "native.tif", img, Affine(0.5, 0, 500000, 0, -0.5, 4000000))
    spec = ModelSpec(gsd=0.5)
    box = [[30, 20, 60, 40]]
    labels = LabelSet(list(spec.classes), [ImageRecord(str(tmp_path / "coarse.tif"), 100, 100, box, [0]),
                                           ImageRecord(str(tmp_path / "native.tif"), 100, 100, box, [0])])
    ds = DetectionDataset(labels, spec)
    unit, boxes, _ = ds.load(0)
    assert unit.shape == (200, 200, 3)
    np.testing.assert_allclose(boxes, [[60, 40, 120, 80]])
    bright = np.argwhere(unit[..., 0] > 0.5)          # the object moved with its box
    assert bright[:, 0].min() >= 38 and bright[:, 0].max() <= 81
    assert bright[:, 1].min() >= 58 and bright[:, 1].max() <= 121
    unit, boxes, _ = ds.load(1)
    assert unit.shape == (100, 100, 3)
    np.testing.assert_allclose(boxes, box)
