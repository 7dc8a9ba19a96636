"""Fine-tuning: load pretrained weights into a freshly built model, and freeze backbone stages.

``load_weights(model, spec, weights)`` takes ``weights`` as

- ``"none"`` (or None): keep the random initialisation;
- ``"coco"``: torchvision's published COCO detector of the architecture's family
  (``detector.train.models.PRETRAINED[arch].coco``);
- ``"imagenet"``: the backbone's ImageNet classifier, loaded into the backbone body only;
- a path: a torchvision state dict (``.pth``/``.pt``, e.g. the very file torchvision
  downloads; a detector's or a classifier's) or a Revet checkpoint (``.ckpt`` with the spec
  under ``revet_spec`` and the network under ``state_dict`` as ``model.*``).

Published files are fetched once into torch's cache (``torch.hub.get_dir()/checkpoints``) with
the file name torchvision uses; after that, and for local paths, everything goes through one
path: ``torch.load(..., weights_only=True)`` then :func:`match_state`.

Matching rule: a tensor is loaded when a tensor of the same name (after the architecture's key
mapping) and shape exists. The first convolution is adapted when band counts differ
(:func:`detector.train.models.adapt_input_conv`). The class head is left at
its initialisation when class counts differ, or when the source's class names are known (a Revet
checkpoint) and differ from the spec's. Everything else that does not fit is reported, not fatal.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from detector import zoo
from detector.spec import SPEC_KEY, ModelSpec
from detector.train.checkpoint import load_tensors, model_state
from detector.train.models import PRETRAINED, adapt_input_conv

log = logging.getLogger("revet.train")

# Tensors that predict per-class outputs, by family: replaced when the classes differ.
CLASS_HEADS = {
    "SSD": ("head.classification_head.",),
    "FCOS": ("head.classification_head.cls_logits.",),
    "RetinaNet": ("head.classification_head.cls_logits.",),
    "FasterRCNN": ("roi_heads.box_predictor.",),
}

_IGNORED = ("num_batches_tracked",)  # FrozenBatchNorm2d state dicts (torchvision's) lack it


class WeightsError(ValueError):
    """Pretrained weights cannot be obtained or read; the message says what to do."""


# ---------------------------------------------------------------------------- entry point
def load_weights(model: nn.Module, spec: ModelSpec, weights: str | os.PathLike | None, *,
                 cache_dir: str | os.PathLike | None = None) -> dict:
    """Load ``weights`` (``none`` | ``coco`` | ``imagenet`` | a path) into ``model`` in place.

    ``model`` must be ``build_model(spec)``. ``cache_dir`` overrides where published files are
    cached (default ``torch.hub.get_dir()/checkpoints``). Returns the report of
    :func:`match_state` plus ``source``; it is also logged. Raises :class:`WeightsError` when
    the weights cannot be had (offline, no published weights of that kind, unreadable file).
    """
    if weights is None or str(weights).lower() == "none":
        report = _empty_report(model, "none (random initialisation)")
    elif str(weights).lower() in ("coco", "imagenet"):
        kind = str(weights).lower()
        info = PRETRAINED[spec.arch]
        name = info.coco if kind == "coco" else info.imagenet
        if name is None:
            have = [a for a, i in sorted(PRETRAINED.items()) if (i.coco if kind == "coco" else i.imagenet)]
            raise WeightsError(
                f"architecture {spec.arch!r} has no published {kind.upper()} weights in torchvision; "
                f"architectures that do: {have}; or pass a local state dict or Revet checkpoint path")
        # After download, exactly the route of a local file.
        report = load_file(model, spec, fetch(name, cache_dir=cache_dir))
        report["source"] = f"{kind} ({name}, {report['source']})"
    elif zoo.is_name(weights):
        # a shipped model: its fp16 weights file, through the same route as any local file
        report = load_file(model, spec, zoo.resolve(str(weights).split(":")[0], "weights"))
        report["source"] = f"{weights} ({report['source']})"
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"{path}: weights file does not exist; expected 'none', 'coco', "
                               "'imagenet' or the path of a .pth/.pt state dict or a Revet .ckpt")
        report = load_file(model, spec, path)
    log.info("%s", format_report(report))
    return report


def load_file(model: nn.Module, spec: ModelSpec, path: str | os.PathLike) -> dict:
    """Load a local file: a Revet/Lightning checkpoint, a torchvision detector state dict (the
    same route ``coco`` takes after download), or a torchvision classifier's state dict (the
    route ``imagenet`` takes)."""
    path = Path(path)
    obj = _read(path)
    info = PRETRAINED[spec.arch]
    source_classes = None
    if isinstance(obj, dict) and SPEC_KEY in obj:
        src = ModelSpec.from_json(obj[SPEC_KEY], source=str(path))
        source_classes = src.classes
        if src.arch != spec.arch:
            log.warning("%s: trained as %r, loading into %r: only tensors that fit are used",
                        path, src.arch, spec.arch)
    state = _state_dict(obj, path)
    if _is_classifier(state):
        report = _load_backbone(model, spec, state, info.imagenet_key)
    else:
        # A torchvision detector file for this family keeps torchvision's names.
        key_map = info.coco_key if source_classes is None else (lambda k: k)
        report = _load_detector(model, spec, state, key_map=key_map, source_classes=source_classes)
    report["source"] = str(path)
    return report


# -------------------------------------------------------------------------- obtaining files
def cache_path(weights_name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where torch's cache keeps the file of torchvision weights ``weights_name``
    (e.g. ``"FCOS_ResNet50_FPN_Weights.COCO_V1"``)."""
    from torchvision.models import get_weight

    url = get_weight(weights_name).url
    folder = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    return folder / os.path.basename(url)


