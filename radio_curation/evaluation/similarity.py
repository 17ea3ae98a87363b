"""Cosine similarity search shared by the evaluations.

Exact search with faiss (on a GPU when faiss-gpu sees one). The database may be streamed in chunks, so the
nearest neighbours of a few thousand queries among millions of feature rows never need all rows in memory.
"""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np


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
    chunks = [(0, base)] if isinstance(base, np.ndarray) else base
    xq = l2_normalise(queries)
    best_sim = np.full((len(xq), 0), -np.inf, dtype=np.float32)
    best_idx = np.zeros((len(xq), 0), dtype=np.int64)
    for start, chunk in chunks:
        xb = l2_normalise(chunk)
        sim, idx = _search(xq, xb, min(int(k), len(xb)))
        best_sim = np.concatenate([best_sim, sim], axis=1)
        best_idx = np.concatenate([best_idx, idx.astype(np.int64) + start], axis=1)
        order = np.argsort(-best_sim, axis=1, kind="stable")[:, :k]
        best_sim = np.take_along_axis(best_sim, order, axis=1)
        best_idx = np.take_along_axis(best_idx, order, axis=1)
    return best_sim, best_idx


def nearest_other_similarity(
    queries: np.ndarray, query_rows: np.ndarray, base: np.ndarray | Iterable[tuple[int, np.ndarray]]
) -> np.ndarray:
    """Cosine similarity of each query to its nearest database row other than itself.

    Parameters
    ----------
    queries : np.ndarray
        ``[Q, D]`` query vectors, which are rows of the database.
    query_rows : np.ndarray
        ``[Q]`` the database row of each query (excluded from its own search).
    base : np.ndarray or iterable of (start, chunk)
        The database (at least two rows).

    Returns
    -------
    np.ndarray
        ``[Q]`` float32 similarities.
    """
    sim, idx = cosine_knn(queries, base, 2)
    # Exact duplicates tie with the query itself and may be ranked first: take the first non-self hit.
    other = np.where(idx[:, 0] == np.asarray(query_rows), 1, 0)
    return sim[np.arange(len(sim)), other]
