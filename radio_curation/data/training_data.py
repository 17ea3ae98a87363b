"""The ``data`` config of ``train.py``: how the training windows are served, as an instantiated object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radio_curation.data.datamodule import TrainingWindows
from radio_curation.errors import RadioCurationError

AUGMENT_ON = ("auto", "device", "workers")
#: Where ``cache=true`` copies the windows' pixels, relative to the run directory.
CACHE_FILE = "cache/pixels.h5"


@dataclass(frozen=True)
class TrainingData:
    """Settings of the training windows (``configs/data/default.yaml``); see :class:`TrainingWindows`.

    Attributes
    ----------
    batch_size
        Windows per device per step.
    num_workers
        DataLoader worker processes.
    cache
        Copy the windows' pixels once into the run directory (``cache/pixels.h5``) for fast epochs.
    window_size
        The window size to train on when the source mixes sizes (None: the source must have one).
    nan_fill
        Value for blank (NaN) pixels.
    resident_gb
        Hold the windows in memory when they take at most this many GB (0: never).
    resident_shared_dir
        Node-local folder through which the DDP ranks of a node share one copy of the resident windows
        (None: a copy per rank).
    pin_memory
        Pin host memory when training on a GPU.
    prefetch_factor
        Batches each worker loads ahead.
    augment_on
        Where views are made: ``device``, ``workers``, or ``auto`` (the device on GPUs, workers on CPUs).
    """

    batch_size: int
    num_workers: int
    cache: bool
    window_size: int | None
    nan_fill: float
    resident_gb: float
    resident_shared_dir: str | None
    pin_memory: bool
    prefetch_factor: int
    augment_on: str

    def __post_init__(self) -> None:
        if self.augment_on not in AUGMENT_ON:
            raise RadioCurationError(
                f"data.augment_on={self.augment_on!r}: choose {', '.join(AUGMENT_ON[:-1])} or {AUGMENT_ON[-1]}."
            )

    def views_in_workers(self, on_cpu: bool) -> bool:
        """Whether the DataLoader workers make the views (rather than the training device)."""
        return self.augment_on == "workers" or (self.augment_on == "auto" and on_cpu)

    def datamodule(self, merged: Path, cutout_ids: np.ndarray, run_dir: Path, seed: int) -> TrainingWindows:
        """The datamodule serving ``cutout_ids`` of ``merged`` for a run in ``run_dir``."""
        return TrainingWindows(
            merged,
            cutout_ids,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            cache_path=run_dir / CACHE_FILE if self.cache else None,
            nan_fill=self.nan_fill,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor,
            resident_gb=self.resident_gb,
            shared_dir=self.resident_shared_dir,
            seed=seed,
        )