def fetch(weights_name: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the cached file of torchvision weights ``weights_name``, downloading it once
    (hash-checked) when it is not cached. Offline: :class:`WeightsError` naming the file to place."""
    from torchvision.models import get_weight

    url = get_weight(weights_name).url
    target = cache_path(weights_name, cache_dir)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=_hash_prefix(url), progress=True)
    except Exception as e:  # URLError, HTTPError, socket errors, hash mismatch...
        raise WeightsError(
            f"cannot download {weights_name} from {url} ({type(e).__name__}: {str(e)[:200]}). "
            f"Without network access, fetch that file elsewhere and place it at {target} "
            f"(or set TORCH_HOME / the cache folder), or pass the file's path as the weights "
            f"(e.g. --weights /path/to/{target.name})") from None
    return target


def _hash_prefix(url: str) -> str | None:
    # torchvision's file names end in -<first hex digits of the SHA-256>.pth
    stem = os.path.basename(url).rsplit(".", 1)[0]
    tail = stem.rsplit("-", 1)[-1]
    return tail if len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail) else None


def _read(path: Path):
    try:
        return load_tensors(path)
    except Exception as e:
        raise WeightsError(f"{path}: not a loadable state dict or checkpoint "
                           f"({type(e).__name__}: {str(e)[:300]})") from None


def _state_dict(obj, path) -> dict[str, torch.Tensor]:
    """The network's tensors: Lightning ``state_dict`` (``model.*``), torchvision reference
    scripts' ``{'model': ...}``, or a plain state dict."""
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict or checkpoint, got {type(obj).__name__}")
    if isinstance(obj.get("state_dict"), dict):
        sd = obj["state_dict"]
        if any(k.startswith("model.") for k in sd):
            return model_state(obj)
        return dict(sd)
    if isinstance(obj.get("model"), dict):
        return dict(obj["model"])
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise WeightsError(f"{path}: holds no tensors; expected a state dict or a Revet checkpoint")
    return sd


def _is_classifier(state: dict) -> bool:
    """A classification network's state dict (ResNet ``fc``, MobileNet ``classifier``)."""
    keys = list(state)
    return (not any(k.startswith(("backbone.", "head.", "roi_heads.", "rpn.")) for k in keys)
            and any(k.startswith(("fc.", "classifier.", "conv1.", "features.")) for k in keys))


# -------------------------------------------------------------------------------- matching
def _first_conv(model: nn.Module) -> str | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return f"{name}.weight"
    return None


def match_state(model: nn.Module, state: dict[str, torch.Tensor], *, class_heads=(),
                replace_heads: bool = False, bands: int | None = None) -> dict:
    """Copy every tensor of ``state`` whose name and shape fit ``model`` (in place).

    ``class_heads``: name prefixes of per-class layers; with ``replace_heads`` they are never
    loaded, otherwise only when their shapes fit. ``bands``: the model's input bands; the first
    conv is adapted when the source has a different count.

    Returns ``{"loaded", "loaded_fraction", "skipped", "new", "unused", "head_replaced",
    "first_conv_adapted"}``: ``loaded`` and ``unused`` (source tensors with no counterpart)
    are tensor counts; ``loaded_fraction`` the share of the model's parameter elements loaded;
    ``skipped`` lists ``"name: source shape -> model shape"`` for shape mismatches outside the
    class head; ``new`` the model's tensors the source lacks (left at initialisation);
    ``head_replaced`` the class-head layers left at initialisation; ``first_conv_adapted`` a
    note or None. ``num_batches_tracked`` buffers are ignored throughout.
    """
    own = model.state_dict()
    first = _first_conv(model)
    loaded, skipped, heads, adapted = {}, {}, set(), None
    for k, v in state.items():
        if k not in own or k.endswith(_IGNORED):
            continue
        target = own[k]
        if any(k.startswith(p) for p in class_heads) and (replace_heads or v.shape != target.shape):
            heads.add(k.rsplit(".", 1)[0])
            continue
        if v.shape != target.shape:
            if (k == first and bands is not None and v.dim() == 4 and target.shape[1] == bands
                    and v.shape[0] == target.shape[0] and v.shape[2:] == target.shape[2:]):
                adapted = f"{k}: {v.shape[1]} -> {bands} bands"
                v = adapt_input_conv(v.float(), bands)
            else:
                skipped[k] = f"{k}: {tuple(v.shape)} -> {tuple(target.shape)}"
                continue
        loaded[k] = v.to(target.dtype)
    model.load_state_dict(loaded, strict=False)
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values()) or 1
    new = [k for k in own if k not in loaded and k not in skipped and not k.endswith(_IGNORED)
           and k.rsplit(".", 1)[0] not in heads]
    return {"loaded": len(loaded),
            "loaded_fraction": round(sum(v.numel() for k, v in loaded.items() if k in params) / total, 4),
            "skipped": list(skipped.values()), "new": new,
            "unused": sum(1 for k in state if k not in own and not k.endswith(_IGNORED)),
            "head_replaced": sorted(heads), "first_conv_adapted": adapted}


