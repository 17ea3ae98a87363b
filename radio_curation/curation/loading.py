"""Reading feature matrices chunk by chunk into one array in their stored dtype, non-finite rows counted.

A float16 ``features.h5`` stays float16 in memory (half the bytes of float32): every consumer converts a
block of rows at a time to float32 for its arithmetic (conditioning, k-means assignment and update).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radio_curation.errors import RadioCurationError
from radio_curation.features.matrix import FeatureMatrix

#: Rows read per chunk (25 MiB of 384-d float32: small next to the matrix being filled).
CHUNK_ROWS = 16384


@dataclass
class LoadedFeatures:
    """Features held in memory for clustering or sampling.

    Attributes
    ----------
    x
        ``[m, d]`` in the source's stored dtype (float16 or float32; other dtypes become float32).
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
    source: FeatureMatrix,
    *,
    drop_nonfinite: bool = False,
    keep_ids: np.ndarray | None = None,
    chunk_rows: int = CHUNK_ROWS,
    label: str = "the features",
    dtype: np.dtype | type | None = None,
) -> LoadedFeatures:
    """Read ``source`` chunk by chunk into one array (memory: the kept rows in ``dtype``, plus one chunk).

    Parameters
    ----------
    source
        The features (a ``FeatureFile`` is read chunk by chunk).
    drop_nonfinite
        Drop rows holding NaN or Inf; otherwise such rows are an error (which counts them).
    keep_ids
        Only the rows whose cutout ID is in this sorted array (e.g. the points of a clustering).
    chunk_rows
        Rows per chunk read.
    label
        How errors name the source (e.g. ``features run features-ab12``).
    dtype
        dtype of the array (``None``: the stored dtype, see :func:`stored_dtype`).

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
    x = np.empty((int(wanted.sum()), source.dim), dtype=stored_dtype(source) if dtype is None else dtype)
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


def stored_dtype(source: FeatureMatrix) -> np.dtype:
    """float16 for a matrix stored as float16 (a ``FeatureFile``'s dataset, a ``FeatureArray``'s array),
    float32 otherwise."""
    stored = getattr(source, "dtype", None)
    if stored is None and isinstance(getattr(source, "features", None), np.ndarray):
        stored = source.features.dtype
    return np.dtype(np.float16) if stored == np.float16 else np.dtype(np.float32)


#: Bytes per clustered point besides its features: its ID, the assignment and distance of a level, and the
#: sorts of a resampling step's per-cluster selection (int64 arrays).
PER_POINT_BYTES = 96


def clustering_memory(
    n: int, dim: int, dtype: np.dtype, *, whiten_dim: int | None, kmeanspp_rows: int
) -> dict[str, int]:
    """Bytes the cluster stage holds at its peak, by part.

    Parameters
    ----------
    n, dim, dtype
        The features: rows, dimension and stored dtype (the matrix is held in it).
    whiten_dim
        PCA whitening's output dimension (its ``[n, whiten_dim]`` output is written while the input is
        still held), or ``None``.
    kmeanspp_rows
        Rows level 1's k-means++ starts from (it holds a float32 copy of them); 0 for a random start.
    """
    itemsize = np.dtype(dtype).itemsize
    matrix = n * dim * itemsize
    conditioned = n * whiten_dim * itemsize if whiten_dim else matrix
    parts = {
        "matrix": matrix,
        "whitened copy": conditioned if whiten_dim else 0,
        "per-point arrays": n * PER_POINT_BYTES,
        "k-means++ copy": kmeanspp_rows * min(dim, whiten_dim or dim) * 4,
    }
    parts["peak"] = max(
        matrix + parts["whitened copy"], conditioned + parts["per-point arrays"] + parts["k-means++ copy"]
    )
    return parts


def available_memory() -> int:
    """Bytes this process may still use: the host's ``MemAvailable``, or less under a cgroup limit."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    return available


def check_memory(parts: dict[str, int], limit: int, what: str, hints: list[str]) -> None:
    """An error naming the parts and ``hints`` (settings that make it fit) when ``parts['peak']`` exceeds
    ``limit`` bytes, before any of the work starts."""
    if parts["peak"] <= limit:
        return
    detail = ", ".join(
        f"{name} {size / 1e9:.2f} GB" for name, size in parts.items() if size and name != "peak"
    )
    raise RadioCurationError(
        f"{what} needs about {parts['peak'] / 1e9:.2f} GB of memory ({detail}), more than the "
        f"{limit / 1e9:.2f} GB available; to fit: {'; '.join(hints)}"
    )
