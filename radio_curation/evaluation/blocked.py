"""Per-row integer work on tens of millions of rows (codes, counts, group orders), a block of rows at a time.

Whole-column ``np.unique``, ``np.bincount(values[rows])`` or ``np.argsort`` hold sorted copies and int64
arrays of 8–40 bytes a row beside their input; these hold the result and one block's temporaries.
"""

from __future__ import annotations

import numpy as np

#: Rows handled at a time: the temporaries grow with this, not with the number of rows.
ROW_BLOCK = 1 << 20


def _blocks(n: int) -> list[slice]:
    return [slice(start, start + ROW_BLOCK) for start in range(0, n, ROW_BLOCK)]


def factorise(values: np.ndarray, dtype: type | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct values of a column and each row's index into them.

    What ``np.unique(values.astype(dtype), return_inverse=True)`` gives, a block at a time: the distinct
    values are the union of each block's, and the codes have the smallest unsigned integer type that holds
    them (uint8 for up to 256 distinct values).

    Parameters
    ----------
    values : np.ndarray
        ``[N]`` column.
    dtype : type, optional
        Type each block is cast to first (e.g. ``str`` for labels that may be objects).

    Returns
    -------
    distinct : np.ndarray
        ``[C]`` sorted.
    codes : np.ndarray
        ``[N]`` index of each row's value into ``distinct``.
    """
    values = np.asarray(values)

    def block(rows: slice) -> np.ndarray:
        return values[rows] if dtype is None else values[rows].astype(dtype, copy=False)

    blocks = _blocks(len(values))
    distinct = np.unique(block(slice(0, 0)))
    for rows in blocks:
        distinct = np.union1d(distinct, np.unique(block(rows)))
    codes = np.empty(len(values), dtype=np.min_scalar_type(max(len(distinct) - 1, 0)))
    for rows in blocks:
        codes[rows] = np.searchsorted(distinct, block(rows))
    return distinct, codes


def bincount_rows(values: np.ndarray, rows: np.ndarray | None = None, minlength: int = 0) -> np.ndarray:
    """``np.bincount(values[rows], minlength=minlength)``, :data:`ROW_BLOCK` rows at a time.

    Whole, ``values[rows]`` would be a copy and bincount's cast of it to contiguous int64 another (8 bytes
    a row, whatever ``values``' type); ``rows=None`` counts every value.
    """
    n = len(values) if rows is None else len(rows)
    counts = np.zeros(minlength, dtype=np.int64)
    for part in _blocks(n):
        block = values[part] if rows is None else values[rows[part]]
        total = np.bincount(block, minlength=len(counts))
        total[: len(counts)] += counts
        counts = total
    return counts


def grouped_order(keys: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows stably ordered by their integer ``keys`` (``0 ≤ key < n_groups``) and each key's count.

    A counting sort, a block at a time: the order is int32 while the rows fit, where ``np.argsort`` of the
    whole column would return int64 and hold its own buffers.

    Returns
    -------
    order : np.ndarray
        ``[N]`` rows, key ``g``'s at ``order[start_g : start_g + counts[g]]`` in row order.
    counts : np.ndarray
        ``[n_groups]`` int64.
    """
    counts = bincount_rows(keys, minlength=n_groups)
    cursor = np.cumsum(counts) - counts
    order = np.empty(len(keys), dtype=np.int32 if len(keys) <= np.iinfo(np.int32).max else np.int64)
    for part in _blocks(len(keys)):
        k = keys[part]
        local = np.argsort(k, kind="stable")
        ranked = k[local]
        # Position of each row within its key's run in this block.
        within = np.arange(len(ranked)) - np.searchsorted(ranked, ranked)
        order[cursor[ranked] + within] = part.start + local
        cursor += np.bincount(k, minlength=n_groups)
    return order, counts
