import pytest

from detector.spec import ModelSpec


def test_roundtrip_json():
    spec = ModelSpec(classes=("tree",), bands=(4, 3, 2, 1), dtype="uint16", offset=(1, 2, 3, 4),
                     scale=(10, 20, 30, 40), mean=(0.5,) * 4, std=(0.2,) * 4, gsd=0.3)
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert again.num_bands == 4 and again.classes == ("tree",)


@pytest.mark.parametrize("kwargs, message", [
    (dict(classes=()), "at least one class"),
    (dict(classes=("a", "a")), "duplicate"),
    (dict(bands=(1, 2)), "expected 2 values"),
    (dict(tile_size=256, overlap=256), "overlap < tile_size"),
    (dict(score_threshold=float("nan")), "score_threshold: expected a number in \\[0, 1\\]"),
    (dict(nms_iou=1.5), "nms_iou"),
])
def test_invalid_specs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec(**kwargs)


def test_unknown_field_and_future_version_named():
    with pytest.raises(ValueError, match=r"model.onnx: unknown model spec fields \['colour'\]"):
        ModelSpec.from_dict({"colour": 1}, source="model.onnx")
    with pytest.raises(ValueError, match="newer than this Revet"):
        ModelSpec.from_dict({"version": 99}, source="m")
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelSpec.from_json("{", source="m")