def _rename(state: dict, key_map) -> dict:
    """``state`` under ``key_map``'s names; tensors it maps to None are left out."""
    return {nk: v for nk, v in ((key_map(k), v) for k, v in state.items()) if nk is not None}


def _load_detector(model, spec, state, *, key_map, source_classes) -> dict:
    mapped = _rename(state, key_map)
    heads = CLASS_HEADS.get(type(model).__name__, ())
    replace = source_classes is not None and tuple(source_classes) != tuple(spec.classes)
    report = match_state(model, mapped, class_heads=heads, replace_heads=replace, bands=spec.num_bands)
    report["unused"] += len(state) - len(mapped)
    return report


def _load_backbone(model, spec, state, key_map) -> dict:
    """ImageNet classifier weights -> the backbone body only; the rest stays as initialised."""
    mapped = _rename(state, key_map)
    if not mapped:
        raise WeightsError(f"architecture {spec.arch!r}: no classifier weights map onto its backbone")
    report = match_state(model, mapped, bands=spec.num_bands)
    report["unused"] += len(state) - len(mapped)
    # Only the backbone was offered: list as new what the backbone lacks, count the rest.
    body = _body_prefix(mapped)
    rest = [k for k in report["new"] if not k.startswith(body)]
    report["new"] = [k for k in report["new"] if k.startswith(body)]
    report["outside_backbone"] = len(rest)
    return report


def _body_prefix(keys) -> str:
    return os.path.commonprefix(list(keys)).rsplit(".", 1)[0] + "." if keys else ""


def _empty_report(model, source) -> dict:
    own = [k for k in model.state_dict() if not k.endswith(_IGNORED)]
    return {"source": source, "loaded": 0, "loaded_fraction": 0.0, "skipped": [], "new": own,
            "unused": 0, "head_replaced": [], "first_conv_adapted": None}


