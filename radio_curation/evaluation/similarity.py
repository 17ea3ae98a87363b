"""Cosine similarity search shared by the evaluations.

Exact search: top-k with faiss (on a GPU when faiss-gpu sees one), the nearest other row with blocked
float32 products. The database may be streamed in blocks of :func:`block_rows` rows, so the nearest
neighbours of a few thousand queries among millions of feature rows never need all rows in memory.
"""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np

#: Bytes of one float32 block of feature rows streamed by the evaluations (32 MiB, whatever the rows).
BLOCK_BYTES = 1 << 25
#: Query-row similarities computed at once by :func:`nearest_other_similarity` (16 MiB of float32).
SIMILARITY_BLOCK = 1 << 22


def block_rows(dim: int) -> int:
    """Rows of ``dim`` float32 features in one :data:`BLOCK_BYTES` block."""
    return max(1, BLOCK_BYTES // (4 * int(dim)))


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (zero rows stay zero), as contiguous float32.

    Parameters
    ----------
    x : np.ndarray
        ``[N, D]`` array.

    Returns
    -------
    np.ndarray
        ``[N, D]`` float32.
    """
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


def unit_rows(block: np.ndarray) -> np.ndarray:
    """:func:`l2_normalise` of a block just read, in place when the block is its own fresh array.

    ``read`` and ``iter_chunks`` return new arrays, except ``iter_chunks`` of a float32
    :class:`~radio_curation.features.matrix.FeatureArray`, whose blocks are views of the matrix: those
    are normalised in a copy.
    """
    if block.dtype != np.float32 or not (block.flags.owndata and block.flags.writeable):
        return l2_normalise(block)
    x = np.ascontiguousarray(block)
    # einsum, unlike np.linalg.norm, holds no [rows, dim] temporary.
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    x /= np.maximum(norms, 1e-12)[:, None]
    return x


def _blocks(base: np.ndarray | Iterable[tuple[int, np.ndarray]]) -> Iterable[tuple[int, np.ndarray]]:
    """The database as ``(start, block)`` pairs; an array given whole is copied, since blocks are
    normalised in place."""
    if isinstance(base, np.ndarray):
        return [(0, np.array(base, dtype=np.float32))]
    return base


def _search(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if faiss.get_num_gpus() > 0:
        resources = faiss.StandardGpuResources()
        return faiss.knn_gpu(resources, xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)
    return faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)


def cosine_knn(
    queries: np.ndarray, base: np.ndarray | Iterable[tuple[int, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` cosine neighbours of each query.

    Parameters
    ----------
    queries : np.ndarray
        ``[Q, D]`` query vectors (normalised here).
    base : np.ndarray or iterable of (start, chunk)
        ``[N, D]`` database, or its chunks with their first row index (e.g. ``FeatureFile.iter_chunks``).
    k : int
        Neighbours per query.

    Returns
    -------
    similarity : np.ndarray
        ``[Q, k']`` float32 cosine similarities, best first (``k' = min(k, N)``).
    index : np.ndarray
        ``[Q, k']`` int64 database rows.
    """
    chunks = _blocks(base)
    xq = l2_normalise(queries)
    best_sim = np.full((len(xq), 0), -np.inf, dtype=np.float32)
    best_idx = np.zeros((len(xq), 0), dtype=np.int64)
    for start, chunk in chunks:
        xb = unit_rows(chunk)
        sim, idx = _search(xq, xb, min(int(k), len(xb)))
        best_sim = np.concatenate([best_sim, sim], axis=1)
        best_idx = np.concatenate([best_idx, idx.astype(np.int64) + start], axis=1)
        order = np.argsort(-best_sim, axis=1, kind="stable")[:, :k]
        best_sim = np.take_along_axis(best_sim, order, axis=1)
        best_idx = np.take_along_axis(best_idx, order, axis=1)
        del chunk, xb  # before the next block is read: one block held at a time, not two
    return best_sim, best_idx


def nearest_other_similarity(
    queries: np.ndarray, query_rows: np.ndarray, base: np.ndarray | Iterable[tuple[int, np.ndarray]]
) -> np.ndarray:
    """Cosine similarity of each query to its nearest database row other than itself.

    Blocked float32 products (:data:`SIMILARITY_BLOCK` similarities at a time) and a running maximum:
    on CPU about 1.5x faster than faiss's top-2 search, which also needs a tie-break for exact duplicates.

    Parameters
    ----------
    queries : np.ndarray
        ``[Q, D]`` query vectors, which are rows of the database.
    query_rows : np.ndarray
        ``[Q]`` the database row of each query (excluded from its own search; its duplicates are not).
    base : np.ndarray or iterable of (start, chunk)
        The database (at least two rows).

    Returns
    -------
    np.ndarray
        ``[Q]`` float32 similarities.
    """
    chunks = _blocks(base)
    xq = l2_normalise(queries)
    query_rows = np.asarray(query_rows, dtype=np.int64)
    best = np.full(len(xq), -np.inf, dtype=np.float32)
    step = max(1, SIMILARITY_BLOCK // max(len(xq), 1))
    for start, chunk in chunks:
        xb = unit_rows(chunk)
        for offset in range(0, len(xb), step):
            sim = xq @ xb[offset : offset + step].T
            first = start + offset
            own = np.flatnonzero((query_rows >= first) & (query_rows < first + sim.shape[1]))
            sim[own, query_rows[own] - first] = -np.inf
            np.maximum(best, sim.max(axis=1), out=best)
        del chunk, xb  # before the next block is read: one block held at a time, not two
    return best
