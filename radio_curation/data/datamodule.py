"""Training data: raw windows of a subsample, gathered a batch at a time, held in memory when they fit.

When the windows take at most ``resident_gb`` they are read once (through the cutout reader in
``cutout_id`` order, or from the pixel cache) into one float32 tensor, and every batch is one index gather
from it: on the GPU itself when the views are made there (the loader then only hands out row numbers), or
by the DataLoader workers from shared memory otherwise. Under DDP the ranks of a node map one copy (the
node's first rank reads it). Larger subsamples are read a batch at a time (one
batched read through the cutout reader, or one fancy-indexed read from the cache). Views are made for whole
batches, never per sample: on the model's device (GPUs), or in the DataLoader workers when training on
CPUs. A batch holds its windows in ``cutout_id`` order whichever way they are read.

Training is reproducible across interruptions: the shuffle of an epoch is a function of (seed, epoch), the
random views of a batch a function of (seed, epoch, rank, batch), and the loader's position within the epoch
is saved in Lightning's checkpoints, so a run resumed from a mid-epoch checkpoint trains on the batches and
views an uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from radio_curation.atomic import atomic_path
from radio_curation.cutouts.reader import WindowReader
from radio_curation.data.augmentation import batch_seed, views_generator
from radio_curation.data.node_shared import one_copy_per_node
from radio_curation.errors import RadioCurationError
from radio_curation.progress import progress

#: Windows read per batch while filling the cache.
CACHE_READ_BATCH = 512


def _as_batch(batch: Tensor) -> Tensor:
    """Collate function for datasets that return whole batches from ``__getitems__``."""
    return batch


class EpochShuffle(Sampler[int]):
    """A permutation of ``range(n)`` per epoch that depends on ``(seed, epoch)`` only.

    Lightning calls :meth:`set_epoch` at the start of every epoch (also through its DDP sampler wrapper), so a
    resumed run draws the same order for an epoch as an uninterrupted one.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())


class SeededBatch(list):
    """The indices of one batch with the seed of its views (:func:`batch_seed`) as ``seed``."""

    def __init__(self, indices: list[int], seed: int) -> None:
        super().__init__(indices)
        self.seed = seed


