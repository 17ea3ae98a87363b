"""Lightning pieces of the features stage: windows cut where they are consumed, feature blocks out.

Windows are cut from whole mosaics held in memory as float32 (:class:`ResidentMosaics`: each mosaic read
and converted once, in ``cutout_id`` order, which is mosaic-major), in one of two places (``gather_on``):

- ``device`` (the default on GPUs): the DataLoader only hands out window positions; ``predict_step`` cuts
  the windows from the mosaic resident on the model's device, normalises and resizes them there. Loader
  threads read and convert the next mosaics into page-locked memory meanwhile.
- ``workers`` (the default on CPUs): each DataLoader worker holds the mosaics it reads, cuts its batch and
  normalises and resizes it, a few windows at a time, straight into one of its reused shared-memory
  buffers; the model's process maps each buffer once and then gets the model-ready batches without a copy
  or a mapping per batch.

Each rank gets a contiguous run of the blocks still missing (decided by rank 0 and broadcast so every rank
sees the same list), so each rank reads only its own mosaics, and :class:`BlockWriter` writes a block as
soon as its rows are in.
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
from torch.utils.data import DataLoader, Dataset, get_worker_info

from radio_curation.cutouts.reader import WindowReader
from radio_curation.cutouts.resident import ResidentMosaics
from radio_curation.errors import RadioCurationError
from radio_curation.features.io import BlockShards, Plan
from radio_curation.progress import ProgressBar, progress

#: Where windows are cut and preprocessed (``gather_on``).
GATHER_ON = ("device", "workers")
#: Windows preprocessed at a time in a loader worker: a chunk's intermediates stay in the CPU caches.
PREPROCESS_CHUNK = 16
#: Batches each loader worker prepares ahead of the one being consumed.
LOADER_PREFETCH = 2
#: Shared output buffers per loader worker (and window side): the prefetched batches, the two the predict
#: loop holds, and one spare.
OUTPUT_BUFFERS = LOADER_PREFETCH + 3


def cpu_threads(num_workers: int) -> int:
    """Compute threads for the main process when ``num_workers`` loader processes share this machine's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - int(num_workers))


def _keep(item: dict[str, Any]) -> dict[str, Any]:
    """DataLoader conversion that leaves NumPy positions on the host (the default makes them tensors)."""
    return item


