"""GPU operator essentials (detector/backends.py), checked on a CPU machine: ``--device cuda:N``
parsed, the providers in use reported, and a GPU asked for but not usable is an error that says
so, never a silent run on the CPU."""
import json

import onnxruntime as ort
import pytest

pytest.importorskip("onnx")

from scoring_models import write_peak_model, write_scene  # noqa: E402

from detector.backends import OnnxBackend, parse_device, provider_options, resolve_providers  # noqa: E402
from detector.predict_cli import main  # noqa: E402

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_peak_model(tmp_path_factory.mktemp("gpu") / "peaks.onnx")


def test_device_names():
    assert parse_device("cuda:1") == ("cuda", 1) and parse_device("CPU") == ("cpu", None)
    assert parse_device("tensorrt:0") == ("tensorrt", 0) and parse_device("auto") == ("auto", None)
    assert parse_device("openvino") == ("openvino", None)
    for bad in ("gpu", "cuda:x", "cpu:0", "cuda:", "auto:1", "openvino:0"):
        with pytest.raises(ValueError, match="expected auto, cpu, openvino, cuda, cuda:N, tensorrt or tensorrt:N"):
            parse_device(bad)


def test_provider_options_carry_the_gpu_index_and_tensorrt_cache(tmp_path):
    cache = tmp_path / "trt"
    opts = provider_options(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                            "tensorrt:2", trt_cache=cache)
    assert opts[0]["device_id"] == "2" and opts[1] == {"device_id": "2"} and opts[2] == {}
    assert opts[0]["trt_engine_cache_enable"] == "True" and opts[0]["trt_engine_cache_path"] == str(cache)
    assert cache.is_dir()
    assert provider_options(["CUDAExecutionProvider"], "cuda") == [{}]


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU-only onnxruntime")
def test_cuda_on_a_cpu_only_onnxruntime_is_an_error(model, tmp_path, capsys):
    with pytest.raises(RuntimeError, match="needs ONNX Runtime's CUDAExecutionProvider.*pip install onnxruntime-gpu"):
        resolve_providers("cuda:0")
    scene = write_scene(tmp_path / "s.tif", 300, seed=0)
    rc = main(["predict", str(model), str(scene), "--out", str(tmp_path / "o"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 1 and "error: device 'cuda' needs ONNX Runtime's CUDAExecutionProvider" in err
    assert "Traceback" not in err


def test_cuda_that_fails_to_load_is_not_a_silent_cpu_run(model, monkeypatch):
    """onnxruntime-gpu lists CUDA as available even where its libraries (CUDA, cuDNN) fail to
    load; the session then runs on the CPU with only a warning. Here ONNX Runtime is made to
    list CUDA without having it: the same fallback, which must raise."""
    have = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider"] + have)
    for device in ("cuda", "cuda:0", "tensorrt"):
        with pytest.raises(RuntimeError) as e:
            OnnxBackend(model, device=device)
        msg = str(e.value)
        assert str(model) in msg and repr(device) in msg and "refusing to score on the CPU" in msg
        assert "CPUExecutionProvider" in msg and "--device cpu" in msg
    assert OnnxBackend(model, device="cpu").providers == ["CPUExecutionProvider"]


def test_providers_in_use_are_reported(model, tmp_path, capsys, caplog):
    import logging

    scene = write_scene(tmp_path / "s.tif", 300, seed=0)
    with caplog.at_level(logging.INFO, logger="revet.predict"):
        assert main(["predict", str(model), str(scene), "--out", str(tmp_path / "o"), "--device", "cpu",
                     "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["providers"] == ["CPUExecutionProvider"]
    assert any("ONNX Runtime providers in use: CPUExecutionProvider" in r.getMessage() for r in caplog.records)


def test_openvino_scores_a_scene_as_onnx_runtime_does(model, tmp_path):
    """--device openvino: the same ONNX file compiled by OpenVINO (float32 precision) gives
    ONNX Runtime's detections on a real scene, the spec and provenance read from the file."""
    pytest.importorskip("openvino")
    import numpy as np

    from detector.backends import OpenVinoBackend
    from detector.runner import Detector

    scene = write_scene(tmp_path / "s.tif", 700, seed=2)
    ref = Detector.load(model, device="cpu").predict_scene(scene, skip=False)
    det = Detector.load(model, device="openvino")
    assert isinstance(det.backend, OpenVinoBackend) and det.spec == Detector.load(model, device="cpu").spec
    got = det.predict_scene(scene, skip=False)
    assert len(ref) > 5 and len(got) == len(ref)
    np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-3)
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5)
    assert (got.labels == ref.labels).all()
    assert det.backend.providers == ["OpenVINO CPU (f32)"]


def test_openvino_refuses_a_file_without_a_spec_by_name(tmp_path):
    pytest.importorskip("openvino")
    import onnx

    from detector.backends import OpenVinoBackend

    src = write_peak_model(tmp_path / "m.onnx")
    m = onnx.load(str(src))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match=r"bare.onnx: ONNX file has no 'revet_spec' metadata"):
        OpenVinoBackend(tmp_path / "bare.onnx")
