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
    """Fraction of the pool's (non-empty) clusters at each level that ``rows`` hit at least once."""
    return [
        len(np.unique(paths[rows, level])) / len(np.unique(paths[:, level]))
        for level in range(paths.shape[1])
    ]


def balance(codes: np.ndarray, n_clusters: int) -> float:
    """Normalised entropy of the cluster shares (1 = every cluster equally represented, 0 = one cluster)."""
    if n_clusters < 2:
        return 1.0
    p = np.bincount(codes)
    p = p[p > 0] / len(codes)
    return float(-(p * np.log(p)).sum() / np.log(n_clusters))


def class_shares(codes: np.ndarray, rows: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Share of each class among ``rows`` (classes absent from ``rows`` get 0).

    ``codes`` is every pool point's index into ``classes`` (``np.unique(labels, return_inverse=True)``):
    counting codes needs no per-set copy or sort of the label strings.
    """
    counts = np.bincount(codes[rows], minlength=len(classes)) / max(len(rows), 1)
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
    local = np.arange(len(rows))
    if len(rows) > max_queries:
        local = np.sort(rng.choice(len(rows), max_queries, replace=False))
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
    labels: np.ndarray | None = None,
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
    labels : np.ndarray, optional
        ``[N]`` class name of every pool point.
    seed : int
        Seed of the query samples.

    Returns
    -------
    CurationFigures
    """
    rng = np.random.default_rng(seed)
    figures = CurationFigures(sizes={name: len(rows) for name, rows in sets.items()})
    if labels is not None:
        names = np.asarray(labels).astype(str, copy=False)
        # searchsorted after unique holds less at once than unique(return_inverse=True).
        classes = np.unique(names)
        codes = np.searchsorted(classes, names)
    n_top = 0 if paths is None else len(np.unique(paths[:, -1]))
    for name, rows in sets.items():
        if paths is not None:
            figures.coverage[name] = coverage(paths, rows)
            figures.balance[name] = balance(paths[rows, -1], n_top)
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

    Parameters
    ----------
    features : FeatureMatrix
        The pool's features.
    paths : np.ndarray
        ``[N, L]`` cluster paths; the last column is the top-level cluster.
    centroids : np.ndarray
        ``[k_L, D]`` top-level centroids.
    per_cluster : int
        Exemplars per cluster.
    metric : {"l2", "cosine"}
        The clustering's metric (``clusters.h5`` attribute ``metric``).
    chunk : int, optional
        Rows read at a time (default: half of :func:`~radio_curation.evaluation.similarity.block_rows`).

    Returns
    -------
    dict
        Top-level cluster → up to ``per_cluster`` pool rows, closest first.
    """
    top = paths[:, -1]
    centroids = np.asarray(centroids, dtype=np.float32)
    distance = np.empty(features.n, dtype=np.float32)
    if metric == "cosine":
        centroids = l2_normalise(centroids)
    # Half blocks: a block's rows and their centroids together fill one block.
    for start, x in features.iter_chunks(chunk or max(1, block_rows(features.dim) // 2)):
        mine = centroids[top[start : start + len(x)]]
        if metric == "cosine":
            distance[start : start + len(x)] = 1.0 - np.einsum("ij,ij->i", unit_rows(x), mine)
        else:
            mine -= x
            distance[start : start + len(x)] = np.sqrt(np.einsum("ij,ij->i", mine, mine))
    order = np.lexsort((distance, top))
    # The clusters' runs in ``order`` from their sizes: no further per-row array.
    sizes = np.bincount(top)
    starts = np.cumsum(sizes) - sizes
    return {
        int(c): order[starts[c] : starts[c] + min(sizes[c], per_cluster)].copy()
        for c in np.flatnonzero(sizes)
    }
