"""LightningModule: delegates to the network; knows nothing of file formats."""
from __future__ import annotations

import itertools
import math
import time

import lightning as L
import numpy as np
import torch

from detector.metrics import ImageEval, evaluate_detections
from detector.spec import SPEC_KEY, ModelSpec
from detector.train.models import BACKGROUND_OFFSET, build_model


class DetectionModule(L.LightningModule):
    """Training and validation of one detector.

    The learning rate warms up linearly for ``warmup_steps`` then follows a cosine to
    ``lr * final_lr_frac``. Progress is the larger of step progress (``max_steps``) and time
    progress (``max_minutes``), so a run bounded by wall time still anneals fully. Training time
    already spent is saved in every checkpoint (``revet_train_seconds``) and restored on
    resume, as Lightning restores its own timer, so a resumed time-limited run ends annealed.
    """

    def __init__(self, spec_json: str, *, lr: float = 1e-3, weight_decay: float = 1e-4,
                 optimizer: str = "adamw", warmup_steps: int = 50, max_steps: int = 1000,
                 max_minutes: float | None = None, final_lr_frac: float = 0.02) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = ModelSpec.from_json(spec_json)
        self.model = build_model(self.spec)
        self.label_offset = BACKGROUND_OFFSET[self.spec.arch]
        self._val: list[ImageEval] = []
        self._t0: float | None = None
        self._seconds_before = 0.0  # training seconds of earlier runs (restored on resume)
        self.validated_step = -1  # global step of the last validation (-1: none yet)

    def forward(self, images, targets=None):
        return self.model(images, targets)

    # ------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        for k, v in losses.items():
            self.log(f"train/{k}", v, batch_size=len(images))
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=len(images))
        return loss

    def on_train_start(self) -> None:
        self._t0 = time.monotonic()

    def train_seconds(self) -> float:
        """Training wall time so far, earlier (resumed) runs included."""
        return self._seconds_before + (time.monotonic() - self._t0 if self._t0 is not None else 0.0)

    def _progress(self) -> float:
        p = self.global_step / max(1, self.hparams.max_steps)
        if self.hparams.max_minutes and self._t0 is not None:
            p = max(p, self.train_seconds() / (60 * self.hparams.max_minutes))
        return min(1.0, p)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        hp = self.hparams
        if self.global_step < hp.warmup_steps:
            f = (self.global_step + 1) / hp.warmup_steps
        else:
            f = hp.final_lr_frac + (1 - hp.final_lr_frac) * 0.5 * (1 + math.cos(math.pi * self._progress()))
        for g in self.trainer.optimizers[0].param_groups:
            g["lr"] = hp.lr * f

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.model.parameters() if p.requires_grad]
        if hp.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.optimizer == "sgd":
            return torch.optim.SGD(params, lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay, nesterov=True)
        raise ValueError(f"unknown optimizer {hp.optimizer!r}; expected adamw or sgd")

    # ----------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch, batch_idx):
        images, targets = batch
        preds = self.model(images)
        off = self.label_offset
        for p, t in zip(preds, targets):
            # .float(): under bf16 autocast the outputs are bfloat16, which numpy lacks
            self._val.append(ImageEval(t["boxes"].float().cpu().numpy(), t["labels"].cpu().numpy() - off,
                                       p["boxes"].float().cpu().numpy(), p["scores"].float().cpu().numpy(),
                                       p["labels"].cpu().numpy() - off))

    def _gathered(self) -> list[ImageEval]:
        """Every rank's validation images, in dataset order, once each. Lightning's
        ``DistributedSampler`` gives rank ``r`` images ``r, r + W, ...`` of a list padded to a
        multiple of ``W`` by repeating its first images: interleave, then drop the padding."""
        import torch.distributed as dist

        if self.trainer.world_size < 2 or not (dist.is_available() and dist.is_initialized()):
            return self._val
        parts: list = [None] * self.trainer.world_size
        dist.all_gather_object(parts, self._val)
        merged = [im for group in itertools.zip_longest(*parts) for im in group if im is not None]
        loader = self.trainer.val_dataloaders
        n = len(loader.dataset) if hasattr(loader, "dataset") and not self.trainer.sanity_checking else len(merged)
        return merged[:n]

    def on_validation_epoch_end(self) -> None:
        images = self._gathered()
        m = evaluate_detections(images, self.spec.classes)
        self.log("val/images", float(len(images)))
        self.log("val/mAP50", float(np.nan_to_num(m["mAP50"])), prog_bar=True)
        self.log("val/mAP50_95", float(np.nan_to_num(m["mAP50_95"])))
        for name, c in m["per_class"].items():
            self.log(f"val/AP50_{name}", float(np.nan_to_num(c["AP50"])))
        self.last_val_metrics = m
        if not self.trainer.sanity_checking:
            self.validated_step = self.global_step

    # ---------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[SPEC_KEY] = self.spec.to_json()
        checkpoint["revet_train_seconds"] = self.train_seconds()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._seconds_before = float(checkpoint.get("revet_train_seconds", 0.0))
