"""Callbacks the tests add through the config (``+callbacks.<name>._target_=tests.ssl.callbacks.X``)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

#: Modules captured by :class:`KeepModel`, by key.
KEPT: dict[str, pl.LightningModule] = {}

#: ``(loss before, loss after)`` of :class:`FirstBatchLoss`, by key.
LOSSES: dict[str, tuple[float, float]] = {}


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


class FirstBatchLoss(pl.Callback):
    """The method's loss on the first batch's views, before the first step and after the fit, in
    :data:`LOSSES` under ``key``: the same views for both, so the difference is the training's alone."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.views: list[torch.Tensor] | None = None
        self.before: float | None = None

    def _loss(self, pl_module: pl.LightningModule) -> float:
        # Batch-norm layers in training mode update their running statistics: put them back after.
        kept = [(b, b.clone()) for b in pl_module.buffers()]
        with torch.no_grad():
            loss = float(pl_module.step([v.to(pl_module.device) for v in self.views])[0])
            for buffer, value in kept:
                buffer.copy_(value)
        return loss

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.views is not None:
            return
        if isinstance(batch, dict):
            self.views = [v.clone() for v in batch["views"]]
        else:
            windows = batch[0] if isinstance(batch, list | tuple) else batch
            generator = torch.Generator(device=windows.device).manual_seed(0)
            self.views = [v.clone() for v in pl_module.augmentation(windows, generator=generator)]
        self.before = self._loss(pl_module)

    def on_train_end(self, trainer, pl_module):
        LOSSES[self.key] = (self.before, self._loss(pl_module))


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
