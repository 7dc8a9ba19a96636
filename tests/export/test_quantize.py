"""int8 weights held to 7 bits (export.quantize.narrow_int8_weights) on the shipped revet-base
int8 graph: the bound that keeps non-VNNI U8S8 sums from saturating holds, the dequantized
weights and biases move by at most one new step, and ONNX Runtime's detections stay close."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from detector import zoo
from detector.backends import OnnxBackend
from detector.export.quantize import INT8_WEIGHT_LIMIT, conv_weight_quantizers, max_int8_weight, narrow_int8_weights


def _dequantized(model):
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for conv, w, b in conv_weight_quantizers(model):
        q, s = init[w.input[0]].astype(np.float64), init[w.input[1]].astype(np.float64)
        out[conv.name] = (q * s.reshape(-1, *[1] * (q.ndim - 1)), s,
                          None if b is None else (init[b.input[0]] * init[b.input[1]].astype(np.float64),
                                                  init[b.input[1]].astype(np.float64)))
    return out


@pytest.fixture(scope="module")
def int8_path():
    return zoo.resolve("revet-base:int8")


def test_narrowed_weights_fit_seven_bits_and_keep_their_values(int8_path):
    model = onnx.load(str(int8_path))
    before = _dequantized(model)
    assert max_int8_weight(model) == 127  # quantize_static writes full 8-bit weights
    changed = narrow_int8_weights(model, source=str(int8_path))
    assert changed > 0 and max_int8_weight(model) == INT8_WEIGHT_LIMIT
    assert 2 * 255 * max_int8_weight(model) <= 32767  # a pair of uint8 x int8 products fits int16
    after = _dequantized(model)
    assert before.keys() == after.keys() and len(after) == 40
    for name, (w0, _, b0) in before.items():
        w1, s1, b1 = after[name]
        step = s1.reshape(-1, *[1] * (w1.ndim - 1))
        assert np.all(np.abs(w1 - w0) <= 0.76 * step + 1e-9), name  # rounding twice: < 3/4 of a new step
        if b0 is not None:  # int32 biases requantized to the new scale: within half its step
            assert np.all(np.abs(b1[0] - b0[0]) <= 0.5 * b1[1] * (1 + 1e-6)), name
    assert narrow_int8_weights(model) == 0  # already narrow: nothing left to change


def test_narrowed_model_scores_like_the_original(int8_path, tmp_path):
    model = onnx.load(str(int8_path))
    narrow_int8_weights(model)
    onnx.save(model, str(tmp_path / "narrow.int8.onnx"))
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(120, 40, (1, 3, 512, 512)), 0, 255).astype(np.float32)
    x[:, :, 200:240, 180:300] = 230.0  # a bright roof-like block
    ref = OnnxBackend(int8_path, device="cpu", threads=1).run(x)
    got = OnnxBackend(tmp_path / "narrow.int8.onnx", device="cpu", threads=1).run(x)
    top_ref, top_got = np.sort(ref[1][0])[::-1][:20], np.sort(got[1][0])[::-1][:20]
    assert np.abs(top_ref - top_got).max() < 0.05


def test_narrowing_refuses_asymmetric_weights(int8_path):
    model = onnx.load(str(int8_path))
    _, w, _ = conv_weight_quantizers(model)[0]
    zp = next(i for i in model.graph.initializer if i.name == w.input[2])
    arr = numpy_helper.to_array(zp).copy()
    arr[0] = 3
    zp.CopyFrom(numpy_helper.from_array(arr, zp.name))
    with pytest.raises(ValueError, match="symmetric int8 weights"):
        narrow_int8_weights(model, source="m.onnx")
