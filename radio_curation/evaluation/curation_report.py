"""What curation did to the data: the subsample vs the whole pool vs a random subsample of the same size.

Figures per set: cluster coverage at each level of the hierarchy, balance of the top-level clusters,
class shares when windows have labels, and redundancy (mean nearest-neighbour cosine similarity and the
near-duplicate rate, each estimated from a random sample of query points, with its standard error). The
functions here work on row indices into the pool's feature matrix, so the pool can be streamed from disk.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.blocked import bincount_rows
from radio_curation.evaluation.enrichment import Labels, label_codes
from radio_curation.evaluation.similarity import block_rows, l2_normalise, nearest_other_similarity, unit_rows
from radio_curation.features.matrix import FeatureMatrix


def cluster_paths(assignments: Sequence[np.ndarray]) -> np.ndarray:
    """Each point's cluster at every level of a hierarchical k-means.

    Parameters
    ----------
    assignments : sequence of np.ndarray
        ``assignments[0]`` maps points to level-1 clusters; ``assignments[t]`` maps level-t clusters to
        level-(t+1) clusters (the ``level_<l>/assignment`` datasets of ``clusters.h5``).

    Returns
    -------
    np.ndarray
        ``[N, L]`` int64; column ``l`` is the level-(l+1) cluster.
    """
    if not assignments:
        raise RadioCurationError("a cluster hierarchy needs at least one level")
    columns = [np.asarray(assignments[0], dtype=np.int64)]
    for level in assignments[1:]:
        columns.append(np.asarray(level, dtype=np.int64)[columns[-1]])
    return np.stack(columns, axis=1)


def coverage(paths: np.ndarray, rows: np.ndarray) -> list[float]:
    """Fraction of the pool's (non-empty) clusters at each level that ``rows`` hit at least once.

    Counted by blocked bincounts (:func:`~radio_curation.evaluation.blocked.bincount_rows`): no copy
    or sort of a column of ``paths``.
    """
    return [
        float(
            np.count_nonzero(bincount_rows(paths[:, level], rows))
            / np.count_nonzero(bincount_rows(paths[:, level]))
        )
        for level in range(paths.shape[1])
    ]


def balance(codes: np.ndarray, n_clusters: int) -> float:
    """Normalised entropy of the cluster shares (1 = every cluster equally represented, 0 = one cluster)."""
    return _count_balance(np.bincount(codes), n_clusters)


def _count_balance(counts: np.ndarray, n_clusters: int) -> float:
    """:func:`balance` from the clusters' counts."""
    if n_clusters < 2:
        return 1.0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(n_clusters))


