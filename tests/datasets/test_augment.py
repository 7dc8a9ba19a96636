"""Augmentation: box handling under any-angle rotation, any band count, config mapping."""
import albumentations as A
import numpy as np
import pytest

from detector.datasets.augment import OVERHEAD, SpectralJitter, from_config, train_transform


def object_image(c=3, size=128):
    img = np.full((size, size, c), 0.1, np.float32)
    img[54:66, 44:84] = 0.9  # a 40 x 12 object, centred
    return img, np.array([[44, 54, 84, 66]], np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_rotated_box_contains_rotated_object(seed):
    img, boxes = object_image()
    tf = train_transform(photometric=False, rotate=True)
    tf.set_random_seed(seed)
    out = tf(image=img, bboxes=boxes, labels=np.array([1]))
    assert len(out["bboxes"]) == 1 and list(out["labels"]) == [1]
    x1, y1, x2, y2 = out["bboxes"][0]
    ys, xs = np.nonzero(out["image"][..., 0] > 0.5)  # the object's pixels after the warp
    assert len(xs) > 200
    assert xs.min() >= x1 - 1 and xs.max() + 1 <= x2 + 1
    assert ys.min() >= y1 - 1 and ys.max() + 1 <= y2 + 1
    # and not absurdly loose: within 3 px of the bounds of the rotated corners
    assert (x2 - x1) <= (xs.max() + 1 - xs.min()) + 6 and (y2 - y1) <= (ys.max() + 1 - ys.min()) + 6


def test_rotation_actually_rotates_by_any_angle():
    img, boxes = object_image()
    tf = A.Compose([t for t in train_transform(photometric=False, rotate=True).transforms
                    if isinstance(t, A.Affine)],
                   bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]))
    tf.transforms[0].p = 1.0
    widths = set()
    for s in range(6):
        tf.set_random_seed(s)
        b = tf(image=img, bboxes=boxes, labels=[0])["bboxes"][0]
        widths.add(round(float(b[2] - b[0])))
    assert len(widths) >= 4  # not only 90-degree multiples (which give 40 or 12)


@pytest.mark.parametrize("c", [1, 2, 3, 4, 7])
def test_every_option_works_on_any_band_count(c):
    img, boxes = object_image(c)
    tf = train_transform(crop=96, **OVERHEAD)
    for s in range(4):
        tf.set_random_seed(s)
        out = tf(image=img, bboxes=boxes, labels=np.array([2]))
        o = out["image"]
        assert o.shape == (96, 96, c) and o.dtype == np.float32
        assert 0.0 <= o.min() and o.max() <= 1.0
        for x1, y1, x2, y2 in out["bboxes"]:
            assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96


def test_defaults_keep_the_training_pipeline():
    names = [type(t).__name__ for t in train_transform(crop=64).transforms]
    assert names == ["PadIfNeeded", "RandomCrop", "HorizontalFlip", "VerticalFlip",
                     "RandomRotate90", "RandomBrightnessContrast", "RandomGamma"]
    names = [type(t).__name__ for t in train_transform(photometric=False).transforms]
    assert names == ["HorizontalFlip", "VerticalFlip", "RandomRotate90"]


def test_spectral_jitter_keeps_grey_grey_and_changes_colour():
    op = SpectralJitter(hue=0.2, p=1.0)
    grey = np.full((4, 4, 3), 0.4, np.float32)
    out = op.apply(grey, angle=0.5, saturation=1.3, gains=np.ones(3, np.float32))
    np.testing.assert_allclose(out, grey, atol=1e-5)
    red = np.zeros((4, 4, 3), np.float32)
    red[..., 0] = 0.8
    out = op.apply(red, angle=0.5, saturation=1.0)
    assert out[0, 0, 1] > 0.05  # hue moved
    nir = np.full((2, 2, 4), 0.5, np.float32)
    out = op.apply(nir, gains=np.array([1.1, 0.9, 1.0, 1.2], np.float32))
    np.testing.assert_allclose(out[0, 0], [0.55, 0.45, 0.5, 0.6], atol=1e-6)


def test_from_config_validates_keys():
    tf = from_config({"rotate": 30, "scale": [0.9, 1.1], "blur": 0.5}, crop=64)
    names = [type(t).__name__ for t in tf.transforms]
    assert "Affine" in names and "GaussianBlur" in names and names[1] == "RandomCrop"
    with pytest.raises(ValueError, match=r"unknown augmentation option\(s\) \['rotation'\]"):
        from_config({"rotation": True})
    with pytest.raises(ValueError, match="'blur' is a probability"):
        from_config({"blur": 2})


def test_preview_draws_a_grid_with_boxes(tmp_path):
    import json

    import rasterio
    from PIL import Image

    from detector.datasets.data_cli import add_data_commands
    from detector.datasets.preview import preview

    for i, (count, dtype) in enumerate([(1, "uint16"), (4, "uint16"), (3, "uint8")]):
        with rasterio.open(tmp_path / f"{i}.tif", "w", driver="GTiff", width=80, height=60,
                           count=count, dtype=dtype) as d:
            d.write(np.random.default_rng(i).integers(0, 200, (count, 60, 80)).astype(dtype))
    coco = {"images": [{"id": i, "file_name": f"{i}.tif", "width": 80, "height": 60} for i in range(3)],
            "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [10, 10, 30, 20]}],
            "categories": [{"id": 1, "name": "bunker"}]}
    (tmp_path / "d.json").write_text(json.dumps(coco))
    out = preview(tmp_path / "d.json", tmp_path / "g.png", n=3, cols=2, size=64,
                  augment={"rotate": False})
    im = np.asarray(Image.open(out))
    assert im.shape == (2 * 64 + 20, 2 * 64, 3)
    from detector.display import class_colour

    red = (im[..., :3] == class_colour(0)).all(-1)
    assert red[:128].sum() > 20  # the box outline in the class colour (the one palette)
    import argparse
    p = argparse.ArgumentParser()
    add_data_commands(p.add_subparsers(dest="command"))
    a = p.parse_args(["data", "preview", str(tmp_path / "d.json"), "--out", str(tmp_path / "h.png"),
                      "--n", "2", "--augment", '{"blur": 0.5}'])
    assert a.func(a) == 0 and (tmp_path / "h.png").exists()


def test_importing_the_training_side_makes_no_network_call():
    """Offline promise (#15.11): albumentations' update check at import is switched off."""
    import subprocess
    import sys

    code = ("import os, socket, sys\n"
            "os.environ.pop('NO_ALBUMENTATIONS_UPDATE', None)\n"
            "calls = []\n"
            "real = socket.socket.connect\n"
            "def connect(self, addr):\n"
            "    calls.append(addr)\n"
            "    raise OSError('network blocked by the test')\n"
            "socket.socket.connect = connect\n"
            "socket.create_connection = lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(OSError('blocked'))\n"
            "import detector.datasets.augment, detector.train.fit\n"
            "import albumentations\n"
            "print(len(calls))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "0"