class WindowBatches(Dataset):
    """Item ``i`` is a whole batch of windows of one block and one size.

    Batches never cross a block and hold windows of one size (a merged index may mix 64 and 128 px runs).
    Every item has ``cutout_id`` (NumPy int64 ``[B]``) and ``block``, and, by what this dataset does:

    - ``gather=False``: the positions ``mosaic``, ``y0``, ``x0`` (NumPy ``[B]``) and ``size``, for the model's
      device to cut the windows (:meth:`ResidentMosaics.gather`);
    - ``preprocess`` given: ``inputs``, the model-ready windows ``[B, 1, R, R]`` (one channel). A loader
      worker writes them into one of its reused shared-memory buffers and hands out only the buffer's key
      (``buffer``), with the buffer itself (``shared``) the first time: :meth:`delivered`, in the model's
      process, maps each buffer once and puts ``inputs`` back, so no batch pays for passing a file
      descriptor between processes and mapping fresh memory;
    - neither: ``pixels``, the raw windows ``[B, 1, S, S]``.

    Parameters
    ----------
    reader
        The index's window reader.
    plan, blocks
        The block plan and the blocks to cover, in order.
    sizes
        Window size of every row of the index.
    batch_size
        Windows per item.
    preprocess
        Normalisation and resizing to apply here (one channel is kept; the model's side repeats it).
    gather
        Cut the windows here (False: hand out positions only).
    """

    def __init__(
        self,
        reader: WindowReader,
        plan: Plan,
        blocks: list[int],
        sizes: np.ndarray,
        batch_size: int,
        preprocess: nn.Module | None = None,
        gather: bool = True,
    ) -> None:
        ids = reader.cutout_ids
        self.reader = reader
        self.preprocess = preprocess
        self.gather = gather
        self.batch_size = int(batch_size)
        self._buffers: dict[int, list[tuple[tuple[int, int, int], Tensor]]] = {}
        self._delivered: dict[tuple[int, int, int], Tensor] = {}
        #: Hand out buffer keys (False: the batch itself, for a DataLoader that copies it to pinned memory).
        self.keys_only = True
        self.items: list[tuple[int, np.ndarray]] = []
        for block in blocks:
            start, stop = plan.block_range(block)
            block_sizes = sizes[start:stop]
            for size in np.unique(block_sizes):
                rows = start + np.flatnonzero(block_sizes == size)
                for first in range(0, len(rows), batch_size):
                    self.items.append((block, ids[rows[first : first + batch_size]]))
        self.mosaics = ResidentMosaics(
            reader.mosaic_paths, reader.nan_fill, "cpu", self.mosaic_order(), ahead=1
        )

    def mosaic_order(self) -> list[int]:
        """Mosaic codes in the order the items use them."""
        codes = self.reader.positions(
            np.concatenate([ids for _, ids in self.items] or [np.zeros(0, np.int64)])
        )
        first = np.unique(codes["mosaic"], return_index=True)[1]
        return codes["mosaic"][np.sort(first)].tolist()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        block, ids = self.items[index]
        where = self.reader.positions(ids)
        item: dict[str, Any] = {"cutout_id": ids, "block": block}
        if not self.gather:
            size = int(where["size"][0])
            return {**item, "mosaic": where["mosaic"], "y0": where["y0"], "x0": where["x0"], "size": size}
        pixels = self.mosaics.gather(where["mosaic"], where["y0"], where["x0"], int(where["size"][0]))
        if self.preprocess is None:
            return {**item, "pixels": pixels}
        side = self.preprocess.resize or pixels.shape[-1]
        with torch.no_grad():
            if get_worker_info() is None:
                # In the model's process: one batch, the compute threads split it.
                out = torch.empty((len(pixels), 1, side, side), dtype=torch.float32)
                self.preprocess(pixels, out=out)
                return {**item, "inputs": out}
            key, buffer, first = self._output_buffer(side)
            out = buffer[: len(pixels)]
            # One thread per worker: a few windows at a time keep the intermediates in the CPU caches, and
            # the resize writes each chunk straight into the shared buffer.
            for start in range(0, len(pixels), PREPROCESS_CHUNK):
                stop = start + PREPROCESS_CHUNK
                self.preprocess(pixels[start:stop], out=out[start:stop])
        if not self.keys_only:
            return {**item, "inputs": out}
        return {**item, "buffer": key, **({"shared": buffer} if first else {})}

    def delivered(self, item: dict[str, Any]) -> dict[str, Any]:
        """An item as the DataLoader hands it to the model's process, with ``inputs`` in place of a buffer key.

        Buffers stay mapped for the life of this dataset object (one predict run): at most
        ``OUTPUT_BUFFERS`` per loader worker and window side.
        """
        if "buffer" not in item:
            return item
        item = dict(item)
        key = item.pop("buffer")
        if "shared" in item:
            self._delivered[key] = item.pop("shared")
        return {**item, "inputs": self._delivered[key][: len(item["cutout_id"])]}

    def _output_buffer(self, side: int) -> tuple[tuple[int, int, int], Tensor, bool]:
        """The next of this worker's shared-memory output buffers for ``side`` px windows.

        The model's process maps them, so a batch crosses the process boundary without a copy, and reusing
        them spares the page faults of fresh memory for every batch. A buffer comes round again only after
        ``OUTPUT_BUFFERS`` more batches of this worker: by then the DataLoader (which hands out at most
        ``LOADER_PREFETCH`` batches per worker beyond the one being consumed) and the predict loop (which
        holds the current batch and the next one) are done with it.

        Returns the buffer's key (this process, the side, its place in the ring), the buffer, and whether
        this is its first use (the model's process has not seen it yet).
        """
        ring = self._buffers.setdefault(side, [])
        if len(ring) < OUTPUT_BUFFERS:
            buffer = torch.empty((self.batch_size, 1, side, side), dtype=torch.float32).share_memory_()
            ring.append(((os.getpid(), side, len(ring)), buffer))
            return (*ring[-1], True)
        ring.append(ring.pop(0))
        return (*ring[-1], False)

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
        Windows per item; DataLoader processes (``gather_on=workers``) or mosaic loader threads
        (``gather_on=device``).
    preprocess
        Normalisation and resizing (the model's :class:`~radio_curation.data.preprocess.Preprocess`).
    gather_on
        ``device`` or ``workers`` (see the module docstring).
    shards, plan
        The block store and its plan on rank 0; other ranks pass None and receive them in :meth:`setup`.
    """

    def __init__(
        self,
        merged_path: Path,
        batch_size: int,
        num_workers: int,
        preprocess: nn.Module,
        gather_on: str,
        shards: BlockShards | None = None,
        plan: Plan | None = None,
    ) -> None:
        super().__init__()
        self.merged_path = Path(merged_path)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.preprocess = preprocess
        self.gather_on = gather_on
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
        # Contiguous runs of blocks, not round robin: each rank then reads only the mosaics of its blocks.
        mine = [
            int(b)
            for b in np.array_split(np.asarray(payload["pending"], dtype=np.int64), trainer.world_size)[
                trainer.global_rank
            ]
        ]
        reader = WindowReader(self.merged_path)
        self.cutout_ids = reader.cutout_ids
        on_device = self.gather_on == "device"
        self.dataset = WindowBatches(
            reader,
            self.plan,
            mine,
            reader.table()["size"],
            self.batch_size,
            preprocess=None if on_device else self.preprocess,
            gather=not on_device,
        )

    @property
    def loader_processes(self) -> int:
        """DataLoader worker processes this data module starts."""
        return self.num_workers if self.gather_on == "workers" else 0

    def resident_mosaics(self, device: torch.device) -> ResidentMosaics:
        """The mosaics of this rank's windows on ``device``, ``num_workers`` of them loaded ahead."""
        reader = self.dataset.reader
        return ResidentMosaics(
            reader.mosaic_paths, reader.nan_fill, device, self.dataset.mosaic_order(), ahead=self.num_workers
        )

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """A loader worker's batch with its shared buffer in place of the buffer's key."""
        return self.dataset.delivered(batch)

    def predict_dataloader(self) -> DataLoader:
        workers = self.loader_processes
        pin = workers > 0 and torch.cuda.is_available()
        # The DataLoader pins what the batches carry: then they carry the windows, not a buffer key.
        self.dataset.keys_only = not pin
        return DataLoader(
            self.dataset,
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            collate_fn=_keep,
            pin_memory=pin,
            prefetch_factor=LOADER_PREFETCH if workers > 0 else None,
            persistent_workers=False,
        )


class FeatureModule(pl.LightningModule):
    """``predict_step``: the batch made model-ready (here, or by the loader workers), then the backbone.

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
        self._mosaics: ResidentMosaics | None = None

    def on_predict_start(self) -> None:
        if self.channels_last:
            self.extractor.to(memory_format=torch.channels_last)
        self._threads = torch.get_num_threads()
        datamodule: FeatureDataModule = self.trainer.datamodule
        if datamodule.gather_on == "device":
            self._mosaics = datamodule.resident_mosaics(self.device)
        if self.device.type == "cpu":
            # DataLoader workers take cores too: more compute threads than free cores stall on each other.
            torch.set_num_threads(cpu_threads(datamodule.loader_processes))

    def on_predict_end(self) -> None:
        torch.set_num_threads(self._threads)
        if self._mosaics is not None:
            self._mosaics.close()
            self._mosaics = None

    def model_inputs(self, batch: dict[str, Any]) -> Tensor:
        """The model-ready ``[B, in_chans, R, R]`` float32 batch on this module's device."""
        if "inputs" in batch:
            x = batch["inputs"].expand(-1, self.preprocess.in_chans, -1, -1)
        else:
            pixels = self._mosaics.gather(batch["mosaic"], batch["y0"], batch["x0"], batch["size"])
            # Normalisation statistics stay in float32 whatever the autocast precision of the model.
            with torch.autocast(self.device.type, enabled=False):
                x = self.preprocess(pixels)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self.extractor(self.model_inputs(batch))


class BlockWriter(Callback):
    """Collects each block's rows and writes the block file once all of them are in.

    On a GPU the features of a batch are copied to the host asynchronously and stored one batch later, so
    the device already works on the next batch instead of waiting for the copy.

    Parameters
    ----------
    dtype
        Storage dtype of the features (float32 or float16).
    """

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.rows_written = 0
        self._open: dict[int, dict[str, Any]] = {}
        self._copies: list[tuple[torch.cuda.Event | None, Tensor, np.ndarray, int]] = []

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Tensor,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        feats = outputs.detach().float()
        event = None
        if feats.is_cuda:
            host = torch.empty(feats.shape, dtype=feats.dtype, pin_memory=True)
            host.copy_(feats, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            feats = host
        self._copies.append((event, feats, np.asarray(batch["cutout_id"]), int(batch["block"])))
        while len(self._copies) > (1 if event is not None else 0):
            self._store(trainer, *self._copies.pop(0))

    def _store(
        self, trainer: pl.Trainer, event: torch.cuda.Event | None, feats: Tensor, ids: np.ndarray, block: int
    ) -> None:
        if event is not None:
            event.synchronize()
        datamodule: FeatureDataModule = trainer.datamodule
        feats = feats.numpy().astype(self.dtype, copy=False)
        start, stop = datamodule.plan.block_range(block)
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
            datamodule.shards.write(block, start, block_ids, entry["features"], trainer.global_rank)
            self.rows_written += len(block_ids)
            del self._open[block]
        if trainer.received_sigterm:
            # SLURM requeues, preempts or cancels the job: stop at this batch, as Lightning's fit loop does,
            # rather than run on until SIGKILL. The blocks on disk are kept; the next attempt starts after them.
            raise SIGTERMException

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        while self._copies:
            self._store(trainer, *self._copies.pop(0))
        if self._open:
            raise RadioCurationError(
                f"blocks {sorted(self._open)} were left incomplete on rank {trainer.global_rank}"
            )
        # Rank 0 checks the blocks and renames the file into place right after: every rank's rows must be on disk.
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
