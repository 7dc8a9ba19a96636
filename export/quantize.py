"""Reduced-precision variants of an exported model: fp16 (GPU) and static int8 (CPU).

Both keep the float32 input and outputs and the spec metadata, so the runner uses them
unchanged. Their accuracy is reported as the mAP change against the float32 model on the
same tiles (``export_checkpoint(..., fp16=True, int8=True)``).

int8 weights use the full 8 bits. On x86 CPUs without VNNI (AVX2, AVX-512F only), ONNX
Runtime multiplies uint8 activations by int8 weights with VPMADDUBSW, which adds two
neighbouring products into a saturating int16 (2 x 255 x 127 = 64,770 overflows it), so int8
scores there can differ slightly from a VNNI CPU's. ``benchmarks/bench_int8_saturation.py``
emulates that arithmetic on a model's real activations. :func:`narrow_int8_weights` holds
weights to 7 bits (|q| <= 64: 2 x 255 x 64 = 32,640 fits), which removes the overflow on every
CPU. It costs accuracy everywhere; docs/predict.md has the measured trade-off, and why the
shipped files keep 8 bits.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np
import onnx

from detector.spec import SPEC_KEY

#: largest |int8 weight| whose pair products with uint8 activations fit a signed 16-bit sum
#: (2 x 255 x 64 = 32,640 <= 32,767): no saturation in ONNX Runtime's non-VNNI U8S8 kernels
INT8_WEIGHT_LIMIT = 64


def _copy_metadata(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    del dst.metadata_props[:]
    for p in src.metadata_props:
        e = dst.metadata_props.add()
        e.key, e.value = p.key, p.value


def to_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert weights and activations to float16; NMS, TopK and the I/O stay float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True,
                                    op_block_list=["NonMaxSuppression", "TopK", "Clip", "Sqrt", "Sigmoid", "Softmax"])
    _copy_metadata(model, half)
    onnx.save(half, str(dst))
    return Path(dst)


class _TileReader:
    """ONNX Runtime calibration reader over raw (T, T, C) tiles."""

    def __init__(self, input_name: str, tiles: list[np.ndarray], batch: int = 4) -> None:
        self.name = input_name
        self.batches = [np.stack([np.moveaxis(t, -1, 0) for t in tiles[i:i + batch]]).astype(np.float32)
                        for i in range(0, len(tiles), batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.name: self.batches[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


@contextlib.contextmanager
def _quiet_root_logger(level: int = logging.WARNING):
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(level, old))
    try:
        yield
    finally:
        root.setLevel(old)


def to_int8(src: str | os.PathLike, dst: str | os.PathLike, tiles: list[np.ndarray]) -> Path:
    """Static int8 quantization (QDQ, per-channel weights) of convolutions, calibrated on
    ``tiles``; pre-processing, decoding and NMS stay float32."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not tiles:
        raise ValueError(f"{src}: int8 quantization needs calibration tiles (--calibrate DATASET)")
    src, dst = Path(src), Path(dst)
    pre = dst.with_name(f".{dst.name}.pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    except Exception:  # pre-processing is an optimisation; quantize the original if it fails
        pre = src
    model = onnx.load(str(pre))
    reader = _TileReader(model.graph.input[0].name, tiles)
    with _quiet_root_logger():  # the quantizer logs a line per bias on the root logger
        quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv"], calibrate_method=CalibrationMethod.MinMax)
    if pre != src:
        pre.unlink(missing_ok=True)
    q = onnx.load(str(dst))
    _copy_metadata(onnx.load(str(src)), q)
    onnx.save(q, str(dst))
    assert any(p.key == SPEC_KEY for p in q.metadata_props)
    return dst


def _initializers(model: onnx.ModelProto) -> dict:
    return {i.name: i for i in model.graph.initializer}


def conv_weight_quantizers(model: onnx.ModelProto) -> list[tuple]:
    """Per quantized Conv of a QDQ model: ``(conv, weight DequantizeLinear, bias
    DequantizeLinear or None)``, the DequantizeLinear nodes reading int8 / int32 initializers."""
    init = _initializers(model)
    made_by = {o: n for n in model.graph.node for o in n.output}
    out = []
    for conv in model.graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 2:
            continue
        w = made_by.get(conv.input[1])
        if w is None or w.op_type != "DequantizeLinear" or w.input[0] not in init:
            continue
        b = made_by.get(conv.input[2]) if len(conv.input) > 2 else None
        if b is not None and (b.op_type != "DequantizeLinear" or b.input[0] not in init):
            b = None
        out.append((conv, w, b))
    return out


def max_int8_weight(model: onnx.ModelProto) -> int:
    """The largest |quantized weight| over the model's quantized convolutions (0 if none)."""
    from onnx import numpy_helper

    init = _initializers(model)
    return max((int(np.abs(numpy_helper.to_array(init[w.input[0]]).astype(np.int32)).max())
                for _, w, _ in conv_weight_quantizers(model)), default=0)


def narrow_int8_weights(model: onnx.ModelProto, *, limit: int = INT8_WEIGHT_LIMIT,
                        source: str = "model") -> int:
    """Requantize, in place, every int8 convolution weight channel whose largest |q| exceeds
    ``limit`` to ``[-limit, limit]`` (scale x m / limit for a channel of largest |q| m) and
    its int32 bias to the new scale (input scale x weight scale), so the dequantized weights
    move by less than one new step (rounded twice) and the biases by at most half of theirs.
    Weights must be symmetric (zero point 0: what ``quantize_static`` writes). Returns the
    number of channels changed."""
    from collections import Counter

    from onnx import numpy_helper

    init = _initializers(model)
    users = Counter(i for n in model.graph.node for i in n.input)
    changed = 0
    for conv, w, b in conv_weight_quantizers(model):
        q = numpy_helper.to_array(init[w.input[0]]).astype(np.int32)
        scale = numpy_helper.to_array(init[w.input[1]]).astype(np.float64)
        zero = numpy_helper.to_array(init[w.input[2]]) if len(w.input) > 2 else np.zeros(1)
        if np.any(zero != 0):
            raise ValueError(f"{source}: {conv.name}: expected symmetric int8 weights (zero point 0)")
        if any(users.get(i, 0) > 1 for i in w.input[:2]) or (b is not None and users.get(b.input[0], 0) > 1):
            raise ValueError(f"{source}: {conv.name}: its quantized weights are shared with another node")
        axis = next((a.i for a in w.attribute if a.name == "axis"), 1) if scale.size > 1 else None
        flat = np.moveaxis(q, axis, 0).reshape(q.shape[axis], -1) if axis is not None else q.reshape(1, -1)
        m = np.abs(flat).max(axis=1).astype(np.float64)
        ratio = np.where(m > limit, m / limit, 1.0)  # per channel: new scale / old scale
        if not np.any(ratio > 1):
            continue
        changed += int((ratio > 1).sum())
        shape = [1] * q.ndim
        if axis is not None:
            shape[axis] = -1
        q_new = np.clip(np.rint(q / ratio.reshape(shape)), -limit, limit).astype(np.int8)
        init[w.input[0]].CopyFrom(numpy_helper.from_array(q_new, w.input[0]))
        new_scale = (scale * ratio.reshape(scale.shape)).astype(np.float32)
        init[w.input[1]].CopyFrom(numpy_helper.from_array(new_scale, w.input[1]))
        if b is not None:  # int32 bias at input scale x weight scale, per output channel
            bq = numpy_helper.to_array(init[b.input[0]]).astype(np.float64)
            bs = numpy_helper.to_array(init[b.input[1]]).astype(np.float64)
            if bq.shape != ratio.shape or bs.shape not in (ratio.shape, ()):
                raise ValueError(f"{source}: {conv.name}: bias of shape {bq.shape} does not match "
                                 f"{ratio.size} weight channels")
            bq_new = np.clip(np.rint(bq / ratio), -2 ** 31, 2 ** 31 - 1).astype(np.int32)
            init[b.input[0]].CopyFrom(numpy_helper.from_array(bq_new, b.input[0]))
            init[b.input[1]].CopyFrom(numpy_helper.from_array((bs * ratio).astype(np.float32), b.input[1]))
    return changed