def class_shares(codes: np.ndarray, rows: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Share of each class among ``rows`` (classes absent from ``rows`` get 0).

    ``codes`` is every pool point's index into ``classes``
    (:func:`~radio_curation.evaluation.enrichment.label_codes`): counting codes needs no per-set copy or
    sort of the label strings.
    """
    counts = bincount_rows(codes, rows, minlength=len(classes)) / max(len(rows), 1)
    return {c: float(share) for c, share in zip(classes, counts, strict=True)}


def _set_blocks(features: FeatureMatrix, rows: np.ndarray, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """The set's features a block at a time, numbered by position in ``rows``."""
    if len(rows) == features.n:  # the whole pool (rows are ascending and distinct): contiguous reads
        yield from features.iter_chunks(chunk)
        return
    for start in range(0, len(rows), chunk):
        yield start, features.read(rows[start : start + chunk])


def sample_mean_se(values: np.ndarray, population: int) -> float:
    """Standard error of the mean of ``values``, a simple random sample without replacement.

    ``sqrt((1 - q / N) · s² / q)`` for ``q`` values with sample variance ``s²`` (``ddof=1``) drawn from
    ``N``: 0 when every point is in the sample (the mean is then exact).

    Parameters
    ----------
    values : np.ndarray
        ``[q]`` the sampled values (``q ≥ 2``, or ``q == population``).
    population : int
        ``N``, the number of points sampled from.

    Returns
    -------
    float
    """
    q = len(values)
    if q >= population:
        return 0.0
    variance = float(np.var(np.asarray(values, dtype=np.float64), ddof=1))
    return float(np.sqrt((1.0 - q / population) * variance / q))


def redundancy(
    features: FeatureMatrix,
    rows: np.ndarray,
    threshold: float,
    max_queries: int,
    rng: np.random.Generator,
    chunk: int | None = None,
) -> dict[str, float]:
    """Mean nearest-neighbour cosine similarity within a set and its near-duplicate rate.

    Each query's nearest neighbour is searched exactly among all rows of the set (itself excluded), so
    the time is ``max_queries × len(rows)`` products. With more than ``max_queries`` rows the queries are
    a random sample: both figures are then unbiased estimates, given with their standard errors
    (:func:`sample_mean_se`; a rate's is at most ``0.5 / sqrt(max_queries)``).

    Parameters
    ----------
    features : FeatureMatrix
        The pool's features.
    rows : np.ndarray
        Sorted pool rows of the set.
    threshold : float
        A point whose nearest neighbour is at least this similar is a near-duplicate.
    max_queries : int
        Largest number of query points (at least 2).
    rng : np.random.Generator
        Draws the query sample.
    chunk : int, optional
        Rows of the set read at a time (default: :func:`~radio_curation.evaluation.similarity.block_rows`).

    Returns
    -------
    dict
        ``nn_similarity_mean``, ``nn_similarity_se``, ``near_duplicate_rate``, ``near_duplicate_rate_se``,
        ``n_queries``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) < 2:
        raise RadioCurationError("redundancy needs a set of at least two points")
    if max_queries < 2:
        raise RadioCurationError(f"redundancy needs at least two queries (max_queries), got {max_queries}")
    if len(rows) > max_queries:
        local = np.sort(rng.choice(len(rows), max_queries, replace=False))
    else:
        local = np.arange(len(rows))
    blocks = _set_blocks(features, rows, chunk or block_rows(features.dim))
    sim = nearest_other_similarity(features.read(rows[local]), local, blocks)
    duplicate = (sim >= threshold).astype(np.float64)
    return {
        "nn_similarity_mean": float(sim.mean()),
        "nn_similarity_se": sample_mean_se(sim, len(rows)),
        "near_duplicate_rate": float(duplicate.mean()),
        "near_duplicate_rate_se": sample_mean_se(duplicate, len(rows)),
        "n_queries": float(len(local)),
    }


@dataclass
class CurationFigures:
    """The report's numbers, per set (``pool``, ``subsample``, ``random``).

    Attributes
    ----------
    sizes : dict
        Number of points of each set.
    coverage : dict
        Per set, the covered fraction of clusters at each level (level 1 first).
    balance : dict
        Per set, the normalised entropy of its top-level cluster shares.
    shares : dict
        Per set, class → share (empty when there are no labels).
    redundancy : dict
        Per set, the output of :func:`redundancy`.
    """

    sizes: dict[str, int]
    coverage: dict[str, list[float]] = field(default_factory=dict)
    balance: dict[str, float] = field(default_factory=dict)
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    redundancy: dict[str, dict[str, float]] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat ``curation/<set>/<figure>`` metrics for ``metrics.json`` and the trackers."""
        out: dict[str, float] = {}
        for name, size in self.sizes.items():
            out[f"curation/{name}/n_points"] = float(size)
            for level, value in enumerate(self.coverage.get(name, []), start=1):
                out[f"curation/{name}/coverage_level_{level}"] = value
            if name in self.balance:
                out[f"curation/{name}/top_level_balance"] = self.balance[name]
            for cls, share in self.shares.get(name, {}).items():
                out[f"curation/{name}/share/{cls}"] = share
            for key, value in self.redundancy.get(name, {}).items():
                out[f"curation/{name}/{key}"] = value
        return out


def curation_figures(
    features: FeatureMatrix,
    sets: Mapping[str, np.ndarray],
    *,
    duplicate_threshold: float,
    max_queries: int,
    paths: np.ndarray | None = None,
    labels: Labels | None = None,
    seed: int = 0,
) -> CurationFigures:
    """Compute the report's figures for each named set of pool rows.

    Parameters
    ----------
    features : FeatureMatrix
        The pool's features (row ``i`` is pool point ``i``).
    sets : mapping of str to np.ndarray
        Sorted pool rows of each set, e.g. ``{"pool": arange(N), "subsample": …, "random": …}``.
    duplicate_threshold, max_queries
        See :func:`redundancy`.
    paths : np.ndarray, optional
        ``[N, L]`` cluster of every pool point at each level (:func:`cluster_paths`).
    labels : np.ndarray or (np.ndarray, np.ndarray), optional
        ``[N]`` class name of every pool point, or its
        :func:`~radio_curation.evaluation.enrichment.label_codes`.
    seed : int
        Seed of the query samples.

    Returns
    -------
    CurationFigures
    """
    rng = np.random.default_rng(seed)
    figures = CurationFigures(sizes={name: len(rows) for name, rows in sets.items()})
    if labels is not None:
        classes, codes = label_codes(labels)
    n_top = 0 if paths is None else np.count_nonzero(bincount_rows(paths[:, -1]))
    for name, rows in sets.items():
        if paths is not None:
            figures.coverage[name] = coverage(paths, rows)
            figures.balance[name] = _count_balance(bincount_rows(paths[:, -1], rows), n_top)
        if labels is not None:
            figures.shares[name] = class_shares(codes, rows, classes.tolist())
        figures.redundancy[name] = redundancy(features, rows, duplicate_threshold, max_queries, rng)
    return figures


def top_level_exemplars(
    features: FeatureMatrix,
    paths: np.ndarray,
    centroids: np.ndarray,
    per_cluster: int,
    metric: str = "l2",
    chunk: int | None = None,
) -> dict[int, np.ndarray]:
    """The pool rows closest to each top-level centroid among the points of that cluster.

    Streamed: each block's distances are merged with the running candidates (at most ``per_cluster`` per
    cluster) and only those kept, so nothing of length N is held. Ties go to the lower row.

    Parameters
    ----------
    features : FeatureMatrix
        The pool's features.
    paths : np.ndarray
        ``[N, L]`` cluster paths; the last column is the top-level cluster.
    centroids : np.ndarray
        ``[k_L, D]`` top-level centroids.
    per_cluster : int
        Exemplars per cluster (at least 1).
    metric : {"l2", "cosine"}
        The clustering's metric (``clusters.h5`` attribute ``metric``).
    chunk : int, optional
        Rows read at a time (default: half of :func:`~radio_curation.evaluation.similarity.block_rows`).

    Returns
    -------
    dict
        Top-level cluster → up to ``per_cluster`` pool rows, closest first, for every non-empty cluster.
    """
    top = paths[:, -1]
    centroids = np.asarray(centroids, dtype=np.float32)
    if metric == "cosine":
        centroids = l2_normalise(centroids)
    cluster = np.empty(0, dtype=np.int64)
    distance = np.empty(0, dtype=np.float32)
    row = np.empty(0, dtype=np.int64)
    # Half blocks: a block's rows and their centroids together fill one block.
    for start, x in features.iter_chunks(chunk or max(1, block_rows(features.dim) // 2)):
        mine = centroids[top[start : start + len(x)]]
        if metric == "cosine":
            block = 1.0 - np.einsum("ij,ij->i", unit_rows(x), mine)
        else:
            mine -= x
            block = np.sqrt(np.einsum("ij,ij->i", mine, mine))
        cluster = np.concatenate([cluster, top[start : start + len(x)]])
        distance = np.concatenate([distance, block])
        row = np.concatenate([row, np.arange(start, start + len(x), dtype=np.int64)])
        order = np.lexsort((row, distance, cluster))
        cluster, distance, row = cluster[order], distance[order], row[order]
        # Rank of each candidate within its cluster's run of the sorted candidates.
        runs = np.flatnonzero(np.diff(cluster, prepend=-1))
        rank = np.arange(len(cluster)) - np.repeat(runs, np.diff(runs, append=len(cluster)))
        keep = rank < per_cluster
        cluster, distance, row = cluster[keep], distance[keep], row[keep]
    runs = np.flatnonzero(np.diff(cluster, prepend=-1))
    return {int(cluster[a]): row[a:b] for a, b in zip(runs, np.append(runs[1:], len(row)), strict=True)}
