"""Training data: raw windows of a subsample, gathered a batch at a time, optionally from a pixel cache.

The DataLoader gathers raw ``[B, 1, S, S]`` windows (one batched read per batch through the cutout reader,
or one fancy-indexed read from the cache). Views are made for whole batches, never per sample: on the
model's device (GPUs), or in the DataLoader workers when training on CPUs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from radio_curation.cutouts.reader import WindowReader
from radio_curation.errors import RadioCurationError
from radio_curation.progress import progress

#: Windows read per batch while filling the cache.
CACHE_READ_BATCH = 512


def _as_batch(batch: Tensor) -> Tensor:
    """Collate function for datasets that return whole batches from ``__getitems__``."""
    return batch


class ViewsInWorkers:
    """Collate function that makes the views of a whole batch in the DataLoader worker.

    For training on CPUs: the batched augmentation then runs beside the model in the worker processes
    instead of between its steps. The batch becomes ``{"views": [view, ...]}``.

    Parameters
    ----------
    augmentation
        The module making the views (``augmentation`` group).
    """

    def __init__(self, augmentation: nn.Module) -> None:
        self.augmentation = augmentation

    def __call__(self, batch: Tensor) -> dict[str, list[Tensor]]:
        return {"views": self.augmentation(batch)}


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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    reader = WindowReader(str(merged_path), nan_fill=nan_fill)
    ids = np.asarray(cutout_ids, dtype=np.int64)
    first = reader.read(ids[:1])
    size = first.shape[-1]
    try:
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
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
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
        self.dataset: Dataset | None = None
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

    def setup(self, stage: str) -> None:
        if self.cache_path is not None:
            self.dataset = CachedWindows(self.cache_path)
        else:
            self.dataset = ReaderWindows(self.merged_path, self.cutout_ids, nan_fill=self.nan_fill)

    def train_dataloader(self) -> DataLoader:
        """Shuffled full batches (the last incomplete batch is dropped; Lightning adds the DDP sampler)."""
        if self.dataset is None:
            self.setup("fit")
        workers = self.num_workers
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            collate_fn=_as_batch if self.augmentation is None else ViewsInWorkers(self.augmentation),
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
        )
