"""Checkpoints carry their model spec; loading never unpickles arbitrary objects."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from detector.spec import SPEC_KEY, ModelSpec
from detector.train.models import build_model


def load_tensors(path: Path):
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only,
    never arbitrary objects. Lightning saves with pickle protocol 4, which this loader reads
    fine; torch's warning about it is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load`` with ``weights_only=True`` and errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint does not exist")
    try:
        return load_tensors(path)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ValueError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {str(e)[:300]})") from None


def spec_from_checkpoint(ckpt: dict, path) -> ModelSpec:
    if SPEC_KEY not in ckpt:
        raise ValueError(f"{path}: checkpoint has no '{SPEC_KEY}'; it was not written by 'revet train'")
    return ModelSpec.from_json(ckpt[SPEC_KEY], source=str(path))


def model_state(ckpt: dict) -> dict[str, torch.Tensor]:
    """The network's state dict from a Lightning checkpoint (keys under ``model.``)."""
    sd = ckpt.get("state_dict", ckpt)
    return {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}


def set_score_threshold(path: str | os.PathLike, threshold: float) -> ModelSpec:
    """Store ``threshold`` as the operating score threshold in the checkpoint's spec (so the
    exported model and the runner use it by default). Rewrites the file atomically."""
    return update_spec(path, score_threshold=round(float(threshold), 3))


def set_class_thresholds(path: str | os.PathLike, thresholds, out: str | os.PathLike | None = None) -> ModelSpec:
    """Store one operating threshold per class (``spec.classes`` order; None removes them) in
    the spec of checkpoint ``path``, written to ``out`` (default: ``path`` itself, atomically)."""
    return update_spec(path, out, class_thresholds=None if thresholds is None else tuple(float(t) for t in thresholds))


def update_spec(path: str | os.PathLike, out: str | os.PathLike | None = None, **changes) -> ModelSpec:
    """The checkpoint ``path`` with ``changes`` made to its spec (validated), written to ``out``
    (default ``path``) atomically; returns the new spec."""
    path = Path(path)
    out = path if out is None else Path(out)
    ckpt = read_checkpoint(path)
    spec = spec_from_checkpoint(ckpt, path).replace(**changes)
    ckpt[SPEC_KEY] = spec.to_json()
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, out)
    return spec


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, ModelSpec]:
    """-> (network in eval mode with the checkpoint's weights, its spec)."""
    ckpt = read_checkpoint(path)
    spec = spec_from_checkpoint(ckpt, path)
    model = build_model(spec)
    missing, unexpected = model.load_state_dict(model_state(ckpt), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit architecture {spec.arch!r}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval(), spec
