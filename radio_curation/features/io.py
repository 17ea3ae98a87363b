"""Writing ``features.h5`` from the resumable blocks the features stage computes.

``features.h5`` (read by :class:`~radio_curation.features.matrix.FeatureFile`): ``features`` ``[N, D]``
float32 (or float16, contiguous), ``cutout_id`` ``[N]`` int64 ascending, attrs ``backbone, tap, pooling,
normalization, resize, dim`` (and the source run, dtype, row count).

While extracting, rows are grouped in fixed *blocks* of consecutive rows (in ``cutout_id`` order). Rank 0
first creates the whole file, ``shards/features.h5``: its ``cutout_id`` and attributes written, its
``features`` allocated in one contiguous extent and not yet filled. Each block is computed by one rank,
which writes its rows straight into their place in that file (at the extent's byte offset, flushed to
disk) and then a small marker file ``block-<n>.h5`` (its cutout IDs and rank) through a temporary name
and an atomic rename, so a killed run leaves only whole blocks marked: a restart computes exactly the
unmarked ones, and a block written twice is overwritten with identical content. ``plan.json`` fixes the
blocks on the first attempt so a restart with another batch size or device count still fits them.

The join is then a check of the markers and a rename of the file into place: no row is copied, and the
ranks (on any number of nodes sharing the run directory) write their rows in parallel. Each rank writes
disjoint byte ranges with plain ``pwrite``; HDF5 only reads the layout there, it never writes the rows.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from radio_curation.atomic import atomic_path, write_atomic
from radio_curation.errors import RadioCurationError

_BLOCK_FILE = re.compile(r"^block-(\d{8})\.h5$")


@dataclass(frozen=True)
class Plan:
    """The fixed split of the rows to extract into blocks (``shards/plan.json``)."""

    n_rows: int
    block_rows: int
    source_id: str
    #: :func:`~radio_curation.backbones.export.weights_digest` of the model that computes the blocks.
    model: str | None = None

    @property
    def n_blocks(self) -> int:
        return -(-self.n_rows // self.block_rows)

    def block_range(self, block: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of ``block``."""
        start = block * self.block_rows
        return start, min(start + self.block_rows, self.n_rows)


