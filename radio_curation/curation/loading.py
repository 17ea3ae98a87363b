"""Reading feature matrices chunk by chunk into one float32 array, with the non-finite rows counted."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from radio_curation.errors import RadioCurationError

#: Rows read per chunk (25 MiB of 384-d float32: small next to the matrix being filled).
CHUNK_ROWS = 16384


class FeatureSource(Protocol):
    """What the curation code needs of a features file (``radio_curation.features.io.FeatureFile``)."""

    @property
    def n(self) -> int: ...

    @property
    def dim(self) -> int: ...

    @property
    def cutout_ids(self) -> np.ndarray: ...

    def iter_chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]: ...


class ArrayFeatures:
    """An in-memory feature matrix behind the :class:`FeatureSource` interface (tests, benchmarks).

    Parameters
    ----------
    features
        ``[n, d]`` array (any float dtype; chunks come out as float32).
    cutout_ids
        ``[n]`` int64 IDs (default ``0..n-1``).
    """

    def __init__(self, features: np.ndarray, cutout_ids: np.ndarray | None = None) -> None:
        self.features = features
        self._ids = np.arange(len(features), dtype=np.int64) if cutout_ids is None else np.asarray(cutout_ids)

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def cutout_ids(self) -> np.ndarray:
        return self._ids

    def iter_chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, float32 [rows, d])`` blocks in order."""
        for start in range(0, self.n, rows):
            yield start, np.asarray(self.features[start : start + rows], dtype=np.float32)


@dataclass
class LoadedFeatures:
    """Features held in memory for clustering or sampling.

    Attributes
    ----------
    x
        ``[m, d]`` float32.
    cutout_id
        ``[m]`` int64, in file order.
    n_nonfinite
        Rows dropped because they held NaN or Inf.
    nonfinite_ids
        Up to 10 of the dropped rows' cutout IDs.
    """

    x: np.ndarray
    cutout_id: np.ndarray
    n_nonfinite: int
    nonfinite_ids: list[int]


def load_features(
    source: FeatureSource,
    *,
    drop_nonfinite: bool = False,
    keep_ids: np.ndarray | None = None,
    chunk_rows: int = CHUNK_ROWS,
    label: str = "the features",
) -> LoadedFeatures:
    """Read ``source`` chunk by chunk into one float32 array (memory: one copy of the kept rows).

    Parameters
    ----------
    source
        A :class:`FeatureSource`.
    drop_nonfinite
        Drop rows holding NaN or Inf; otherwise such rows are an error (which counts them).
    keep_ids
        Only the rows whose cutout ID is in this sorted array (e.g. the points of a clustering).
    chunk_rows
        Rows per chunk read.
    label
        How errors name the source (e.g. ``features run features-ab12``).

    Raises
    ------
    RadioCurationError
        Non-finite rows without ``drop_nonfinite``, or ``keep_ids`` the source does not all hold.
    """
    ids = np.asarray(source.cutout_ids, dtype=np.int64)
    wanted = np.ones(len(ids), dtype=bool) if keep_ids is None else np.isin(ids, keep_ids)
    if keep_ids is not None and wanted.sum() != len(keep_ids):
        raise RadioCurationError(
            f"{label} lack {len(keep_ids) - int(wanted.sum())} of the {len(keep_ids)} cutouts the clustering "
            "holds: the clustering was not made from these features"
        )
    x = np.empty((int(wanted.sum()), source.dim), dtype=np.float32)
    out_ids = np.empty(len(x), dtype=np.int64)
    write = 0
    n_bad = 0
    bad_ids: list[int] = []
    for start, chunk in source.iter_chunks(chunk_rows):
        rows = slice(start, start + len(chunk))
        keep = wanted[rows]
        finite = np.isfinite(chunk).all(axis=1)
        bad = keep & ~finite
        if bad.any():
            n_bad += int(bad.sum())
            bad_ids.extend(ids[rows][bad][: 10 - len(bad_ids)].tolist())
            keep = keep & finite
        m = int(keep.sum())
        x[write : write + m] = chunk if m == len(chunk) else chunk[keep]
        out_ids[write : write + m] = ids[rows][keep]
        write += m
    if n_bad and not drop_nonfinite:
        raise RadioCurationError(
            f"{label} have {n_bad} rows with NaN or Inf values (cutout IDs {bad_ids}"
            f"{' ...' if n_bad > len(bad_ids) else ''}); rerun with drop_nonfinite=true to leave them out"
        )
    return LoadedFeatures(x[:write], out_ids[:write], n_bad, bad_ids)