class EpochBatches(BatchSampler):
    """Batches of ``sampler`` as :class:`SeededBatch`, from batch ``skip`` of the epoch on.

    The epoch and rank are read from the sampler (:class:`EpochShuffle`, or Lightning's DDP wrapper of it).
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool, seed: int = 0) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.seed = int(seed)
        self.skip = 0

    def __iter__(self) -> Iterator[SeededBatch]:
        epoch, rank = int(getattr(self.sampler, "epoch", 0)), int(getattr(self.sampler, "rank", 0))
        for i, indices in enumerate(super().__iter__()):
            if i >= self.skip:
                yield SeededBatch(indices, batch_seed(self.seed, epoch, rank, i))


class ResumableLoader(DataLoader):
    """A DataLoader over :class:`EpochBatches` whose position in the epoch is saved in Lightning's checkpoints.

    Lightning saves ``state_dict()`` of a train loader that has one and hands it back through
    ``load_state_dict`` when it resumes; the next epoch iterated is then the interrupted one (Lightning sets
    the sampler's epoch first), and it starts after the batches already trained on.
    """

    _epoch = 0
    _position = 0
    _resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        batches: EpochBatches = self.batch_sampler
        epoch = int(getattr(batches.sampler, "epoch", 0))
        resume, self._resume = self._resume, None
        skip = resume["batches"] if resume is not None and resume["epoch"] == epoch else 0
        batches.skip = skip if skip < len(batches) else 0
        self._epoch, self._position = epoch, batches.skip
        # Iterated lazily, so Lightning has set the sampler's epoch before the first batch is drawn.
        for batch in super().__iter__():
            self._position += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The epoch being iterated and how many of its batches were handed out."""
        return {"epoch": self._epoch, "batches": self._position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume the epoch of ``state`` after its handed-out batches, when that epoch is iterated next."""
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}


class RestoreLoaderPosition(pl.Callback):
    """Hand a resumed fit's :class:`ResumableLoader` its position in the interrupted epoch.

    Lightning saves the loader's ``state_dict`` in its checkpoints but hands it back only to a loader it
    creates after restoring the checkpoint, while ``trainer.estimated_stepping_batches`` (which the
    learning-rate schedule needs in ``configure_optimizers``) creates it before.
    """

    def __init__(self) -> None:
        self._states: list[dict[str, int]] = []

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._states = checkpoint["loops"]["fit_loop"]["state_dict"].get("combined_loader", [])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.train_dataloader
        if self._states and isinstance(loader, ResumableLoader):
            loader.load_state_dict(self._states[0])
        self._states = []


class ViewsInWorkers(Dataset):
    """A dataset of whole batches whose views are made in the DataLoader worker.

    For training on CPUs: the batched augmentation then runs beside the model in the worker processes
    instead of between its steps. A batch of :class:`SeededBatch` indices becomes ``{"views": [view, ...]}``,
    drawn with the batch's seed.

    Parameters
    ----------
    windows
        The dataset of raw windows.
    augmentation
        The module making the views (``augmentation`` group).
    """

    def __init__(self, windows: Dataset, augmentation: nn.Module) -> None:
        self.windows = windows
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.windows)

    def __getitems__(self, indices: SeededBatch) -> dict[str, list[Tensor]]:
        generator = views_generator(indices.seed)
        return {"views": self.augmentation(self.windows.__getitems__(indices), generator=generator)}

    def __getitem__(self, index: int) -> Tensor:
        return self.windows[index]


class ReaderWindows(Dataset):
    """Windows of ``cutout_ids`` read through the cutout reader, a whole batch per read.

    Parameters
    ----------
    merged_path
        The merge run's ``merged.h5``.
    cutout_ids
        The windows to train on (rows of this dataset).
    nan_fill
        Value for blank (NaN) pixels.
    """

    def __init__(self, merged_path: str | Path, cutout_ids: np.ndarray, nan_fill: float = 0.0) -> None:
        self.reader = WindowReader(str(merged_path), nan_fill=nan_fill)
        self.cutout_ids = np.asarray(cutout_ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.cutout_ids)

    def __getitems__(self, indices: list[int]) -> Tensor:
        """The windows at ``indices`` as one ``[B, 1, S, S]`` float32 tensor (order within a batch is free)."""
        return torch.from_numpy(self.reader.read(np.sort(self.cutout_ids[np.asarray(indices)])))

    def __getitem__(self, index: int) -> Tensor:
        return self.__getitems__([index])[0]


def read_windows_into(
    pixels: Tensor, merged_path: str | Path, cutout_ids: np.ndarray, nan_fill: float = 0.0
) -> None:
    """Read the pixels of ``cutout_ids`` into ``pixels`` (``[N, 1, S, S]`` float32), rows in that order.

    Read in ``cutout_id`` order (sequential reads of each mosaic), bitwise what the reader returns.
    """
    reader = WindowReader(str(merged_path), nan_fill=nan_fill)
    ids = np.asarray(cutout_ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    with progress(len(ids), "loading windows", unit="win") as bar:
        for start in range(0, len(ids), CACHE_READ_BATCH):
            rows = torch.from_numpy(order[start : start + CACHE_READ_BATCH])
            pixels[rows] = torch.from_numpy(reader.read(ids[rows.numpy()]))
            bar.advance(len(rows))


def read_cache_into(pixels: Tensor, path: str | Path) -> None:
    """Read the whole pixel cache written by :func:`write_cache` into ``pixels``."""
    with h5py.File(path, "r") as f:
        f["pixels"].read_direct(pixels.numpy())


class ResidentWindows(Dataset):
    """Windows held in one tensor (in shared memory, so DataLoader workers and the other ranks of the node
    read it in place).

    Parameters
    ----------
    pixels
        ``[N, 1, S, S]`` float32, row ``i`` = window ``i`` of the training set (sorted by ``cutout_id``).
    """

    def __init__(self, pixels: Tensor) -> None:
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitems__(self, indices: list[int]) -> Tensor:
        """The windows at ``indices`` as one ``[B, 1, S, S]`` tensor, in row (= ``cutout_id``) order."""
        return self.pixels[torch.from_numpy(np.sort(np.asarray(indices, dtype=np.int64)))]

    def __getitem__(self, index: int) -> Tensor:
        return self.pixels[index]


class WindowRows(Dataset):
    """Row numbers only, for windows resident on the training device (gathered after the transfer)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices: list[int]) -> Tensor:
        """The rows ``indices`` sorted (as the other datasets order a batch) as an int64 tensor."""
        return torch.from_numpy(np.sort(np.asarray(indices, dtype=np.int64)))

    def __getitem__(self, index: int) -> Tensor:
        return torch.tensor(index)


class CachedWindows(Dataset):
    """Windows from a pixel cache written by :func:`write_cache` (opened lazily in each worker).

    Parameters
    ----------
    path
        The cache file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with h5py.File(self.path, "r") as f:
            self.n = int(f["pixels"].shape[0])
            self.cutout_ids = f["cutout_id"][:]
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}

    def __getitems__(self, indices: list[int]) -> Tensor:
        """The cached windows at ``indices`` as one ``[B, 1, S, S]`` float32 tensor."""
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        rows = np.unique(np.asarray(indices, dtype=np.int64))  # h5py reads increasing, distinct rows
        return torch.from_numpy(self._file["pixels"][rows])

    def __getitem__(self, index: int) -> Tensor:
        return self.__getitems__([index])[0]


def write_cache(
    merged_path: str | Path, cutout_ids: np.ndarray, path: str | Path, nan_fill: float = 0.0
) -> Path:
    """Copy the pixels of ``cutout_ids`` into one chunked HDF5 file (one chunk per window), atomically.

    Parameters
    ----------
    merged_path
        The merge run's ``merged.h5`` (read through the cutout reader).
    cutout_ids
        The windows to cache, in the order they will be rows of the cache.
    path
        Where the cache goes; written to a temporary name and renamed when complete, so an interrupted
        write is never mistaken for a cache.
    nan_fill
        Value for blank (NaN) pixels.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reader = WindowReader(str(merged_path), nan_fill=nan_fill)
    ids = np.asarray(cutout_ids, dtype=np.int64)
    first = reader.read(ids[:1])
    size = first.shape[-1]
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("cutout_id", data=ids)
            pixels = f.create_dataset(
                "pixels", shape=(len(ids), 1, size, size), dtype="f4", chunks=(1, 1, size, size)
            )
            with progress(len(ids), "caching windows", unit="win") as bar:
                for start in range(0, len(ids), CACHE_READ_BATCH):
                    chunk = ids[start : start + CACHE_READ_BATCH]
                    order = np.argsort(chunk, kind="stable")
                    block = np.empty((len(chunk), 1, size, size), dtype=np.float32)
                    block[order] = reader.read(chunk[order])
                    pixels[start : start + len(chunk)] = block
                    bar.advance(len(chunk))
    return path


class TrainingWindows(pl.LightningDataModule):
    """Shuffled batches of raw windows for self-supervised training.

    Parameters
    ----------
    merged_path
        The merge run's ``merged.h5``.
    cutout_ids
        The windows to train on (all the same size).
    batch_size
        Windows per device per step.
    num_workers
        DataLoader worker processes.
    cache_path
        If set, the windows are first copied into this HDF5 file (once, by global rank 0, on a filesystem
        all nodes share) and read from it afterwards.
    nan_fill
        Value for blank (NaN) pixels.
    pin_memory
        Pin host memory when training on a GPU.
    prefetch_factor
        Batches each worker loads ahead.
    augmentation
        If set, the views are made in the DataLoader workers (see :class:`ViewsInWorkers`); otherwise the
        batches are raw windows and the views are made on the training device.
    resident_gb
        Hold the windows in memory when they take at most this many GB (0: never); on a GPU that makes the
        views (no ``augmentation`` here) they are moved there if its free memory allows.
    shared_dir
        Under a process group of several ranks, the ranks of a node hold one copy of the resident windows,
        filled by the node's first rank through a file in this node-local folder (removed once every rank
        has mapped it; see :mod:`radio_curation.data.node_shared`). None: a copy per rank.
    seed
        Seed of the shuffle of every epoch and of the views made in the workers.
    """

    def __init__(
        self,
        merged_path: str | Path,
        cutout_ids: np.ndarray,
        batch_size: int,
        num_workers: int = 0,
        cache_path: str | Path | None = None,
        nan_fill: float = 0.0,
        pin_memory: bool = True,
        prefetch_factor: int = 2,
        augmentation: nn.Module | None = None,
        resident_gb: float = 0.0,
        shared_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.merged_path = str(merged_path)
        self.cutout_ids = np.asarray(cutout_ids, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.cache_path = None if cache_path is None else Path(cache_path)
        self.nan_fill = float(nan_fill)
        self.pin_memory = bool(pin_memory)
        self.prefetch_factor = int(prefetch_factor)
        self.augmentation = augmentation
        self.resident_gb = float(resident_gb)
        self.shared_dir = None if shared_dir is None else Path(shared_dir)
        self.seed = int(seed)
        self.dataset: Dataset | None = None
        self._pixels: Tensor | None = None
        self._on_device: Tensor | None = None
        # The cache lives in the run directory, which every node sees: one process writes it.
        self.prepare_data_per_node = False
        if self.batch_size < 1:
            raise RadioCurationError(f"data.batch_size={batch_size} must be at least 1.")
        if len(self.cutout_ids) < self.batch_size:
            raise RadioCurationError(
                f"data.batch_size={self.batch_size} is larger than the {len(self.cutout_ids)} windows to train "
                "on; lower data.batch_size or train on more windows."
            )

    def _cache_is_current(self) -> bool:
        if self.cache_path is None or not self.cache_path.exists():
            return False
        with h5py.File(self.cache_path, "r") as f:
            return "cutout_id" in f and np.array_equal(f["cutout_id"][:], self.cutout_ids)

    def prepare_data(self) -> None:
        """Fill the pixel cache if one is asked for and not already there (global rank 0 only)."""
        if self.cache_path is not None and not self._cache_is_current():
            write_cache(self.merged_path, self.cutout_ids, self.cache_path, nan_fill=self.nan_fill)

    def resident_shape(self) -> tuple[int, int, int, int]:
        """``[N, 1, S, S]`` of the windows held in memory."""
        size = int(WindowReader(self.merged_path).positions(self.cutout_ids[:1])["size"][0])
        return (len(self.cutout_ids), 1, size, size)

    def resident_bytes(self) -> int:
        """Bytes the windows take in memory as float32."""
        return int(np.prod(self.resident_shape())) * 4

    def _fill(self, pixels: Tensor) -> None:
        if self.cache_path is not None:
            read_cache_into(pixels, self.cache_path)
        else:
            read_windows_into(pixels, self.merged_path, self.cutout_ids, self.nan_fill)

    def setup(self, stage: str) -> None:
        if self.dataset is not None:
            return
        if self.resident_bytes() <= self.resident_gb * 1e9:
            self._pixels = one_copy_per_node(
                self.resident_shape(), self._fill, self.shared_dir, "data.resident_shared_dir"
            )
            self.dataset = ResidentWindows(self._pixels)
        elif self.cache_path is not None:
            self.dataset = CachedWindows(self.cache_path)
        else:
            self.dataset = ReaderWindows(self.merged_path, self.cutout_ids, nan_fill=self.nan_fill)

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _rows_on_device(self) -> bool:
        """Whether the resident windows go to the GPU that makes the views (it has room for them)."""
        device = self._device()
        if self._pixels is None or self.augmentation is not None or device.type != "cuda":
            return False
        free, _ = torch.cuda.mem_get_info(device)
        # Leave the model, its optimizer state and the views most of the device.
        return self._pixels.nbytes <= free / 2

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Rows → windows, gathered on the device, when the windows are resident there."""
        if self._on_device is None:
            return batch
        return self._on_device[batch]

    def train_dataloader(self) -> ResumableLoader:
        """Shuffled full batches (the last incomplete batch is dropped; Lightning wraps the sampler for DDP)."""
        if self.dataset is None:
            self.setup("fit")
        workers = self.num_workers
        dataset = self.dataset
        self._on_device = None
        if self._rows_on_device():
            self._on_device = self._pixels.to(self._device())
            dataset, workers = WindowRows(len(self._pixels)), 0
        if self.augmentation is not None:
            dataset = ViewsInWorkers(dataset, self.augmentation)
        return ResumableLoader(
            dataset,
            batch_sampler=EpochBatches(
                EpochShuffle(len(dataset), self.seed), self.batch_size, drop_last=True, seed=self.seed
            ),
            num_workers=workers,
            collate_fn=_as_batch,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
        )
