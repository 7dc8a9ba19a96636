"""Checkpoint -> ONNX, with the spec in the file's metadata and a parity check.

The exported graph is the adapter of :func:`detector.export.adapter.build_adapter`: input ``image``
(B, C, T, T) float32 raw pixel values; outputs ``boxes`` (B, D, 4), ``scores`` (B, D),
``labels`` (B, D) int64, with a dynamic batch axis.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml

from detector.export.adapter import build_adapter
from detector.export.torch_backend import TorchBackend
from detector.spec import SPEC_KEY
from detector.train.checkpoint import load_checkpoint

log = logging.getLogger("revet.export")

OPSET = 18


class ParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree beyond the stated tolerances."""


def export_onnx(adapter, out: str | os.PathLike) -> Path:
    """Export ``adapter`` to ``out`` and attach its spec. Uses the dynamo exporter, falling back
    to the TorchScript exporter when dynamo cannot handle the model."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = adapter.spec
    x = torch.zeros(2, spec.num_bands, spec.tile_size, spec.tile_size)
    names = dict(input_names=["image"], output_names=["boxes", "scores", "labels"])
    tmp = out.with_name(f".{out.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            batch = torch.export.Dim("batch", min=1, max=1024)
            torch.onnx.export(adapter, (x,), str(tmp), dynamo=True, opset_version=OPSET,
                              dynamic_shapes=({0: batch},), external_data=False, verbose=False, **names)
        except Exception as e:  # dynamo's failures come in many types
            log.warning("dynamo export failed (%s: %s); using the TorchScript exporter",
                        type(e).__name__, str(e)[:200])
            axes = {n: {0: "batch"} for n in ("image", "boxes", "scores", "labels")}
            torch.onnx.export(adapter, (x,), str(tmp), dynamo=False, opset_version=17,
                              dynamic_axes=axes, **names)
    model = onnx.load(str(tmp))
    del model.metadata_props[:]
    for key, value in {SPEC_KEY: spec.to_json(), **provenance(adapter)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "revet"
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out


def provenance(module) -> dict[str, str]:
    """ONNX metadata beside the spec: the Revet version that exported, the export time (UTC,
    ISO 8601) and ``weights_sha256``, a hash of the network's tensors in state-dict order (the
    same weights give the same hash whatever the file)."""
    import datetime
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    try:
        revet_version = version("revet")
    except PackageNotFoundError:
        revet_version = "unknown"
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"revet_version": revet_version,
            "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "weights_sha256": h.hexdigest()}


def match_detections(a, b, *, min_score: float = 0.05, iou: float = 0.9, nms_iou: float = 0.5,
                     tie_tol: float = 1e-4):
    """Match detections of one tile, (boxes, scores, labels) each, greedily by score.

    Detections of ``a`` scoring at least ``min_score`` must match (same label, IoU >= ``iou``),
    except where the order between near-tied scores decides the outcome, which float rounding
    makes arbitrary:

    - ``b``'s fixed output is full and the score is within 1e-4 of its lowest (the cut);
    - NMS swapped a pair: ``b`` holds a same-label box overlapping it above ``nms_iou`` (the
      box that suppressed it in ``b``, or that it suppressed in ``a``) whose score is within
      ``tie_tol`` of its own. Such detections are returned apart as ``swapped``.

    Returns (pairs [(i, j)], unmatched indices of a, swapped indices of a).
    """
    from detector.tiling import box_iou

    ab, as_, al = a
    bb, bs, bl = b
    floor = min_score
    if len(bs) and bs.min() > 0:
        # b's fixed output is full: detections ranked near its last slot may be cut by ties.
        floor = max(floor, float(bs.min()) + 1e-4)
    req = np.where(as_ >= floor)[0]
    cand = np.where(bs >= min_score * 0.5)[0]
    pairs, missing = [], []
    used = np.zeros(len(bs), bool)
    ious = box_iou(ab[req], bb[cand]) if len(req) and len(cand) else np.zeros((len(req), len(cand)))
    for r, i in enumerate(req):
        ok = (~used[cand]) & (bl[cand] == al[i]) & (ious[r] >= iou)
        if ok.any():
            k = np.argmax(np.where(ok, ious[r], -1))
            used[cand[k]] = True
            pairs.append((i, cand[k]))
        else:
            missing.append(i)
    swapped = []
    if missing and len(bs):
        near = box_iou(ab[missing], bb) > nms_iou
        close = np.abs(as_[missing][:, None] - bs[None, :]) <= tie_tol
        same = al[missing][:, None] == bl[None, :]
        tied = (near & close & same).any(axis=1)
        swapped = [i for i, t in zip(missing, tied) if t]
        missing = [i for i, t in zip(missing, tied) if not t]
    return pairs, missing, swapped


def parity_check(torch_backend, onnx_backend, tiles: list[np.ndarray], *, batch_size: int = 8,
                 box_tol: float = 0.01, score_tol: float = 1e-4, min_score: float = 0.05) -> dict:
    """Run both backends on ``tiles`` ((T, T, C) raw arrays) and compare detection by detection.

    Returns a report dict; ``report["passed"]`` is False when a detection scoring at least
    ``min_score`` in PyTorch has no ONNX match (same label, IoU >= 0.9), or a matched pair
    differs by more than ``box_tol`` pixels or ``score_tol`` in score. Detections lost only to a
    swapped NMS order between scores within ``score_tol`` (:func:`match_detections`) are
    counted as ``nms_swapped`` and do not fail it.
    """
    n_match = n_missing = n_torch = n_swapped = 0
    nms_iou = float(getattr(getattr(torch_backend, "spec", None), "nms_iou", 0.5))
    max_box = max_score = 0.0
    for s in range(0, len(tiles), batch_size):
        batch = np.stack([np.moveaxis(t, -1, 0) for t in tiles[s:s + batch_size]]).astype(np.float32)
        tb = torch_backend.run(batch)
        ob = onnx_backend.run(batch)
        for k in range(len(batch)):
            a = tuple(o[k] for o in tb)
            b = tuple(o[k] for o in ob)
            pairs, missing, swapped = match_detections(a, b, min_score=min_score, nms_iou=nms_iou,
                                                       tie_tol=score_tol)
            n_torch += len(pairs) + len(missing) + len(swapped)
            n_match += len(pairs)
            n_missing += len(missing)
            n_swapped += len(swapped)
            for i, j in pairs:
                max_box = max(max_box, float(np.abs(a[0][i] - b[0][j]).max()))
                max_score = max(max_score, float(abs(a[1][i] - b[1][j])))
    passed = n_missing == 0 and max_box <= box_tol and max_score <= score_tol
    return {"tiles": len(tiles), "torch_detections": n_torch, "matched": n_match, "unmatched": n_missing,
            "nms_swapped": n_swapped,
            "max_box_diff_px": max_box, "max_score_diff": max_score, "box_tol_px": box_tol,
            "score_tol": score_tol, "min_score": min_score, "passed": bool(passed)}


def verification_tiles(spec, data: str | os.PathLike | None, ckpt: Path, limit: int = 64) -> tuple[list[np.ndarray], str]:
    """Real tiles for the parity check: from ``data`` (COCO JSON), else the run's validation
    set (``config.yaml`` beside the checkpoint). Images are cut/padded to the tile size; when
    every image is smaller than the tile (an export with a larger window), tiles are mosaics
    of consecutive images."""
    from detector import raster
    from detector.labels.coco import read_coco

    if data is None:
        cfg = ckpt.parent / "config.yaml"
        if cfg.exists():
            data = (yaml.safe_load(cfg.read_text()) or {}).get("val")
    if data is None or not Path(data).exists():
        raise ValueError(
            f"{ckpt}: no tiles to verify the export on; pass --verify DATASET.json "
            "(the run's config.yaml names no readable validation set)"
        )
    labels = read_coco(data)
    t = spec.tile_size
    images = [raster.read_image(rec.path, spec.bands)[0] for rec in labels.images[:limit]]
    if images and max(max(im.shape[:2]) for im in images) < t:
        return _mosaics(images, t, limit), str(data)
    tiles = []
    for image in images:
        tile = np.zeros((t, t, spec.num_bands), image.dtype)
        h, w = min(t, image.shape[0]), min(t, image.shape[1])
        tile[:h, :w] = image[:h, :w]
        tiles.append(tile)
    return tiles, str(data)


def _mosaics(images: list[np.ndarray], t: int, limit: int) -> list[np.ndarray]:
    """``(t, t, C)`` canvases filled with consecutive images side by side (for a window larger
    than the dataset's tiles): real content everywhere, since a constant padded area gives
    many exactly tied scores whose order is arbitrary and would fail parity spuriously."""
    out, k = [], 0
    while len(out) < min(limit, len(images)):  # one canvas per image, each starting at the next
        canvas = np.zeros((t, t, images[0].shape[2]), images[0].dtype)
        y = 0
        while y < t:
            x, row_h = 0, 0
            while x < t:
                im = images[k % len(images)]
                k += 1
                h, w = min(t - y, im.shape[0]), min(t - x, im.shape[1])
                canvas[y:y + h, x:x + w] = im[:h, :w]
                x, row_h = x + w, max(row_h, h)
            y += row_h
        out.append(canvas)
    return out


def export_checkpoint(ckpt: str | os.PathLike, out: str | os.PathLike, *, verify: str | None = None,
                      n_verify: int = 64, fp16: bool = False, int8: bool = False,
                      calibrate: str | None = None, tile_size: int | None = None,
                      evaluate_variants: bool = True) -> dict:
    """Export ``ckpt`` to ONNX at ``out`` and check parity on real tiles.

    Writes ``out`` and ``<out>.parity.json``; raises :class:`ParityError` when parity fails,
    and ``ValueError`` before anything is written when there are no tiles to verify on; in
    both cases no ``out`` is written (an earlier file there is kept). With ``fp16`` / ``int8`` also writes ``<stem>.fp16.onnx`` /
    ``<stem>.int8.onnx`` (int8 calibrated on ``calibrate``, default the verification set) and
    reports each variant's mAP change against the float32 model on the verification set.
    ``tile_size`` sets the exported graph's window (default: the training tile size): the
    networks are convolutional, so a larger window scores scenes with less overlap work
    (1024 px: about 1.3x the megapixels/s of 512 at overlap 128); tiles smaller than it are
    padded. It must be a multiple of 32 (the coarsest feature stride) above the overlap.
    ``evaluate_variants=False`` writes the variants without measuring their mAP.
    """
    from detector.backends import OnnxBackend

    ckpt, out = Path(ckpt), Path(out)
    model, spec = load_checkpoint(ckpt)
    if tile_size is not None and tile_size != spec.tile_size:
        if tile_size % 32 or tile_size <= spec.overlap:
            raise ValueError(f"--tile-size {tile_size}: expected a multiple of 32 larger than the "
                             f"model's overlap ({spec.overlap} px)")
        # the per-window detection cap grows with the window's area
        grow = max(1.0, (tile_size / spec.tile_size) ** 2)
        spec = dataclasses.replace(spec, tile_size=int(tile_size),
                                   max_detections=int(math.ceil(spec.max_detections * grow)))
    adapter = build_adapter(model, spec).eval()
    # the tiles first, and the model under a temporary name until it is verified: a failed
    # export never leaves an unchecked model at ``out`` nor replaces a good one there
    tiles, source = verification_tiles(spec, verify, ckpt, n_verify)
    unverified = out.with_name(f".{out.stem}.unverified{out.suffix}")
    try:
        export_onnx(adapter, unverified)
        report = parity_check(TorchBackend(adapter), OnnxBackend(unverified, device="cpu"), tiles)
    except BaseException:
        unverified.unlink(missing_ok=True)
        raise
    report.update({"checkpoint": str(ckpt), "onnx": str(out), "verify_data": source})
    if not report["passed"]:
        Path(str(out) + ".parity.json").write_text(json.dumps(report, indent=2))
        unverified.unlink(missing_ok=True)
        hint = ""
        if report["matched"] and report["max_box_diff_px"] <= report["box_tol_px"] \
                and report["max_score_diff"] <= report["score_tol"]:
            hint = ("; the detections both found agree within tolerance, so the unmatched ones most "
                    "likely come from near-tied scores, whose NMS order is arbitrary (an undertrained "
                    "model): train longer, or verify on other tiles with --verify")
        raise ParityError(f"{out}: ONNX Runtime does not match PyTorch: {json.dumps(report)}{hint}")
    os.replace(unverified, out)
    if fp16 or int8:
        report["variants"] = _variants(out, spec, source, tiles, fp16=fp16, int8=int8, calibrate=calibrate,
                                       evaluate=evaluate_variants)
    Path(str(out) + ".parity.json").write_text(json.dumps(report, indent=2))
    return report


SCENE_WINDOW = 1536  # revet export --scene-window default: see export_scene_model


def export_scene_model(ckpt: str | os.PathLike, out: str | os.PathLike, window: int = SCENE_WINDOW, *,
                       verify: str | None = None, n_verify: int = 8, fp16: bool = False, int8: bool = False,
                       calibrate: str | None = None) -> dict:
    """Export ``ckpt`` once more as the scene companion of the model at ``out``: the same network
    in ``window`` x ``window`` px windows, written to :func:`detector.runner.scene_model_path`
    (``X.onnx`` -> ``X.scene.onnx``, variants ``X.scene.int8.onnx``), parity-checked like any
    export (on ``n_verify`` mosaics of verification tiles at the window's size). The runner
    loads it beside ``X.onnx`` and scores a scene with it whenever its windows cover the scene
    with fewer pixels: at overlap 128 a 512 px window scores 1.78x a scene's pixels, a 1536 px
    one 1.19x. 1536 px is the default because at batch 1 its ONNX Runtime peak memory stays
    under 1 GB for the default model (``benchmarks/bench_scene.py`` measures it per window).
    Variants' mAP is not re-measured: it is the tile model's (same weights, same graph per pixel)."""
    from detector.runner import scene_model_path

    path = scene_model_path(out)
    if path is None:
        raise ValueError(f"{out}: expected the .onnx path of the tile model (the scene model is written beside it)")
    return export_checkpoint(ckpt, path, verify=verify, n_verify=n_verify, fp16=fp16, int8=int8,
                             calibrate=calibrate, tile_size=window, evaluate_variants=False)


def _variants(out: Path, spec, data: str, tiles: list[np.ndarray], *, fp16: bool, int8: bool,
              calibrate: str | None, evaluate: bool = True) -> dict:
    """Write fp16/int8 variants of ``out`` and (``evaluate``) their mAP against float32 on ``data``;
    int8 is calibrated on ``calibrate``'s tiles, else on ``tiles`` (the verification tiles of ``data``)."""
    from detector.evaluate import evaluate_model
    from detector.export.quantize import to_fp16, to_int8

    result = {"float32": {"path": str(out)}}
    if evaluate:
        base = evaluate_model(out, data, device="cpu")
        result["float32"].update(mAP50=base["mAP50"], mAP50_95=base["mAP50_95"])
    todo = []
    if fp16:
        todo.append(("fp16", lambda p: to_fp16(out, p)))
    if int8:
        cal = verification_tiles(spec, calibrate, out)[0] if calibrate else tiles
        todo.append(("int8", lambda p: to_int8(out, p, cal)))
    for name, make in todo:
        path = out.with_name(f"{out.stem}.{name}.onnx")
        make(path)
        result[name] = {"path": str(path), "size_mb": round(path.stat().st_size / 2**20, 2)}
        if evaluate:
            m = evaluate_model(path, data, device="cpu")
            result[name].update(mAP50=m["mAP50"], mAP50_95=m["mAP50_95"], delta_mAP50=m["mAP50"] - base["mAP50"])
            log.info("%s variant: mAP@0.5 %.4f (float32 %.4f)", name, m["mAP50"], base["mAP50"])
    return result
