"""Models shipped inside Revet, loaded by name (torch-free).

Each shipped model is one folder ``detector/zoo/<name>/`` holding::

    model.onnx        float32 ONNX (spec in its metadata): `revet predict NAME ...`
    model.int8.onnx   int8 ONNX, faster on CPUs: `revet predict NAME:int8 ...`
    model.scene.onnx, model.scene.int8.onnx
                      the same networks in larger windows, loaded beside them to score scenes
                      (:func:`detector.runner.scene_model_path`)
    weights.fp16.pt   float16 network weights + spec (torch): `revet train --weights NAME`
    card.json         SHA-256 of each file, the training record and test metrics (docs/models.md)

:func:`resolve` turns a name (or a path) into a file; a name that is not shipped raises
``ValueError`` listing the shipped ones. Files are checked against the card's hashes on request
(:func:`verify`), never downloaded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from detector.hashing import sha256_file

ZOO_DIR = Path(__file__).resolve().parent
ONNX, ONNX_INT8, WEIGHTS, CARD = "model.onnx", "model.int8.onnx", "weights.fp16.pt", "card.json"
SCENE_FILES = ("model.scene.onnx", "model.scene.int8.onnx")
_KINDS = {"onnx": ONNX, "int8": ONNX_INT8, "weights": WEIGHTS}


def available() -> list[str]:
    """Names of the shipped models (folders with a card)."""
    return sorted(p.parent.name for p in ZOO_DIR.glob(f"*/{CARD}"))


def is_name(ref: str | os.PathLike) -> bool:
    """True when ``ref`` names a shipped model (``revet-base``, ``revet-base:int8``) rather than a
    file: an existing path always wins."""
    s = str(ref)
    return not Path(s).exists() and s.split(":", 1)[0] in available()


def resolve(ref: str | os.PathLike, kind: str = "onnx") -> Path:
    """The file of a shipped model, or ``ref`` itself when it is not a shipped model's name.

    ``kind``: ``onnx`` (float32), ``int8`` or ``weights`` (fp16 torch weights). ``NAME:int8``
    selects the int8 ONNX whatever ``kind``. Raises ``ValueError`` for an unknown name that
    looks like one (no path separator, no extension, not a file) and ``FileNotFoundError`` when
    a shipped file is missing from the installation.
    """
    s = str(ref)
    if Path(s).exists():
        return Path(s)
    name, _, variant = s.partition(":")
    if name not in available():
        if os.sep not in s and "." not in s and s.startswith("revet-"):
            raise ValueError(f"{s}: not a shipped model; shipped: {available()} (or give a file path)")
        return Path(s)
    if variant:
        if variant not in _KINDS:
            raise ValueError(f"{s}: unknown variant {variant!r}; expected one of {sorted(_KINDS)}")
        kind = variant
    if kind not in _KINDS:
        raise ValueError(f"unknown model file kind {kind!r}; expected one of {sorted(_KINDS)}")
    path = ZOO_DIR / name / _KINDS[kind]
    if not path.exists():
        raise FileNotFoundError(f"{path}: the installation lacks this file of shipped model {name!r}")
    return path


def card(name: str) -> dict:
    """The model card (``card.json``) of a shipped model."""
    path = ZOO_DIR / name / CARD
    if not path.exists():
        raise ValueError(f"{name}: not a shipped model; shipped: {available()}")
    return json.loads(path.read_text())


def verify(name: str) -> dict[str, bool]:
    """``{file: hash matches the card}`` for every file the card lists."""
    result = {}
    for f, digest in card(name)["files"].items():
        result[f] = sha256_file(ZOO_DIR / name / f) == digest
    return result
