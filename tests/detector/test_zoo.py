"""detector.zoo: shipped models by name, file paths passed through, hashes checked (torch-free)."""
import json

import pytest

from detector import zoo
from detector.hashing import sha256_file


@pytest.fixture
def fake_zoo(tmp_path, monkeypatch):
    """A zoo folder with one model ``revet-test`` whose files are plain bytes."""
    d = tmp_path / "revet-test"
    d.mkdir()
    for name in (zoo.ONNX, zoo.ONNX_INT8, zoo.WEIGHTS):
        (d / name).write_bytes(name.encode() * 10)
    files = {name: sha256_file(d / name) for name in (zoo.ONNX, zoo.ONNX_INT8, zoo.WEIGHTS)}
    (d / zoo.CARD).write_text(json.dumps({"name": "revet-test", "files": files}))
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    return d


def test_names_resolve_to_the_shipped_files(fake_zoo):
    assert zoo.available() == ["revet-test"]
    assert zoo.resolve("revet-test") == fake_zoo / zoo.ONNX
    assert zoo.resolve("revet-test:int8") == fake_zoo / zoo.ONNX_INT8
    assert zoo.resolve("revet-test", "weights") == fake_zoo / zoo.WEIGHTS
    assert zoo.is_name("revet-test:int8") and not zoo.is_name("model.onnx")



def test_an_existing_path_wins_over_a_name(fake_zoo, tmp_path):
    other = tmp_path / "model.onnx"
    other.write_bytes(b"x")
    assert zoo.resolve(other) == other and not zoo.is_name(other)


def test_unknown_names_and_variants_are_named(fake_zoo):
    with pytest.raises(ValueError, match="revet-large: not a shipped model.*revet-test"):
        zoo.resolve("revet-large")
    with pytest.raises(ValueError, match="unknown variant 'fp8'"):
        zoo.resolve("revet-test:fp8")
    # something that looks like a file name is passed through for the loader to report
    assert str(zoo.resolve("missing.onnx")) == "missing.onnx"


def test_a_missing_file_of_a_shipped_model_is_reported(fake_zoo):
    (fake_zoo / zoo.ONNX_INT8).unlink()
    with pytest.raises(FileNotFoundError, match="lacks this file"):
        zoo.resolve("revet-test:int8")


def test_verify_detects_a_changed_file(fake_zoo):
    assert zoo.verify("revet-test") == {zoo.ONNX: True, zoo.ONNX_INT8: True, zoo.WEIGHTS: True}
    (fake_zoo / zoo.ONNX).write_bytes(b"tampered")
    assert zoo.verify("revet-test")[zoo.ONNX] is False
