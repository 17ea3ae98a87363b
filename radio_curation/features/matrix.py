"""A feature matrix: ``[n, dim]`` feature rows, one ``cutout_id`` per row, read by rows or in row chunks.

Clustering, conditioning, sampling and the evaluations take any :class:`FeatureMatrix`: a
:class:`FeatureFile` (a ``features.h5`` on disk, read lazily, chunk by chunk, so it may be larger than
memory) or a :class:`FeatureArray` (an array in memory: embeddings computed on the fly, tests). Rows come
out as float32 whatever the stored dtype.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from radio_curation.errors import RadioCurationError


class FeatureMatrix(Protocol):
    """What the code reading features needs of them."""

    @property
    def n(self) -> int:
        """Number of rows."""
        ...

    @property
    def dim(self) -> int:
        """Feature dimension."""
        ...

    @property
    def cutout_ids(self) -> np.ndarray:
        """``[n]`` int64 cutout ID of each row, ascending."""
        ...

    def read(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``[len(rows), dim]`` float32 features of ``rows`` (any order, repeats allowed; None: all)."""
        ...

    def iter_chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, float32 features of rows start:start + rows)`` in row order."""
        ...


def _row_indices(rows: Any, n: int, what: object) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise RadioCurationError(f"row indices out of range [0, {n}) for {what}")
    return rows


def _ascending_subset(rows: Any, n: int, what: object) -> np.ndarray:
    rows = _row_indices(rows, n, what)
    if np.any(np.diff(rows) <= 0):
        raise RadioCurationError(f"a subset of {what} takes ascending rows, each once")
    return rows


_SAME_MERGE = "the features must come from the same merge run"


def positions(
    all_ids: Any, ids: Any, what: object, hint: str = "the runs given do not belong to one lineage"
) -> np.ndarray:
    """Positions of ``ids`` in the ascending ``all_ids``; an error naming ``what`` and ``hint`` if any is
    missing."""
    all_ids = np.asarray(all_ids, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64).ravel()
    rows = np.searchsorted(all_ids, ids)
    found = rows < len(all_ids)
    found[found] = all_ids[rows[found]] == ids[found]
    if not found.all():
        raise RadioCurationError(
            f"{int((~found).sum())} cutout IDs are not in {what} (e.g. {ids[~found][:5].tolist()}); {hint}"
        )
    return rows


def _as_float32(f: h5py.File) -> Any:
    """The ``features`` dataset read as float32: HDF5 converts float16 as it reads, with no float16 copy."""
    return f["features"].astype(np.float32)


class FeatureArray:
    """A feature matrix held in memory.

    Parameters
    ----------
    features
        ``[n, dim]`` array of any float dtype (kept as given; rows come out as float32).
    cutout_ids
        ``[n]`` ascending cutout IDs (default ``0..n-1``).
    """

    def __init__(self, features: np.ndarray, cutout_ids: np.ndarray | None = None) -> None:
        self.features = np.asarray(features)
        if self.features.ndim != 2:
            raise RadioCurationError(f"a feature matrix is [rows, dim]; got shape {self.features.shape}")
        n = len(self.features)
        ids = np.arange(n, dtype=np.int64) if cutout_ids is None else np.asarray(cutout_ids, dtype=np.int64)
        if ids.shape != (n,) or np.any(np.diff(ids) <= 0):
            raise RadioCurationError(f"cutout_ids must be {n} distinct ascending IDs, one per feature row")
        self._ids = ids

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return int(self.features.shape[1])

    @property
    def cutout_ids(self) -> np.ndarray:
        """``[n]`` int64 cutout IDs, ascending."""
        return self._ids

    def rows_of(self, cutout_ids: np.ndarray) -> np.ndarray:
        """Row numbers of ``cutout_ids``; an error naming the missing ones if any is absent."""
        return positions(self._ids, cutout_ids, "the feature array", _SAME_MERGE)

    def read(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Features of ``rows`` (any order, repeats allowed; None for all) as float32."""
        if rows is None:
            return self.features.astype(np.float32, copy=False)
        return self.features[_row_indices(rows, self.n, "the feature array")].astype(np.float32, copy=False)

    def iter_chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, features[start:start + rows])`` as float32, in row order."""
        if rows < 1:
            raise RadioCurationError(f"chunk size must be positive, got {rows}")
        for start in range(0, self.n, rows):
            yield start, self.features[start : start + rows].astype(np.float32, copy=False)

    def subset(self, rows: np.ndarray) -> FeatureArray:
        """The ascending ``rows`` as a feature array of their own."""
        rows = _ascending_subset(rows, self.n, "the feature array")
        return FeatureArray(self.features[rows], self._ids[rows])


class FeatureFile:
    """A ``features.h5`` (or ascending rows of one), read from disk only when rows are asked for.

    The file is checked when the object is made, then opened for each read; within a ``with`` block it
    stays open for all reads of the block.

    Parameters
    ----------
    path
        The file (``RunRecord.artifact("features.h5")``): ``features`` ``[N, D]`` float32 or float16,
        ``cutout_id`` ``[N]`` int64 ascending.
    rows
        Ascending rows of the file to expose, in order (default: all).

    Examples
    --------
    >>> with FeatureFile(path) as ff:  # doctest: +SKIP
    ...     for start, chunk in ff.iter_chunks(65536):
    ...         ...
    """

    def __init__(self, path: str | os.PathLike, rows: np.ndarray | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise RadioCurationError(f"features file {self.path} does not exist")
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise RadioCurationError(f"cannot open features file {self.path}: {err}") from err
        with f:
            if "features" not in f or "cutout_id" not in f:
                raise RadioCurationError(
                    f"{self.path} is not a features file (needs 'features' and 'cutout_id')"
                )
            features = f["features"]
            if features.ndim != 2 or f["cutout_id"].shape != (features.shape[0],):
                raise RadioCurationError(
                    f"{self.path}: 'features' {features.shape} and 'cutout_id' {f['cutout_id'].shape} "
                    "do not match"
                )
            self._file_rows, self._dim, self._dtype = (
                int(features.shape[0]),
                int(features.shape[1]),
                features.dtype,
            )
            self._attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        self._rows = None if rows is None else _ascending_subset(rows, self._file_rows, self.path)
        self._open: h5py.File | None = None
        self._depth = 0
        self._ids: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of rows."""
        return self._file_rows if self._rows is None else len(self._rows)

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return self._dim

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype of the features (float32 or float16)."""
        return self._dtype

    @property
    def attrs(self) -> dict[str, Any]:
        """The file's attributes (backbone, tap, pooling, normalization, resize, dim ...)."""
        return dict(self._attrs)

    @property
    def cutout_ids(self) -> np.ndarray:
        """``cutout_id`` of every row (int64, ascending)."""
        if self._ids is None:
            with self._opened() as f:
                ids = f["cutout_id"][:].astype(np.int64)
            self._ids = ids if self._rows is None else ids[self._rows]
        return self._ids

    def rows_of(self, cutout_ids: np.ndarray) -> np.ndarray:
        """Row numbers of ``cutout_ids``; an error naming the missing ones if any is absent."""
        return positions(self.cutout_ids, cutout_ids, self.path, _SAME_MERGE)

    def read(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Features of ``rows`` (any order, repeats allowed; None for all) as float32."""
        if rows is None:
            if self._rows is None:
                with self._opened() as f:
                    return _as_float32(f)[:]
            rows = np.arange(self.n)
        rows = _row_indices(rows, self.n, self.path)
        if self._rows is not None:
            rows = self._rows[rows]
        unique, inverse = np.unique(rows, return_inverse=True)
        with self._opened() as f:
            x = _as_float32(f)[unique]
        # Ascending distinct rows (the common case) come out as read, without a second copy.
        return x if np.array_equal(unique, rows) else x[inverse]

    def iter_chunks(self, rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, features of rows start:start + rows)`` as float32, in row order."""
        if rows < 1:
            raise RadioCurationError(f"chunk size must be positive, got {rows}")
        with self._opened() as f:
            features = _as_float32(f)
            for start in range(0, self.n, rows):
                if self._rows is None:
                    yield start, features[start : start + rows]
                else:
                    yield start, features[self._rows[start : start + rows]]

    def subset(self, rows: np.ndarray) -> FeatureFile:
        """The ascending ``rows`` of this matrix as a feature file of their own (still read lazily)."""
        rows = _ascending_subset(rows, self.n, self.path)
        return FeatureFile(self.path, rows if self._rows is None else self._rows[rows])

    @contextmanager
    def _opened(self) -> Iterator[h5py.File]:
        if self._open is not None:
            yield self._open
            return
        with h5py.File(self.path, "r") as f:
            yield f

    def close(self) -> None:
        """Close the file a ``with`` block opened (reads after this open it again)."""
        if self._open is not None:
            self._open.close()
            self._open = None
        self._depth = 0

    def __enter__(self) -> FeatureFile:
        if self._depth == 0:
            self._open = h5py.File(self.path, "r")
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth <= 0:
            self.close()
