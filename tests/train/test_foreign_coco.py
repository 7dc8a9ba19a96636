"""A COCO dataset Revet did not make: PNG images, arbitrary category ids, one class named
'tree'. Train, export, evaluate and predict must work on it without any conversion step."""
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")


def _make(tmp_path, n, seed):
    rng = np.random.default_rng(seed)
    (tmp_path / "img").mkdir(exist_ok=True)
    images, anns = [], []
    for i in range(n):
        img = rng.normal(90, 10, (200, 240, 3)).clip(0, 255)
        for _ in range(rng.integers(0, 3)):
            x, y = rng.integers(0, 180, 2)
            img[y:y + 30, x:x + 30] = (40, 160, 40)
            anns.append({"id": len(anns) + 100, "image_id": 1000 + i, "category_id": 17,
                         "bbox": [int(x), int(y), 30, 30], "area": 900, "iscrowd": 0})
        name = f"img/{seed}_{i}.png"
        Image.fromarray(img.astype(np.uint8)).save(tmp_path / name)
        images.append({"id": 1000 + i, "file_name": name, "width": 240, "height": 200})
    p = tmp_path / f"set{seed}.json"
    p.write_text(json.dumps({"images": images, "annotations": anns,
                             "categories": [{"id": 17, "name": "tree"}]}))
    return p


def test_png_single_class_dataset_end_to_end(tmp_path):
    from detector.cli import main
    from detector.backends import OnnxBackend

    train, val = _make(tmp_path, 8, 0), _make(tmp_path, 4, 1)
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"train: {train}\nval: {val}\ntile_size: 256\noverlap: 64\nnum_workers: 0\nwarmup_steps: 1\n")
    assert main(["train", "--config", str(cfg), "--out", str(run), "--epochs", "2", "--batch-size", "4"]) == 0
    assert main(["export", str(run / "best.ckpt"), "--out", str(tmp_path / "m.onnx")]) == 0
    spec = OnnxBackend(tmp_path / "m.onnx").spec
    assert spec.classes == ("tree",) and spec.tile_size == 256 and spec.gsd is None
    assert main(["evaluate", str(tmp_path / "m.onnx"), "--data", str(val), "--out", str(tmp_path / "e.json")]) == 0
    metrics = json.loads((tmp_path / "e.json").read_text())
    assert list(metrics["per_class"]) == ["tree"]
    assert main(["predict", str(tmp_path / "m.onnx"), str(tmp_path / "img"), "--out", str(tmp_path / "p.geojson"),
                 "--min-score", "0.0001"]) == 0
    fc = json.loads((tmp_path / "p.geojson").read_text())
    assert "crs_note" in fc or not fc["features"]  # PNGs have no CRS: pixel coordinates
    for f in fc["features"]:
        xs, ys = np.array(f["geometry"]["coordinates"][0]).T
        assert xs.min() >= 0 and xs.max() <= 240 and ys.min() >= 0 and ys.max() <= 200
