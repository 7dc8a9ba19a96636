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


def test_spec_from_a_newer_revet_is_read_with_a_warning():
    """#15.9: unknown fields and a newer version are warned about and ignored, not refused."""
    with pytest.warns(UserWarning, match=r"model.onnx: .*fields \['colour'\] unknown here"):
        spec = ModelSpec.from_dict({**ModelSpec(classes=("a", "b")).to_dict(), "colour": 1, "version": 99},
                                   source="model.onnx")
    assert spec.classes == ("a", "b") and spec.version == ModelSpec().version
    with pytest.warns(UserWarning, match="version 99"):
        ModelSpec.from_dict({"version": 99}, source="m")
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelSpec.from_json("{", source="m")


@pytest.mark.parametrize("doc, message", [
    ({"tile_size": "512"}, "ModelSpec.tile_size: expected an integer, got '512'"),
    ({"version": "x"}, "model spec 'version' must be an integer, got 'x'"),
    ({"gsd": 1e-6}, r"ModelSpec.gsd: expected metres per pixel in \[0.01, 1000.0\]"),
    ({"bands": [0, 1, 2]}, "ModelSpec.bands: expected 1-based band numbers"),
    ({"mean": [0.5, "a", 0.5]}, "ModelSpec.mean: expected finite numbers"),
    (None, "model spec must be a JSON object, got None"),
    ([], r"model spec must be a JSON object, got \[\]"),
])
def test_malformed_specs_are_named(doc, message):
    """#15.11: wrong JSON types in a spec give one clear line naming the file."""
    with pytest.raises(ValueError, match=message) as e:
        ModelSpec.from_dict(doc, source="m.onnx")
    assert str(e.value).startswith("m.onnx: ")
