"""Writing ``features.h5`` from the resumable block shards the features stage writes first.

``features.h5`` (read by :class:`~radio_curation.features.matrix.FeatureFile`): ``features`` ``[N, D]``
float32 (or float16), ``cutout_id`` ``[N]`` int64 ascending, attrs ``backbone, tap, pooling,
normalization, resize, dim`` (and the source run, dtype, row count).

While extracting, rows are grouped in fixed *blocks* of consecutive rows (in ``cutout_id`` order). Each
block is computed by one rank and written to its own small HDF5 file through a temporary name and an
atomic rename, so a killed run leaves only whole blocks behind: a restart computes exactly the missing
ones, and a block written twice is replaced by identical content. ``plan.json`` fixes the blocks on the
first attempt so a restart with another batch size or device count still fits them.
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

#: Target bytes per HDF5 chunk of the features dataset (whole rows).
CHUNK_BYTES = 1 << 20
_BLOCK_FILE = re.compile(r"^block-(\d{8})\.h5$")


def chunk_rows(dim: int, itemsize: int, n: int) -> int:
    """Rows per HDF5 chunk so that one chunk is about :data:`CHUNK_BYTES`."""
    return max(1, min(n, CHUNK_BYTES // max(1, dim * itemsize)))


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
    """The ``shards/`` directory of a features run: ``plan.json`` and one ``block-<n>.h5`` per block."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

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

    def write(self, block: int, cutout_ids: np.ndarray, features: np.ndarray, rank: int) -> None:
        """Write one complete block atomically (temporary file, fsync, rename)."""
        with atomic_path(self.block_path(block), fsync=True) as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("features", data=features)
                f.create_dataset("cutout_id", data=np.asarray(cutout_ids, dtype=np.int64))
                f.attrs["block"] = block
                f.attrs["rank"] = rank

    def read(self, block: int) -> tuple[np.ndarray, np.ndarray, int]:
        """``(cutout_id, features, rank that wrote it)`` of a written block."""
        with h5py.File(self.block_path(block), "r") as f:
            return f["cutout_id"][:], f["features"][:], int(f.attrs["rank"])


def consolidate(
    shards: BlockShards,
    plan: Plan,
    cutout_ids: np.ndarray,
    path: Path,
    dim: int,
    dtype: np.dtype,
    attrs: dict[str, Any],
) -> dict[int, int]:
    """Join the blocks of ``plan`` into one ``features.h5`` at ``path``; returns blocks per writing rank.

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
    dtype = np.dtype(dtype)
    by_rank: dict[int, int] = {}
    with h5py.File(path, "w") as out:
        dset = out.create_dataset(
            "features",
            shape=(plan.n_rows, dim),
            dtype=dtype,
            chunks=(chunk_rows(dim, dtype.itemsize, max(plan.n_rows, 1)), dim) if plan.n_rows else None,
        )
        for block in range(plan.n_blocks):
            start, stop = plan.block_range(block)
            ids, feats, rank = shards.read(block)
            by_rank[rank] = by_rank.get(rank, 0) + 1
            if not np.array_equal(ids, expected[start:stop]) or feats.shape != (stop - start, dim):
                raise RadioCurationError(
                    f"block {block} in {shards.directory} holds other cutouts or another feature width than "
                    "planned (the merge index changed since it was written): remove the run directory and "
                    "start over"
                )
            dset[start:stop] = feats
        out.create_dataset("cutout_id", data=expected)
        for key, value in {**attrs, "dim": dim, "n": plan.n_rows}.items():
            out.attrs[key] = value
    return by_rank
