"""Lightning callbacks of a training run."""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L


class TimedCheckpoints(L.Callback):
    """Save ``ckpt_<M>min.ckpt`` when the run's wall-clock time first passes each of
    ``minutes`` (for time-to-accuracy benchmarks: the checkpoints are evaluated afterwards)."""

    def __init__(self, dirpath: str | Path, minutes: list[float]) -> None:
        self.dirpath = Path(dirpath)
        self.pending = sorted(minutes)
        self.t0: float | None = None
        self.saved: dict[float, str] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.t0 = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        elapsed = (time.monotonic() - self.t0) / 60
        while self.pending and elapsed >= self.pending[0]:
            self._save(trainer, self.pending.pop(0))

    def on_train_end(self, trainer, pl_module) -> None:
        # a run that stopped by max_time just short of a mark still records its final state
        for m in self.pending:
            if abs((time.monotonic() - self.t0) / 60 - m) < 0.5:
                self._save(trainer, m)
        self.pending = [m for m in self.pending if m not in self.saved]

    def _save(self, trainer, minutes: float) -> None:
        path = self.dirpath / f"ckpt_{minutes:g}min.ckpt"
        trainer.save_checkpoint(path)
        self.saved[minutes] = str(path)
