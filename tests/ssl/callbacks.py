"""Callbacks the tests add through the config (``+callbacks.<name>._target_=tests.ssl.callbacks.X``)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytorch_lightning as pl

#: Modules captured by :class:`KeepModel`, by key.
KEPT: dict[str, pl.LightningModule] = {}


class CrashAt(pl.Callback):
    """Fail the fit when it reaches optimizer step ``step`` (a crash mid-training)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise RuntimeError(f"test crash at step {trainer.global_step}")


class RecordFit(pl.Callback):
    """Write per-rank facts about the fit to ``<path>/rank<r>.json``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.first_step: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_step is None:
            self.first_step = trainer.global_step

    def on_train_end(self, trainer, pl_module):
        self.path.mkdir(parents=True, exist_ok=True)
        facts = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "first_step": self.first_step,
            "last_step": trainer.global_step,
            "sync_batchnorm": any(type(m).__name__ == "SyncBatchNorm" for m in pl_module.modules()),
            "batches": trainer.num_training_batches,
        }
        (self.path / f"rank{trainer.global_rank}.json").write_text(json.dumps(facts))


class KeepModel(pl.Callback):
    """Keep the trained LightningModule in :data:`KEPT` under ``key``."""

    def __init__(self, key: str) -> None:
        self.key = key

    def on_train_end(self, trainer, pl_module):
        KEPT[self.key] = pl_module


class TimeOutOnce(pl.Callback):
    """At optimizer step ``step``, send this process the signal a scheduler sends before a job's time limit
    (submitit's ``SIGUSR2``), once: ``marker`` records that it was sent, for the requeued job to see."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step and not self.marker.exists():
            self.marker.write_text(str(trainer.global_step))
            os.kill(os.getpid(), signal.SIGUSR2)


class SlowSteps(pl.Callback):
    """Sleep ``seconds`` after every step: a long training in wall time that uses no CPU (time limits)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(self.seconds)
