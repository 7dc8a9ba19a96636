"""Reduced-precision variants of an exported model: fp16 (GPU) and static int8 (CPU).

Both keep the float32 input and outputs and the spec metadata, so the runner uses them
unchanged. Their accuracy is reported as the mAP change against the float32 model on the
same tiles (``export_checkpoint(..., fp16=True, int8=True)``).
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np
import onnx

from detector.spec import SPEC_KEY


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
