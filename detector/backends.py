"""Inference backends: something that maps a batch of raw tiles to fixed detections.

A backend is any object with ``run(batch) -> (boxes, scores, labels)``, ``batch`` being
``(B, C, T, T)`` float32 raw pixel values, outputs as documented in
``detector.export.adapter`` (``(B, D, 4)``, ``(B, D)``, ``(B, D)``). This module holds the ONNX
Runtime backend (torch-free); the PyTorch one, for checkpoints, is
``detector.export.torch_backend``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detector.spec import SPEC_KEY, ModelSpec


def resolve_providers(device: str = "auto") -> list[str]:
    """ONNX Runtime execution providers for ``device``: ``auto`` (TensorRT, CUDA, then CPU, as
    installed), ``cuda``, ``tensorrt`` or ``cpu``. Raises when a GPU is asked for but absent."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "auto":
        prefs = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return [p for p in prefs if p in have]
    wanted = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}.get(device)
    if wanted is None:
        raise ValueError(f"unknown device {device!r}; expected auto, cpu, cuda or tensorrt")
    if wanted not in have:
        raise RuntimeError(
            f"device {device!r} needs ONNX Runtime's {wanted}, but this install only has {have}; "
            "install onnxruntime-gpu (pip install 'revet[gpu]') on a machine with CUDA"
        )
    chain = [wanted, "CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for i, p in enumerate(chain) if p in have and p not in chain[:i]]


class OnnxBackend:
    """ONNX Runtime session over an exported Revet model."""

    def __init__(self, path: str | os.PathLike, *, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: model file does not exist")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=resolve_providers(device))
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.path}: not a loadable ONNX model ({e})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if SPEC_KEY not in meta:
            raise ValueError(
                f"{self.path}: ONNX file has no '{SPEC_KEY}' metadata; export it with 'revet export'"
            )
        self.spec = ModelSpec.from_json(meta[SPEC_KEY], source=str(self.path))
        self.input_name = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()

    def run(self, batch: np.ndarray):
        boxes, scores, labels = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return boxes, scores, labels
