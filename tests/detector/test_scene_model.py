"""The scene companion: the same network in larger windows (``X.scene.onnx`` beside ``X.onnx``),
used for a scene whenever its windows cover it with fewer scored pixels. Exact checks with the
transparent bright-squares backend of test_runner; loading checks with real ONNX files."""
import logging

import pytest

from detector.runner import Detector, check_scene_model, scene_model_path
from detector.spec import ModelSpec

pytest.importorskip("onnx")

from scoring_models import write_peak_model  # noqa: E402
from test_runner import SPEC, BrightSquares, _scene  # noqa: E402

BIG = ModelSpec(**{**SPEC.__dict__, "tile_size": 384, "max_detections": 180})


def test_companion_names_follow_the_export_variants(tmp_path):
    assert scene_model_path(tmp_path / "model.onnx") == tmp_path / "model.scene.onnx"
    assert scene_model_path("m.int8.onnx").name == "m.scene.int8.onnx"
    assert scene_model_path("m.fp16.onnx").name == "m.scene.fp16.onnx"
    for own in ("m.scene.onnx", "m.scene.int8.onnx", "m.ckpt", "m"):
        assert scene_model_path(own) is None


def test_a_companion_must_be_the_same_network_in_a_larger_window():
    check_scene_model(SPEC, BIG, "big.onnx")
    with pytest.raises(ValueError, match=r"big.onnx: scene model differs from the model in \['classes'\]"):
        check_scene_model(SPEC, ModelSpec(**{**BIG.__dict__, "classes": ("other",)}), "big.onnx")
    with pytest.raises(ValueError, match="not larger"):
        check_scene_model(SPEC, ModelSpec(**{**BIG.__dict__, "tile_size": 128}), "big.onnx")
    with pytest.raises(ValueError, match="other weights"):
        check_scene_model(SPEC, BIG, "big.onnx", {"weights_sha256": "a"}, {"weights_sha256": "b"})


def test_large_scenes_use_the_companion_with_the_same_detections(tmp_path):
    squares = [(115, 20, 30), (195, 195, 30), (20, 115, 30), (300, 40, 30), (50, 50, 30), (700, 650, 40),
               (340, 330, 30), (900, 100, 35)]  # some across the 384 px windows' edges (stride 336)
    path = _scene(tmp_path / "s.tif", squares, 1000)
    small, big = BrightSquares(SPEC), BrightSquares(BIG)
    with_scene = Detector(small, SPEC, scene=Detector(big, BIG))
    got = with_scene.predict_scene(path)
    scored = 9 - got.extra["skipped"]  # 3 x 3 windows of 384 px, less the flat ones the first pass skips
    assert got.extra["window"] == 384 and small.tiles == 0 and big.tiles == scored > 0
    ref = Detector(BrightSquares(SPEC), SPEC).predict_scene(path)
    assert ref.extra["window"] == 128 and ref.extra["windows"] == 144
    key = lambda d: sorted(map(tuple, d.boxes.round().astype(int).tolist()))
    assert key(got) == key(ref) == sorted((x, y, x + s, y + s) for x, y, s in squares)
    # a scene no larger than the tile: the tile model's windows score fewer pixels
    tiny = _scene(tmp_path / "t.tif", [(40, 40, 30)], 128)
    assert with_scene.predict_scene(tiny).extra["window"] == 128 and big.tiles == scored
    assert with_scene.for_grid(1000, 1000) is with_scene.scene and with_scene.for_grid(200, 200) is with_scene


def test_load_finds_the_companion_and_ignores_a_mismatched_one(tmp_path, caplog):
    write_peak_model(tmp_path / "m.onnx", tile=256, overlap=32)
    write_peak_model(tmp_path / "m.scene.onnx", tile=768, overlap=32, k=54)
    det = Detector.load(tmp_path / "m.onnx", device="cpu")
    assert det.scene is not None and det.scene.spec.tile_size == 768
    assert Detector.load(tmp_path / "m.scene.onnx", device="cpu").scene is None  # a companion has none
    write_peak_model(tmp_path / "m.scene.onnx", tile=768, overlap=64)
    with caplog.at_level(logging.WARNING, logger="revet.runner"):
        det = Detector.load(tmp_path / "m.onnx", device="cpu")
    assert det.scene is None and "differs from the model in ['overlap']" in caplog.text