class BlockShards:
    """The ``shards/`` directory of a features run: ``plan.json``, the features file being filled and one
    ``block-<n>.h5`` marker per block written."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._layout: tuple[int, int, np.dtype] | None = None

    def block_path(self, block: int) -> Path:
        return self.directory / f"block-{block:08d}.h5"

    def existing_plan(self) -> Plan | None:
        """The plan an earlier attempt wrote, if any."""
        path = self.directory / "plan.json"
        return Plan(**json.loads(path.read_text())) if path.is_file() else None

    def load_or_create_plan(
        self, n_rows: int, block_rows: int, source_id: str, model: str | None = None
    ) -> Plan:
        """The plan of an earlier attempt, or a new one written atomically.

        Raises
        ------
        RadioCurationError
            The earlier attempt's blocks come from another source, or from a model with other weights
            (e.g. a backbone without checkpoint initialised differently): joining them with new blocks
            would mix two networks' features in one file.
        """
        plan = self.existing_plan()
        if plan is not None:
            if plan.source_id != source_id:
                raise RadioCurationError(
                    f"{self.directory} holds blocks of source {plan.source_id}, not {source_id}; "
                    "remove the folder to start over"
                )
            if model is not None and plan.model is not None and plan.model != model:
                raise RadioCurationError(
                    f"{self.directory} holds blocks computed by a model with weights {plan.model}, but this "
                    f"attempt built weights {model} (a changed checkpoint file, or random weights drawn "
                    "without the same seed); resuming would mix two networks' features. Restore the "
                    f"checkpoint, or remove {self.directory.parent} to start over"
                )
            return plan
        plan = Plan(int(n_rows), int(block_rows), str(source_id), model)
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.directory / "plan.json", json.dumps(asdict(plan)).encode())
        return plan

    def done(self) -> set[int]:
        """Blocks whose file exists (a file exists only once it is complete)."""
        if not self.directory.is_dir():
            return set()
        return {int(m.group(1)) for p in self.directory.iterdir() if (m := _BLOCK_FILE.match(p.name))}

    def pending(self, plan: Plan) -> list[int]:
        """Blocks of ``plan`` still to compute, ascending."""
        done = self.done()
        return [b for b in range(plan.n_blocks) if b not in done]

    @property
    def data_path(self) -> Path:
        """The features file the ranks write their rows into; renamed into place by :func:`join`."""
        return self.directory / "features.h5"

    def create_data(
        self, plan: Plan, cutout_ids: np.ndarray, dim: int, dtype: np.dtype, attrs: dict[str, Any]
    ) -> None:
        """Create :attr:`data_path` for ``plan`` unless an earlier attempt did (then check it fits).

        Blocks marked without the file (a run started before the file existed) hold no rows: they go.

        Raises
        ------
        RadioCurationError
            The file of an earlier attempt has another shape or dtype.
        """
        dtype = np.dtype(dtype)
        if self.data_path.is_file():
            with h5py.File(self.data_path, "r") as f:
                found = (f["features"].shape, f["features"].dtype)
            if found != ((plan.n_rows, dim), dtype):
                raise RadioCurationError(
                    f"{self.data_path} holds {found[0]} {found[1]} features, this attempt computes "
                    f"{(plan.n_rows, dim)} {dtype}; remove {self.directory.parent} to start over"
                )
            return
        for block in self.done():
            self.block_path(block).unlink()
        with atomic_path(self.data_path, fsync=True) as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("cutout_id", data=np.asarray(cutout_ids[: plan.n_rows], dtype=np.int64))
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_layout(h5py.h5d.CONTIGUOUS)
                # Allocated now (a sparse extent, no fill written), so its offset is known before any row.
                dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
                dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
                space = h5py.h5s.create_simple((plan.n_rows, dim))
                h5py.h5d.create(f.id, b"features", h5py.h5t.py_create(dtype), space, dcpl=dcpl)
                for key, value in {**attrs, "dim": dim, "n": plan.n_rows}.items():
                    f.attrs[key] = value

    def _extent(self) -> tuple[int, int, np.dtype]:
        """Byte offset, row width and dtype of the features extent in :attr:`data_path`."""
        if self._layout is None:
            with h5py.File(self.data_path, "r") as f:
                features = f["features"]
                self._layout = (int(features.id.get_offset()), int(features.shape[1]), features.dtype)
        return self._layout

    def write(self, block: int, start: int, cutout_ids: np.ndarray, features: np.ndarray, rank: int) -> None:
        """Write one block's rows (from row ``start``) into :attr:`data_path`, flush them, then mark the block
        done atomically (temporary file, fsync, rename)."""
        offset, dim, dtype = self._extent()
        rows = np.ascontiguousarray(features, dtype=dtype)
        if rows.shape[1:] != (dim,):
            raise RadioCurationError(
                f"block {block} has {rows.shape[1:]} features per row, the file holds {dim}"
            )
        data = memoryview(rows).cast("B")
        at = offset + start * dim * dtype.itemsize
        fd = os.open(self.data_path, os.O_WRONLY)
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(fd, data[written:], at + written)
            os.fsync(fd)
        finally:
            os.close(fd)
        with atomic_path(self.block_path(block), fsync=True) as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("cutout_id", data=np.asarray(cutout_ids, dtype=np.int64))
                f.attrs["block"] = block
                f.attrs["rank"] = rank

    def marker(self, block: int) -> tuple[np.ndarray, int]:
        """``(cutout_id, rank that wrote it)`` of a block marked done."""
        with h5py.File(self.block_path(block), "r") as f:
            return f["cutout_id"][:], int(f.attrs["rank"])


def join(shards: BlockShards, plan: Plan, cutout_ids: np.ndarray, path: Path) -> dict[int, int]:
    """Check that every block of ``plan`` is written, then rename the features file to ``path`` (no row is
    copied); returns blocks per writing rank.

    Raises
    ------
    RadioCurationError
        A block is missing, or its rows are not the planned cutouts (the merge index changed).
    """
    missing = shards.pending(plan)
    if missing:
        raise RadioCurationError(
            f"{len(missing)} of {plan.n_blocks} feature blocks are missing in {shards.directory} "
            f"(e.g. {missing[:5]}); run the same command again to compute them"
        )
    expected = np.asarray(cutout_ids[: plan.n_rows], dtype=np.int64)
    by_rank: dict[int, int] = {}
    for block in range(plan.n_blocks):
        start, stop = plan.block_range(block)
        ids, rank = shards.marker(block)
        by_rank[rank] = by_rank.get(rank, 0) + 1
        if not np.array_equal(ids, expected[start:stop]):
            raise RadioCurationError(
                f"block {block} in {shards.directory} holds other cutouts than planned (the merge index "
                "changed since it was written): remove the run directory and start over"
            )
    os.replace(shards.data_path, path)
    return by_rank
