"""Lightning pieces of the features stage: batches of raw windows in, feature blocks out.

The DataLoader only gathers raw windows (one :meth:`WindowReader.read` per batch, in worker processes);
normalisation, resizing and the forward pass run on the model's device inside ``predict_step``. Each rank
gets whole blocks of the plan (round robin over the blocks still missing, decided by rank 0 and broadcast
so every rank sees the same list) and :class:`BlockWriter` writes a block as soon as its rows are in.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from radio_curation.cutouts.reader import WindowReader
from radio_curation.errors import RadioCurationError
from radio_curation.features.io import BlockShards, Plan
from radio_curation.progress import ProgressBar, progress


def cpu_threads(num_workers: int) -> int:
    """Compute threads for the main process when ``num_workers`` loader processes share this machine's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - int(num_workers))


class WindowBatches(Dataset):
    """Item ``i`` is a whole batch: ``{"pixels" [B, 1, S, S], "cutout_id" [B], "block"}``.

    Batches never cross a block and hold windows of one size (a merged index may mix 64 and 128 px runs).
    """

    def __init__(
        self, reader: WindowReader, plan: Plan, blocks: list[int], sizes: np.ndarray, batch_size: int
    ) -> None:
        ids = reader.cutout_ids
        self.reader = reader
        self.items: list[tuple[int, np.ndarray]] = []
        for block in blocks:
            start, stop = plan.block_range(block)
            block_sizes = sizes[start:stop]
            for size in np.unique(block_sizes):
                rows = start + np.flatnonzero(block_sizes == size)
                for first in range(0, len(rows), batch_size):
                    self.items.append((block, ids[rows[first : first + batch_size]]))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        block, ids = self.items[index]
        return {
            "pixels": torch.from_numpy(self.reader.read(ids)),
            "cutout_id": torch.from_numpy(ids),
            "block": block,
        }

    @property
    def rows(self) -> int:
        """Windows in all batches."""
        return sum(len(ids) for _, ids in self.items)


class FeatureDataModule(pl.LightningDataModule):
    """Windows of a merged index for the blocks this rank computes.

    Parameters
    ----------
    merged_path
        The merge run's ``merged.h5``.
    batch_size, num_workers
        DataLoader settings (each item is already a batch).
    shards, plan
        The block store and its plan on rank 0; other ranks pass None and receive them in :meth:`setup`.
    """

    def __init__(
        self,
        merged_path: Path,
        batch_size: int,
        num_workers: int,
        shards: BlockShards | None = None,
        plan: Plan | None = None,
    ) -> None:
        super().__init__()
        self.merged_path = Path(merged_path)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.shards = shards
        self.plan = plan
        self.dataset: WindowBatches | None = None
        self.cutout_ids: np.ndarray | None = None

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        payload = None
        if trainer.is_global_zero:
            payload = {
                "directory": str(self.shards.directory),
                "plan": self.plan,
                "pending": self.shards.pending(self.plan),
            }
        payload = trainer.strategy.broadcast(payload, src=0)
        self.shards = BlockShards(payload["directory"])
        self.plan = payload["plan"]
        mine = payload["pending"][trainer.global_rank :: trainer.world_size]
        reader = WindowReader(self.merged_path)
        self.cutout_ids = reader.cutout_ids
        self.dataset = WindowBatches(reader, self.plan, mine, reader.table()["size"], self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            self.dataset,
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=4 if workers > 0 else None,
            persistent_workers=False,
        )


class FeatureModule(pl.LightningModule):
    """``predict_step``: preprocess the raw batch on the device, then the tapped backbone.

    Parameters
    ----------
    extractor
        The :class:`~radio_curation.backbones.extractor.FeatureExtractor`.
    preprocess
        The :class:`~radio_curation.data.preprocess.Preprocess` for it.
    channels_last
        Feed NHWC tensors (faster convolutions on recent GPUs).
    """

    def __init__(self, extractor: nn.Module, preprocess: nn.Module, channels_last: bool = False) -> None:
        super().__init__()
        self.extractor = extractor
        self.preprocess = preprocess
        self.channels_last = channels_last
        self._threads = torch.get_num_threads()

    def on_predict_start(self) -> None:
        if self.channels_last:
            self.extractor.to(memory_format=torch.channels_last)
        self._threads = torch.get_num_threads()
        if self.device.type == "cpu":
            # DataLoader workers take cores too: more compute threads than free cores stall on each other.
            torch.set_num_threads(cpu_threads(self.trainer.datamodule.num_workers))

    def on_predict_end(self) -> None:
        torch.set_num_threads(self._threads)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        # Normalisation statistics stay in float32 whatever the autocast precision of the model.
        with torch.autocast(self.device.type, enabled=False):
            x = self.preprocess(batch["pixels"])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.extractor(x)


class BlockWriter(Callback):
    """Collects each block's rows and writes the block file once all of them are in.

    Parameters
    ----------
    dtype
        Storage dtype of the features (float32 or float16).
    """

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.rows_written = 0
        self._open: dict[int, dict[str, Any]] = {}

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Tensor,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        datamodule: FeatureDataModule = trainer.datamodule
        plan = datamodule.plan
        block = int(batch["block"])
        feats = outputs.detach().float().cpu().numpy().astype(self.dtype, copy=False)
        ids = batch["cutout_id"].cpu().numpy()
        start, stop = plan.block_range(block)
        block_ids = datamodule.cutout_ids[start:stop]
        entry = self._open.get(block)
        if entry is None:
            entry = {"features": np.empty((stop - start, feats.shape[1]), dtype=self.dtype), "filled": 0}
            self._open[block] = entry
        if feats.shape[1] != entry["features"].shape[1]:
            raise RadioCurationError(
                f"the backbone gives {feats.shape[1]} features for some window sizes and "
                f"{entry['features'].shape[1]} for others; set resize=<pixels> so every window has one size"
            )
        entry["features"][np.searchsorted(block_ids, ids)] = feats
        entry["filled"] += len(ids)
        if entry["filled"] == len(block_ids):
            datamodule.shards.write(block, block_ids, entry["features"], trainer.global_rank)
            self.rows_written += len(block_ids)
            del self._open[block]
        if trainer.received_sigterm:
            # SLURM requeues, preempts or cancels the job: stop at this batch, as Lightning's fit loop does,
            # rather than run on until SIGKILL. The blocks on disk are kept; the next attempt starts after them.
            raise SIGTERMException

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._open:
            raise RadioCurationError(
                f"blocks {sorted(self._open)} were left incomplete on rank {trainer.global_rank}"
            )
        # Rank 0 joins the blocks into features.h5 right after: every rank's blocks must be on disk.
        trainer.strategy.barrier("features-blocks-written")


class RateBar(Callback):
    """A progress bar in windows per second for this rank's share of the work."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._bar: ProgressBar | None = None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            total = trainer.datamodule.dataset.rows
            self._bar = self._stack.enter_context(progress(total, "features (rank 0)", unit="win"))

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._bar is not None:
            self._bar.advance(len(batch["cutout_id"]))

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stack.close()
        self._bar = None