def format_report(report: dict, *, limit: int = 8) -> str:
    """One paragraph for logs: counts, then the first ``limit`` names of each list."""
    def few(items):
        items = list(items)
        more = f", ... (+{len(items) - limit})" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    lines = [f"weights from {report['source']}: loaded {report['loaded']} tensors "
             f"({100 * report['loaded_fraction']:.1f}% of parameters), skipped {len(report['skipped'])} "
             f"(shape mismatch), new {len(report['new'])}, unused {report['unused']}"]
    if report["head_replaced"]:
        lines.append(f"  class head replaced (left at init): {few(report['head_replaced'])}")
    if report["first_conv_adapted"]:
        lines.append(f"  first conv adapted: {report['first_conv_adapted']}")
    if report["skipped"]:
        lines.append(f"  skipped: {few(report['skipped'])}")
    if report["new"] and report["loaded"]:
        lines.append(f"  new: {few(report['new'])}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- freezing
class EvalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that stays in eval mode whatever ``model.train()`` says: running statistics
    are used and never updated. Same state dict as ``nn.BatchNorm2d`` (``num_batches_tracked``
    included), so checkpoints of a frozen model load into a freshly built one, and ONNX export
    sees an ordinary BatchNorm."""

    def train(self, mode: bool = True):
        return super().train(False)


def _eval_bn(model: nn.Module, targets: set[int]) -> None:
    """Replace the BatchNorm2d modules of ``model`` whose ``id`` is in ``targets`` by
    :class:`EvalBatchNorm2d` modules holding the same state."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) not in targets or isinstance(child, EvalBatchNorm2d):
                continue
            bn = EvalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            if child.running_mean is not None:
                bn.to(child.running_mean.device)
            for p, q in zip(bn.parameters(), child.parameters()):
                p.requires_grad_(q.requires_grad)
            setattr(parent, name, bn.train(False))


def split_backbone(model: nn.Module) -> list[list[nn.Module]]:
    """The backbone body as ``[stem, stage 1, stage 2, ...]`` (lists of modules), finest first.

    ResNet: ``[conv1, bn1]``, ``layer1`` .. ``layer4`` (absent or empty stages omitted).
    MobileNetV3: ``features.0``, then groups of blocks, a new group at each stride-2 block
    (5 stages: strides 2, 4, 8, 16, 32)."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ValueError(f"{type(model).__name__}: no backbone to freeze")
    body = getattr(backbone, "body", None)
    if body is not None and hasattr(body, "conv1"):
        stages = [[body.conv1, body.bn1]]
        for i in range(1, 5):
            layer = getattr(body, f"layer{i}", None)
            if layer is not None and any(True for _ in layer.parameters()):
                stages.append([layer])
        return stages
    if body is not None:  # MobileNet features under an FPN
        blocks, starts = list(body.children()), None
    elif hasattr(backbone, "features") and hasattr(backbone, "extra"):  # SSDlite extractor
        first, second = backbone.features[0], backbone.features[1]
        blocks = list(first.children()) + list(second.children())
        # first[-1] is block 13's expansion conv: block 13 (stride 2) starts the last stage
        starts = {len(first) - 1}
    else:
        raise ValueError(f"{type(model).__name__}: backbone layout not recognised for freezing")
    stages: list[list[nn.Module]] = [[blocks[0]]]
    for i, b in enumerate(blocks[1:], start=1):
        if i == 1 or getattr(b, "_is_cn", False) or (starts and i in starts):
            stages.append([])
        stages[-1].append(b)
    return stages


def freeze(model: nn.Module, *, backbone_stages: int, batchnorm: str = "frozen") -> int:
    """Freeze the backbone's stem and its first ``backbone_stages`` stages; returns the number
    of parameter elements frozen.

    ``backbone_stages=0`` freezes nothing; ``N >= 1`` freezes the stem and stages 1..N (see
    :func:`split_backbone`: ResNet conv1/bn1 + layer1..layerN, MobileNet features.0 + the first
    N stride groups); ``-1`` freezes the whole body. Frozen parameters get
    ``requires_grad=False`` (the LightningModule's optimizer only takes trainable ones).

    BatchNorm: layers in frozen parts are replaced by :class:`EvalBatchNorm2d` (kept in eval
    mode through ``model.train()``, so their running statistics do not drift; nothing to call
    from the LightningModule). ``batchnorm="all"`` does this for every BatchNorm of the
    backbone body (torchvision's choice for pretrained detectors trained with small batches);
    ``"frozen"`` (default) only in frozen parts.
    """
    stages = split_backbone(model)
    n_max = len(stages) - 1
    if backbone_stages == -1:
        backbone_stages = n_max
    if not 0 <= backbone_stages <= n_max:
        raise ValueError(f"backbone_stages: expected -1 or 0..{n_max} for this backbone, got {backbone_stages}")
    if batchnorm not in ("frozen", "all"):
        raise ValueError(f"batchnorm: expected 'frozen' or 'all', got {batchnorm!r}")
    frozen = 0
    parts = [m for stage in stages[: backbone_stages + 1] for m in stage] if backbone_stages else []
    for p in {id(p): p for m in parts for p in m.parameters()}.values():
        if p.requires_grad:
            frozen += p.numel()
            p.requires_grad_(False)
    held = parts if batchnorm == "frozen" else [m for stage in stages for m in stage]
    _eval_bn(model, {id(x) for m in held for x in m.modules() if isinstance(x, nn.BatchNorm2d)})
    return frozen
