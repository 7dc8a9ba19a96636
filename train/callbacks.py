"""Lightning callbacks of a training run."""
from __future__ import annotations

import os
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


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) under which bf16 runs natively
_BF16_ISAS = {"ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
              "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2"}


def cpu_info() -> tuple[str, set[str]]:
    """(CPU model name, set of /proc/cpuinfo flags); flags empty where the file is missing."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return model, flags


def cpu_bf16() -> bool:
    """True when the CPU runs bf16 natively (AVX512-BF16 or AMX-BF16) and oneDNN is not capped
    below it (``ONEDNN_MAX_CPU_ISA=AVX2`` emulates an AVX2 machine: bf16 would then be slow)."""
    flags = cpu_info()[1]
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and cap in _BF16_ISAS


def hardware() -> dict:
    """What the run trains on: CPU model and the flags that decide speed, torch's CPU
    capability, oneDNN's ISA cap (None: none set), thread count, GPU name (None without one)."""
    import torch

    model, flags = cpu_info()
    keys = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return {"cpu": model, "cpu_flags": [k for k in keys if k in flags],
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_isa_cap": os.environ.get("ONEDNN_MAX_CPU_ISA"), "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


class StepBudget(L.Callback):
    """Measure the step rate after ``probe`` steps and say what the budget buys.

    Logs the steps per second, the steps and epochs that ``max_minutes`` (or the step limit)
    buys, and warns when that is fewer than ``min_steps`` (enough for the chosen start: from
    scratch needs thousands, a fine-tune from ``revet-base`` a few hundred). The figures land
    in ``self.record`` (the run writes them to ``budget.json``)."""

    def __init__(self, *, max_minutes: float | None, max_steps: int, steps_per_epoch: int,
                 min_steps: int, start: str, probe: int = 8) -> None:
        self.max_minutes, self.max_steps, self.steps_per_epoch = max_minutes, max_steps, steps_per_epoch
        self.min_steps, self.start, self.probe = min_steps, start, probe
        self.t0: float | None = None
        self.first_step = 0
        self.record: dict = {"start": start, "steps_planned": max_steps}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.t0 is None and trainer.global_step >= self.first_step + 2:  # skip warm-up steps
            self.t0, self.first_step = time.monotonic(), trainer.global_step
        elif self.t0 is None and self.first_step == 0:
            self.first_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.t0 is None or "steps_per_s" in self.record:
            return
        done = trainer.global_step - self.first_step
        if done < self.probe:
            return
        import logging

        log = logging.getLogger("revet.train")
        rate = done / max(time.monotonic() - self.t0, 1e-9)
        left = self.max_steps - trainer.global_step
        if self.max_minutes:  # the time left (a resumed run has spent some already)
            spent = pl_module.train_seconds() if hasattr(pl_module, "train_seconds") else 0.0
            left = min(left, int(rate * max(0.0, 60 * self.max_minutes - spent)))
        buys = trainer.global_step + max(left, 0)
        self.record.update(steps_per_s=round(rate, 3), steps_budget=buys,
                           epochs_budget=round(buys / max(1, self.steps_per_epoch), 1))
        log.info("step rate %.2f steps/s: the budget buys about %d steps (%.1f epochs)", rate, buys,
                 buys / max(1, self.steps_per_epoch))
        if buys < self.min_steps:
            advice = " or fine-tune from revet-base (--weights revet-base)" if self.start == "from-scratch" else ""
            self.record["warning"] = (f"the budget buys about {buys} steps, fewer than the {self.min_steps} "
                                      f"a {self.start} run needs: raise --max-time or --steps{advice}")
            log.warning("WARNING: %s", self.record["warning"])
