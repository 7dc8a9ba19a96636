"""PyTorch backend for the runner: a checkpoint scored through the same fixed-output adapter
that is exported to ONNX, so ``revet evaluate run/best.ckpt`` and ``... model.onnx`` agree."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from detector.export.adapter import build_adapter
from detector.train.checkpoint import load_checkpoint


class TorchBackend:
    def __init__(self, adapter, *, device: str = "cpu") -> None:
        self.adapter = adapter.eval().to(device)
        self.spec = adapter.spec
        self.device = device

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str = "auto",
                        threads: int | None = None) -> "TorchBackend":
        if threads:
            torch.set_num_threads(threads)
        dev = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        if device == "cuda" and dev != "cuda":
            raise RuntimeError(f"{path}: device 'cuda' asked for but torch sees no CUDA device")
        model, spec = load_checkpoint(Path(path))
        return cls(build_adapter(model, spec), device=dev)

    @torch.no_grad()
    def run(self, batch: np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
        boxes, scores, labels = self.adapter(x)
        return boxes.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy()
