"""Are physically adjacent windows closer in feature space than random pairs? And who are a window's neighbours?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import mannwhitneyu

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.blocked import factorise, grouped_order
from radio_curation.evaluation.similarity import block_rows, cosine_knn, unit_rows
from radio_curation.features.matrix import FeatureMatrix


def adjacent_pairs(
    mosaic: np.ndarray,
    y0: np.ndarray,
    x0: np.ndarray,
    size: np.ndarray,
    max_offset: float = 1.0,
    max_pairs: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Pairs of windows of the same mosaic and size whose corners are at most ``max_offset × size`` apart.

    The offset is the Chebyshev distance in pixels, so ``max_offset=0.5`` keeps the eight grid neighbours
    of a 50%-overlap sliding window and ``1.0`` every window that overlaps or touches. Windows are grouped
    by (mosaic, size) with a counting sort into an int32 order, and the pairs are found one group at a
    time, so the per-row memory is the int32 keys and order (8 bytes per window) beside the columns.

    Parameters
    ----------
    mosaic, y0, x0, size : np.ndarray
        ``[N]`` window table columns.
    max_offset : float
        Largest offset in units of the window size.
    max_pairs : int, optional
        Bound the pairs kept: each group keeps at most twice its share (by windows) of ``max_pairs``, a
        random choice, so memory stays near ``2 × max_pairs`` pairs however many windows there are (all
        ~190 M adjacent pairs of LoTSS DR2 are never held at once). ``None``: every pair.
    seed : int
        Seed of that choice.

    Returns
    -------
    np.ndarray
        ``[P, 2]`` int64 row pairs ``i < j``.
    """
    n = len(size)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    mosaics, mosaic_code = factorise(mosaic)
    sizes, size_code = factorise(size)
    keys = mosaic_code.astype(np.int64 if len(mosaics) * len(sizes) > np.iinfo(np.int32).max else np.int32)
    del mosaic_code
    keys *= len(sizes)
    keys += size_code
    del size_code
    order, counts = grouped_order(keys, len(mosaics) * len(sizes))
    del keys
    rng = np.random.default_rng(seed)
    pairs = [np.zeros((0, 2), dtype=np.int64)]
    for start, count in zip(np.cumsum(counts) - counts, counts, strict=True):
        if count < 2:
            continue
        rows = order[start : start + count]
        tree = cKDTree(np.stack([np.asarray(y0[rows], np.float64), np.asarray(x0[rows], np.float64)], axis=1))
        local = tree.query_pairs(r=max_offset * float(size[rows[0]]), p=np.inf, output_type="ndarray")
        if max_pairs is not None:
            quota = -(-2 * int(max_pairs) * len(rows) // n)
            if len(local) > quota:
                local = local[rng.choice(len(local), quota, replace=False)]
        pairs.append(rows[local].astype(np.int64))
    return np.sort(np.concatenate(pairs), axis=1)


def random_pairs(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` uniformly random pairs of distinct rows out of ``n``, as ``[count, 2]`` int64."""
    if n < 2:
        raise RadioCurationError(f"random pairs need at least two rows, got {n}")
    first = rng.integers(0, n, count)
    second = (first + rng.integers(1, n, count)) % n
    return np.stack([first, second], axis=1).astype(np.int64)


def pair_cosine_distance(features: FeatureMatrix, pairs: np.ndarray) -> np.ndarray:
    """Cosine distance ``1 − cos`` of each row pair, reading each needed row once.

    The rows are normalised in place and the pairs' products taken a block of pairs at a time, so the
    rows (float32) are the only large array held.
    """
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.float32)
    rows, inverse = np.unique(pairs, return_inverse=True)
    x = unit_rows(features.read(rows))
    inverse = inverse.reshape(pairs.shape)
    out = np.empty(len(pairs), dtype=np.float32)
    step = block_rows(x.shape[1])
    for start in range(0, len(pairs), step):
        first, second = inverse[start : start + step].T
        out[start : start + len(first)] = 1.0 - np.einsum("ij,ij->i", x[first], x[second])
    return out


@dataclass
class DistanceTest:
    """Adjacent vs random pair distances and the one-sided Mann–Whitney U test between them."""

    adjacent: np.ndarray
    random: np.ndarray
    u_statistic: float
    p_value: float

    def metrics(self) -> dict[str, float]:
        """Flat metrics for ``metrics.json``.

        ``prob_adjacent_closer`` is the common-language effect size: the probability that a random
        adjacent pair is closer than a random pair (0.5 = no spatial signal).
        """
        n1, n2 = len(self.adjacent), len(self.random)
        return {
            "neighbours/n_adjacent_pairs": float(n1),
            "neighbours/n_random_pairs": float(n2),
            "neighbours/adjacent_distance_median": float(np.median(self.adjacent)),
            "neighbours/random_distance_median": float(np.median(self.random)),
            "neighbours/adjacent_distance_mean": float(np.mean(self.adjacent)),
            "neighbours/random_distance_mean": float(np.mean(self.random)),
            "neighbours/mannwhitney_u": self.u_statistic,
            "neighbours/p_value": self.p_value,
            "neighbours/prob_adjacent_closer": 1.0 - self.u_statistic / (n1 * n2),
        }


def distance_test(
    features: FeatureMatrix, adjacent: np.ndarray, max_pairs: int = 100_000, seed: int = 0
) -> DistanceTest:
    """Compare feature distances of adjacent pairs with those of as many random pairs.

    Parameters
    ----------
    features : FeatureMatrix
        Features aligned with the rows the pairs index.
    adjacent : np.ndarray
        ``[P, 2]`` adjacent row pairs (from :func:`adjacent_pairs`).
    max_pairs : int
        At most this many adjacent pairs (a random sample) and as many random pairs.
    seed : int
        Seed of the sampling.

    Returns
    -------
    DistanceTest
        With ``alternative='less'``: a small p-value means adjacent windows are closer.
    """
    if len(adjacent) == 0:
        raise RadioCurationError(
            "no physically adjacent windows among the feature rows (windows of one mosaic and size within "
            "eval.max_offset × size); raise eval.max_offset or use features of an overlapping sliding window"
        )
    rng = np.random.default_rng(seed)
    if len(adjacent) > max_pairs:
        adjacent = adjacent[rng.choice(len(adjacent), max_pairs, replace=False)]
    near = pair_cosine_distance(features, adjacent)
    far = pair_cosine_distance(features, random_pairs(features.n, len(adjacent), rng))
    result = mannwhitneyu(near, far, alternative="less")
    return DistanceTest(near, far, float(result.statistic), float(result.pvalue))


def gallery_neighbours(
    features: FeatureMatrix, query_rows: np.ndarray, k: int, chunk_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` feature-space neighbours of each query row, the query itself excluded.

    Parameters
    ----------
    features : FeatureMatrix
        All feature rows, streamed in blocks (normalised in place).
    query_rows : np.ndarray
        ``[Q]`` rows to query.
    k : int
        Neighbours per query.
    chunk_rows : int, optional
        Rows per block (default: :func:`~radio_curation.evaluation.similarity.block_rows`, a bound in
        bytes whatever the rows).

    Returns
    -------
    rows : np.ndarray
        ``[Q, k]`` int64 neighbour rows, nearest first.
    similarity : np.ndarray
        ``[Q, k]`` cosine similarities.
    """
    query_rows = np.asarray(query_rows, dtype=np.int64)
    chunks = features.iter_chunks(chunk_rows or block_rows(features.dim))
    sim, idx = cosine_knn(features.read(query_rows), chunks, k + 1)
    keep = idx != query_rows[:, None]
    # Each row drops its own index if found, else its last (k+1-th) neighbour.
    keep[keep.all(axis=1), -1] = False
    return idx[keep].reshape(len(idx), -1), sim[keep].reshape(len(idx), -1)
