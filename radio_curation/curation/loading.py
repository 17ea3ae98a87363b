"""Reading feature matrices chunk by chunk into one float32 array, with the non-finite rows counted."""

from __future__ import annotations

from dataclasses import dataclass

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
    source: FeatureMatrix,
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
        The features (a ``FeatureFile`` is read chunk by chunk).
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
