"""Training options: one home. Torch-free.

:class:`TrainConfig` declares every option once, with its type, default and help text
(the field's ``metadata``). Three ways in, one set of names and rules:

- Python: ``TrainConfig(train=..., val=..., lr=1e-3)``;
- YAML: :func:`config_from_file` (keys are the field names, e.g. ``configs/revet-base.yaml``);
- the command line: :func:`add_config_flags` makes ``revet train``'s flags from the fields
  (``batch_size`` -> ``--batch-size``; booleans get ``--x/--no-x``; lists are comma-separated;
  ``augment`` takes a YAML mapping), and :func:`flag_overrides` reads them back; a flag left
  out leaves the YAML (or the default) alone.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml


def option(default=None, help: str = "", flags: tuple[str, ...] = ()):  # noqa: A002 - argparse's word
    """A :class:`TrainConfig` field with its help text; ``flags``: extra (older) flag names."""
    return field(default=default, metadata={"help": help, "flags": flags})


@dataclass
class TrainConfig:
    """Everything a training run needs. Paths may be relative to the working directory."""

    train: str = option(help="training COCO JSON")
    val: str = option(help="validation COCO JSON")
    out: str = option("runs/revet", "run folder (best.ckpt, last.ckpt, logs)")
    arch: str = option("fcos_lite", "architecture name (see revet models)", flags=("--model",))
    classes: list[str] | None = option(None, "comma-separated class names (default: the training set's)")
    bands: list[int] | None = option(None, "1-based band list, e.g. 3,2,1 (default: every band that is not alpha)")
    tile_size: int = option(512, "training tile size in pixels (the exported model's window)")
    overlap: int = option(128, "scene window overlap in pixels, stored in the spec")
    crop: int | None = option(256, "train on random object-biased crops of this size (a multiple of 32)")
    epochs: int = option(30, "epochs (with --steps or --max-time, whichever ends first)")
    steps: int | None = option(None, "optimizer steps: the schedule anneals over them (default: epochs x steps "
                                     "per epoch); with --max-time, whichever ends first")
    max_time: float | None = option(None, "stop after this many minutes")
    batch_size: int = option(16, "images per optimizer step (per process)")
    lr: float = option(2e-3, "peak learning rate")
    weight_decay: float = option(1e-4, "weight decay")
    optimizer: str = option("adamw", "adamw or sgd")
    warmup_steps: int = option(50, "linear warm-up steps before the cosine schedule")
    seed: int = option(0, "random seed (data order, crops, augmentation)")
    num_workers: int = option(0, "data loader worker processes (0: load in the main process, cached)",
                              flags=("--workers",))
    photometric: bool = option(True, "brightness/contrast/gamma augmentation")
    augment: dict | None = option(None, "extra augmentation as a YAML mapping of "
                                        "detector.datasets.augment.OPTIONS, e.g. '{hue: 0.05, blur: 0.15}'")
    gsd: float | None = option(None, "the spec's metres per pixel (default: the first training image's)")
    accelerator: str = option("auto", "Lightning accelerator: auto, cpu, gpu")
    devices: int | str = option(1, "devices per node: a count (2 on a CPU trains two processes with gloo), "
                                   "'auto', or ids 0,1")
    precision: str = option("auto", "auto (bf16-mixed where the CPU/GPU has bf16, else 32-true), 32-true, "
                                    "bf16-mixed, 16-mixed (GPU)")
    val_every: int = option(1, "epochs between validations")
    report: bool = option(True, "write curves, PR curves, confusion matrix and metrics.json at the end")
    calibrate_threshold: bool = option(True, "set the operating score thresholds (pooled and per class) to "
                                             "the best-F1 ones on validation")
    save_at_minutes: list[float] | None = option(None, "extra checkpoints ckpt_<M>min.ckpt at these wall-clock "
                                                       "minutes, e.g. 5,10")
    weights: str | None = option(None, "none | coco | imagenet | revet-base (the shipped base model) | PATH "
                                       "(torchvision state dict or Revet .ckpt)")
    freeze: int = option(0, "freeze the stem and this many backbone stages (-1: the whole backbone body)")
    patience: int | None = option(None, "early stopping after this many validations without val mAP@0.5 improving")
    balance: bool = option(False, "class-balanced sampling (images with rare classes drawn more often)")
    threads: int | None = option(None, "torch CPU threads (default: torch's)")

    def __post_init__(self) -> None:
        for req in ("train", "val"):
            if not getattr(self, req):
                raise ValueError(f"training needs '{req}' (a COCO JSON path)")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.gsd is not None and not self.gsd > 0:
            raise ValueError(f"gsd must be a positive number of metres per pixel, got {self.gsd}")
        if self.crop is not None and self.crop % 32:
            raise ValueError(f"crop must be a multiple of 32, got {self.crop}")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
RETIRED = {"extra"}  # options older runs' config.yaml may hold, ignored when read back (empty)


def config_from_file(path: str | os.PathLike | None, overrides: dict) -> TrainConfig:
    """YAML file (optional) then ``overrides`` (None values ignored) -> TrainConfig."""
    data: dict = {}
    if path:
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{p}: cannot read training config ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{p}: expected a mapping of training options")
        for k in RETIRED & set(data):
            if data[k]:
                raise ValueError(f"{p}: training option {k!r} is no longer read (it never did anything)")
            del data[k]
    data.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(f"{path or 'config'}: unknown training options {unknown}; known: {sorted(FIELDS)}")
    check_types(data, path or "config")
    return TrainConfig(**data)  # which refuses a config without train or val


def _type_ok(value, hint: str) -> bool:
    """Whether ``value`` (from YAML or the command line) fits the annotation text ``hint``."""
    for alt in (h.strip() for h in hint.split("|")):
        if alt == "None" and value is None:
            return True
        if alt == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if alt == "float" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return True
        if alt in ("str", "bool", "dict") and isinstance(value, {"str": str, "bool": bool, "dict": dict}[alt]):
            return True
        if alt.startswith("list[") and isinstance(value, list):
            return all(_type_ok(v, alt[5:-1]) for v in value)
    return False


def check_types(data: dict, source) -> None:
    """Refuse options of the wrong type (``epochs: abc``, ``lr: .nan``) naming the option, the
    value and the type expected, before any work starts."""
    for k, v in data.items():
        if k in FIELDS and not _type_ok(v, str(FIELDS[k].type)):
            raise ValueError(f"{source}: training option {k!r} must be {FIELDS[k].type}, got {v!r}")


# -- the command line --------------------------------------------------------------------------

def _scalar(kind: str):
    """Parse one command-line word as ``kind`` (``int``, ``float``, ``str``)."""
    def parse(text: str):
        try:
            return {"int": int, "float": float, "str": str}[kind](text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    parse.__name__ = kind  # argparse names the type in its error
    return parse


def _flag_type(hint: str):
    """The argparse ``type`` for a field annotated ``hint`` (bool fields are handled apart)."""
    alts = [h.strip() for h in hint.split("|") if h.strip() != "None"]
    if alts[0].startswith("list["):
        item = _scalar(alts[0][5:-1])

        def parse_list(text: str) -> list:
            return [item(v.strip()) for v in text.split(",") if v.strip()]
        parse_list.__name__ = f"comma-separated {alts[0][5:-1]}s"
        return parse_list
    if alts[0] == "dict":
        def parse_mapping(text: str) -> dict:
            try:
                v = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise argparse.ArgumentTypeError(f"not YAML: {e}") from None
            if not isinstance(v, dict):
                raise argparse.ArgumentTypeError(f"expected a mapping such as '{{hue: 0.05}}', got {text!r}")
            return v
        parse_mapping.__name__ = "YAML mapping"
        return parse_mapping
    if alts == ["int", "str"]:  # devices: a count, 'auto' or ids
        return lambda text: int(text) if text.strip().isdigit() else text
    return _scalar(alts[0])


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field, default None (not given: the YAML's or the
    field's default applies)."""
    group = parser.add_argument_group("training options (also YAML keys of --config)")
    for name, f in FIELDS.items():
        default = "" if f.default is dataclasses.MISSING or f.default is None else f" (default {f.default})"
        if isinstance(f.default, bool):
            group.add_argument(flag_name(name), *f.metadata["flags"], dest=name, default=None,
                               action=argparse.BooleanOptionalAction, help=f.metadata["help"] + default)
        else:
            group.add_argument(flag_name(name), *f.metadata["flags"], dest=name, default=None,
                               type=_flag_type(str(f.type)), help=f.metadata["help"] + default)


def flag_overrides(args: argparse.Namespace) -> dict:
    """The :class:`TrainConfig` options given on the command line (the others None)."""
    return {name: getattr(args, name, None) for name in FIELDS}
