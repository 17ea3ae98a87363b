"""``features.h5`` (reader and writer) and the resumable block shards the features stage writes first.

``features.h5``: ``features`` ``[N, D]`` float32 (or float16), ``cutout_id`` ``[N]`` int64 ascending, attrs
``backbone, tap, pooling, normalization, resize, dim`` (and the source run, dtype, row count).

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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from radio_curation.atomic import atomic_path, write_atomic
from radio_curation.errors import RadioCurationError


class FeatureSource(Protocol):
    """A feature matrix read by rows or in row chunks: a :class:`FeatureFile` on disk, or an array in memory
    (``evaluation.similarity.ArrayFeatures``); clustering, conditioning and the evaluations take either."""

    @property
    def n(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def read(self, rows: np.ndarray) -> np.ndarray: ...

    def iter_chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]: ...


#: Target bytes per HDF5 chunk of the features dataset (whole rows).
CHUNK_BYTES = 1 << 20
_BLOCK_FILE = re.compile(r"^block-(\d{8})\.h5$")


class FeatureFile:
    """Read a ``features.h5``.

    Parameters
    ----------
    path
        The file (``RunRecord.artifact("features.h5")``).

    Examples
    --------
    >>> with FeatureFile(path) as ff:  # doctest: +SKIP
    ...     for start, chunk in ff.iter_chunks(65536):
    ...         ...
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise RadioCurationError(f"features file {self.path} does not exist")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise RadioCurationError(f"cannot open features file {self.path}: {err}") from err
        if "features" not in self._file or "cutout_id" not in self._file:
            self._file.close()
            raise RadioCurationError(f"{self.path} is not a features file (needs 'features' and 'cutout_id')")
        self._features = self._file["features"]
        self._ids: np.ndarray | None = None
        if self._features.ndim != 2 or self._file["cutout_id"].shape != (self._features.shape[0],):
            self._file.close()
            raise RadioCurationError(
                f"{self.path}: 'features' {self._features.shape} and 'cutout_id' "
                f"{self._file['cutout_id'].shape} do not match"
            )

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self._features.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self._features.shape[1])

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype of the features (float32 or float16)."""
        return self._features.dtype

    @property
    def attrs(self) -> dict[str, Any]:
        """The file's attributes (backbone, tap, pooling, normalization, resize, dim ...)."""
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._file.attrs.items()}

    @property
    def cutout_ids(self) -> np.ndarray:
        """``cutout_id`` of every row (int64, ascending)."""
        if self._ids is None:
            self._ids = self._file["cutout_id"][:].astype(np.int64)
        return self._ids

    def rows_of(self, cutout_ids: np.ndarray) -> np.ndarray:
        """Row numbers of ``cutout_ids``; an error naming the missing ones if any is absent."""
        ids = np.asarray(cutout_ids, dtype=np.int64).ravel()
        rows = np.searchsorted(self.cutout_ids, ids)
        found = rows < self.n
        found[found] = self.cutout_ids[rows[found]] == ids[found]
        if not found.all():
            raise RadioCurationError(
                f"{int((~found).sum())} cutout IDs are not in {self.path} (e.g. {ids[~found][:5].tolist()}); "
                "the features must come from the same merge run"
            )
        return rows

    def iter_chunks(self, rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, features[start:start + rows])`` as float32, in row order."""
        if rows < 1:
            raise RadioCurationError(f"chunk size must be positive, got {rows}")
        for start in range(0, self.n, rows):
            yield start, self._features[start : start + rows].astype(np.float32, copy=False)

    def read(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """Features of ``rows`` (indices in any order, a slice, or None for all) as float32."""
        if rows is None:
            return self._features[:].astype(np.float32, copy=False)
        if isinstance(rows, slice):
            return self._features[rows].astype(np.float32, copy=False)
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n):
            raise RadioCurationError(f"row indices out of range [0, {self.n}) for {self.path}")
        unique, inverse = np.unique(rows, return_inverse=True)
        return self._features[unique].astype(np.float32, copy=False)[inverse]

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
