"""Samplers: choose a subset of a clustered pool (random, balanced, semdedup, prototypicality), composable.

A sampler is a pure function of (pool, candidate rows, target size, random generator). Samplers that
reduce to a size (random, balanced, prototypicality) use ``target_size``; semdedup is a filter whose
output size follows from its threshold. :class:`Compose` runs several in order, each on what the
previous one kept (``sampler=dedup_then_balanced``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Interval
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from radio_curation.curation.backends import RowView
from radio_curation.curation.clusters import Hierarchy
from radio_curation.curation.kmeans import derive_seed, select_per_cluster
from radio_curation.errors import RadioCurationError
from radio_curation.progress import progress
from radio_curation.runs.settings import PositiveInt
from radio_curation.suppression import greedy_keep

log = logging.getLogger(__name__)

#: Elements of a similarity block computed at once in semdedup (16 MiB in float32).
SIMILARITY_BLOCK = 1 << 22
#: Rows of a cluster gathered and normalised at once in semdedup.
GATHER_ROWS = 1024
#: Edges gathered before semdedup settles them (components: compressed to one star per component).
EDGE_BUDGET = 1 << 22


@dataclass
class ClusteredPool:
    """What samplers choose from: the clustered points, their cluster paths and (lazily) their features.

    Attributes
    ----------
    hierarchy
        The clustering (row i is the point ``hierarchy.cutout_id[i]``).
    features
        Returns the ``[n, d]`` features of all rows, aligned with ``hierarchy.cutout_id``, in their stored
        dtype (float16 or float32: samplers convert a block of rows at a time to float32); read once, when
        a sampler first needs them.
    """

    hierarchy: Hierarchy
    features: Callable[[], np.ndarray] | None = None
    _paths: np.ndarray | None = field(default=None, repr=False)
    _x: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return self.hierarchy.n

    @property
    def paths(self) -> np.ndarray:
        if self._paths is None:
            self._paths = self.hierarchy.paths()
        return self._paths

    def x(self) -> np.ndarray:
        """The pool's features (read on first use)."""
        if self._x is None:
            if self.features is None:
                raise RadioCurationError("this sampler needs the features, but the pool has none")
            self._x = self.features()
        return self._x


def _require_target(name: str, target_size: int | None, available: int) -> int:
    if target_size is None:
        raise RadioCurationError(f"sampler {name} needs target_size=<number of rows to keep>")
    if target_size < 0:
        raise RadioCurationError(f"target_size={target_size} must not be negative")
    if target_size > available:
        raise RadioCurationError(
            f"target_size={target_size} is larger than the {available} rows sampler {name} can choose from; "
            "lower target_size (or loosen the samplers before it)"
        )
    return int(target_size)


def _group_rank(groups: np.ndarray, order: np.ndarray, n_groups: int) -> np.ndarray:
    """Rank of each element of ``order`` within its group, where ``groups[order]`` is sorted."""
    sorted_groups = groups[order]
    starts = np.searchsorted(sorted_groups, np.arange(n_groups))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - starts[sorted_groups]
    return rank


def water_fill(
    sizes: np.ndarray, groups: np.ndarray, quota: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Share each group's quota among its members as evenly as their sizes allow ("water-filling").

    Within a group, member i gets ``min(cap, sizes[i])`` with ``cap`` the largest level the quota
    allows; the remainder (smaller than the number of members above the cap) goes one each to members
    above the cap chosen at random. Vectorised over all groups.

    Parameters
    ----------
    sizes
        ``[m]`` non-negative member sizes.
    groups
        ``[m]`` group of each member, in ``0..len(quota)-1``.
    quota
        ``[g]`` rows to take from each group, at most the group's total size.
    rng
        Chooses who gets the remainder.

    Returns
    -------
    numpy.ndarray
        ``[m]`` int64 rows to take from each member: per group they sum to its quota, and no member
        gets more than its size.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    quota = np.asarray(quota, dtype=np.int64)
    n_groups = len(quota)
    totals = np.bincount(groups, weights=sizes, minlength=n_groups).astype(np.int64)
    if np.any(quota > totals) or np.any(quota < 0):
        raise ValueError("a group's quota exceeds its total size")
    order = np.lexsort((sizes, groups))
    s = sizes[order]
    g = groups[order]
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(len(s)) - starts[g]
    cum = np.cumsum(s)
    before_group = np.concatenate(([0], cum))[starts][g]
    prefix = cum - before_group
    # Taken in total if the cap sat at this member's size: smaller members whole, the rest capped.
    filled_at = prefix + s * (counts[g] - rank - 1)
    full = filled_at <= quota[g]
    n_full = np.bincount(g, weights=full, minlength=n_groups).astype(np.int64)
    last_full = starts + n_full - 1
    taken_full = np.where(n_full > 0, np.concatenate(([0], prefix))[last_full + 1], 0)
    n_rest = counts - n_full
    cap = np.where(n_rest > 0, (quota - taken_full) // np.maximum(n_rest, 1), 0)
    remainder = quota - taken_full - cap * n_rest
    take_sorted = np.where(full, s, cap[g])
    rest_idx = np.flatnonzero(~full)
    rest_groups = g[rest_idx]
    by_key = np.lexsort((rng.random(len(rest_idx)), rest_groups))
    take_sorted[rest_idx] += _group_rank(rest_groups, by_key, n_groups) < remainder[rest_groups]
    take = np.empty_like(take_sorted)
    take[order] = take_sorted
    return take


def cluster_counts(hierarchy: Hierarchy, paths: np.ndarray) -> list[np.ndarray]:
    """Rows under each cluster of each level, counting only the rows whose ``paths`` are given."""
    counts = [np.bincount(paths[:, 0], minlength=hierarchy.levels[0].k).astype(np.int64)]
    for level in range(2, hierarchy.n_levels + 1):
        counts.append(
            np.bincount(
                hierarchy.parents(level), weights=counts[-1], minlength=hierarchy.levels[level - 1].k
            ).astype(np.int64)
        )
    return counts


class Sampler:
    """Base class: ``select`` returns sorted pool rows and a dict of what it did."""

    name = "sampler"
    takes_target = True

    def select(
        self, pool: ClusteredPool, rows: np.ndarray, target_size: int | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Choose among ``rows`` (sorted pool row indices)."""
        raise NotImplementedError


class RandomSampler(Sampler):
    """``target_size`` rows uniformly at random (the baseline)."""

    name = "random"

    def select(
        self, pool: ClusteredPool, rows: np.ndarray, target_size: int | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, Any]]:
        target = _require_target(self.name, target_size, len(rows))
        return np.sort(rows[rng.choice(len(rows), size=target, replace=False)]), {}


class BalancedSampler(Sampler):
    """Hierarchical balanced sampling (Vo et al. 2024): water-filling top-down, then ``r``/``c`` at leaves.

    Parameters
    ----------
    strategy
        At the finest clusters take ``r`` random points or the ``c`` closest to the centroid.
    """

    name = "balanced"

    def __init__(self, strategy: Literal["r", "c"] = "r") -> None:
        self.strategy = strategy

    def select(
        self, pool: ClusteredPool, rows: np.ndarray, target_size: int | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, Any]]:
        target = _require_target(self.name, target_size, len(rows))
        hierarchy = pool.hierarchy
        leaf = pool.paths[rows, 0]
        counts = cluster_counts(hierarchy, pool.paths[rows])
        top = hierarchy.n_levels
        quota = water_fill(counts[top - 1], np.zeros(len(counts[top - 1]), dtype=np.int64), [target], rng)
        for level in range(top - 1, 0, -1):
            quota = water_fill(counts[level - 1], hierarchy.parents(level + 1), quota, rng)
        if self.strategy == "c":
            key = hierarchy.levels[0].distance[rows]
        else:
            key = rng.permutation(len(rows))
        chosen = rows[select_per_cluster(leaf, key, quota)]
        return np.sort(chosen), {"leaf_clusters_used": int((quota > 0).sum())}


def _edges_to_stars(n: int, ei: list[np.ndarray], ej: list[np.ndarray]) -> tuple[list, list]:
    graph = coo_matrix(
        (np.ones(sum(map(len, ei)), dtype=np.int8), (np.concatenate(ei), np.concatenate(ej))), (n, n)
    )
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, -1, dtype=np.int64)
    first[labels[::-1]] = np.arange(n)[::-1]
    nodes = np.arange(n)
    star = first[labels] != nodes
    return [nodes[star]], [first[labels][star]]


def _members(clusters: np.ndarray) -> list[np.ndarray]:
    """Positions of each cluster's members, cluster by cluster."""
    order = np.argsort(clusters, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(clusters[order])) + 1)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float32).tiny)


def _cluster_unit_rows(x: np.ndarray | RowView, members: np.ndarray) -> np.ndarray:
    """Rows ``members`` of ``x`` as float32 unit rows, gathered and normalised :data:`GATHER_ROWS` at a
    time into the one output (the cluster in its stored dtype and the normalisation's temporaries would
    otherwise come on top of it, 2.5x its float32 size)."""
    out = np.empty((len(members), x.shape[1]), dtype=np.float32)
    for start in range(0, len(members), GATHER_ROWS):
        out[start : start + GATHER_ROWS] = _unit_rows(x[members[start : start + GATHER_ROWS]])
    return out


def split_clusters(clusters: np.ndarray, key: np.ndarray, max_size: int | None) -> np.ndarray:
    """Cluster labels with every cluster above ``max_size`` rows cut into pieces of at most ``max_size``,
    contiguous in ``key`` order (e.g. the distance to the centroid, which near-duplicates share to within
    their own distance), so a near-duplicate search costs at most ``max_size`` rows per row.

    ``None`` leaves the clusters whole. Labels are renumbered ``0..``; rows keep their order.
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    if max_size is None or len(clusters) == 0 or np.bincount(clusters).max() <= max_size:
        return clusters
    order = np.lexsort((key, clusters))
    rank = np.arange(len(order)) - np.searchsorted(clusters[order], clusters[order])
    piece = np.empty(len(clusters), dtype=np.int64)
    piece[order] = rank // int(max_size)
    return np.unique(clusters * (len(clusters) // int(max_size) + 1) + piece, return_inverse=True)[1]


def near_duplicate_pairs(
    x: np.ndarray | RowView, clusters: np.ndarray, threshold: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per cluster, the row pairs ``(i, j)``, ``i < j``, with cosine similarity above ``threshold``.

    ``x`` holds the features (normalised here, one cluster at a time); only pairs within a cluster are
    compared. One item per cluster that has a pair (all of that cluster's pairs), with a progress bar
    over clusters.
    """
    members_of = _members(clusters)
    with progress(len(members_of), "semdedup", unit="cluster") as bar:
        for members in members_of:
            bar.advance(1)
            m = len(members)
            if m < 2:
                continue
            xc = _cluster_unit_rows(x, members)
            step = max(1, SIMILARITY_BLOCK // m)
            pi, pj = [], []
            for start in range(0, m, step):
                i, j = np.nonzero(xc[start : start + step] @ xc.T > threshold)
                i += start
                upper = j > i
                pi.append(members[i[upper]])
                pj.append(members[j[upper]])
            pi, pj = np.concatenate(pi), np.concatenate(pj)
            if len(pi):
                yield pi, pj


def duplicate_groups(x: np.ndarray, clusters: np.ndarray, threshold: float) -> np.ndarray:
    """Connected components of the graph "cosine similarity > ``threshold``", searched within clusters.

    Parameters
    ----------
    x
        ``[n, d]`` L2-normalised float32 features.
    clusters
        ``[n]`` cluster of each row; only pairs within a cluster are compared.
    threshold
        Similarity above which two rows are near-duplicates.

    Returns
    -------
    numpy.ndarray
        ``[n]`` group label per row (one group per connected component, singletons included). The groups
        do not depend on the order of the rows.
    """
    n = len(x)
    ei: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    ej: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    pending = 0
    for i, j in near_duplicate_pairs(x, clusters, threshold):
        ei.append(i)
        ej.append(j)
        pending += len(i)
        if pending > EDGE_BUDGET:
            ei, ej = _edges_to_stars(n, ei, ej)
            pending = len(ei[0])
    graph = coo_matrix(
        (np.ones(sum(map(len, ei)), dtype=np.int8), (np.concatenate(ei), np.concatenate(ej))), (n, n)
    )
    return connected_components(graph, directed=False)[1]


def priority_dedup(
    x: np.ndarray | RowView,
    clusters: np.ndarray,
    threshold: float,
    rank: np.ndarray,
    block_rows: int | None = None,
) -> np.ndarray:
    """SemDeDup's rule: going through each cluster in priority order, drop a row when a kept row of higher
    priority has cosine similarity above ``threshold`` with it.

    A chain A~B~C with A≁C (A first) keeps A and C: B goes because of A, and C only resembles B.

    Each cluster is streamed in priority order, ``block_rows`` rows at a time: a block is compared with the
    kept rows before it and with itself, so the memory is one block's similarities (``block_rows`` × the
    cluster's size) and no list of pairs is built.

    Parameters
    ----------
    x
        ``[n, d]`` features (L2-normalised here, one cluster at a time): an array or a row view.
    clusters
        ``[n]`` cluster of each row; only pairs within a cluster are compared.
    threshold
        Similarity above which two rows are near-duplicates.
    rank
        ``[n]`` distinct priorities, 0 first.
    block_rows
        Rows compared at once (default: :data:`SIMILARITY_BLOCK` similarities per block).

    Returns
    -------
    numpy.ndarray
        ``[n]`` bool: the rows kept.
    """
    keep = np.ones(len(clusters), dtype=bool)
    members_of = _members(np.asarray(clusters))
    with progress(len(members_of), "semdedup", unit="cluster") as bar:
        for members in members_of:
            bar.advance(1)
            if len(members) > 1:
                members = members[np.argsort(rank[members])]
                keep[members] = _priority_dedup_cluster(_cluster_unit_rows(x, members), threshold, block_rows)
    return keep


def _priority_dedup_cluster(xc: np.ndarray, threshold: float, block_rows: int | None) -> np.ndarray:
    """Which rows of one cluster's unit rows ``xc`` (in priority order) the priority rule keeps."""
    m = len(xc)
    step = block_rows or max(1, SIMILARITY_BLOCK // m)
    kept = np.ones(m, dtype=bool)
    for start in range(0, m, step):
        stop = min(m, start + step)
        sims = xc[start:stop] @ xc[:stop].T > threshold
        # Rows matching a kept row of an earlier block are dropped whatever happens in this block.
        free = ~sims[:, :start][:, kept[:start]].any(axis=1)
        a, b = np.nonzero(np.triu(sims[:, start:stop], k=1) & free[:, None] & free[None, :])
        kept[start:stop] = free & greedy_keep(a, b, stop - start)
    return kept


def keep_one_per_group(groups: np.ndarray, score: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Sorted indices of the row with the lowest ``score`` in each group (ties: lowest ``tiebreak``)."""
    order = np.lexsort((tiebreak, score, groups))
    first = np.ones(len(order), dtype=bool)
    first[1:] = groups[order][1:] != groups[order][:-1]
    return np.sort(order[first])


def cosine_to_centroid(
    pool: ClusteredPool, rows: np.ndarray, level: int = 1, block: int = 16384
) -> np.ndarray:
    """Cosine distance of each row's features to the centroid of its cluster at ``level``, a block of rows
    at a time (memory: one block of features and of their centroids)."""
    x = pool.x()
    centroids = _unit_rows(pool.hierarchy.levels[level - 1].centroids)
    out = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        c = centroids[pool.paths[part, level - 1]]
        out[start : start + len(part)] = 1.0 - np.einsum("ij,ij->i", _unit_rows(x[part]), c)
    return out


class SemDedupSampler(Sampler):
    """SemDeDup (Abbas et al. 2023): near-duplicates within clusters, thinned to the rows that stay.

    Parameters
    ----------
    eps
        Rows with cosine similarity above ``1 - eps`` are near-duplicates.
    keep
        Priority: ``hard`` (farthest from the centroid first), ``easy`` (closest first) or ``random``.
    level
        The clustering level whose clusters bound the search.
    rule
        ``priority`` (the paper's): drop a row when a kept row of higher priority is a near-duplicate of
        it, so ``eps`` means what it means in the paper. ``components``: keep the highest-priority row of
        each connected group of near-duplicates (fewer rows: a chain A~B~C keeps A alone).
    max_cluster_size
        Clusters above this many rows are searched in pieces of at most this size, contiguous in
        distance to the centroid (:func:`split_clusters`): the search costs at most this many
        comparisons per row; ``None`` searches every cluster whole (its cost grows as the square of the
        largest cluster).
    """

    name = "semdedup"
    takes_target = False

    def __init__(
        self,
        eps: Annotated[float, Interval(gt=0, lt=2)] = 0.05,
        keep: Literal["hard", "easy", "random"] = "hard",
        level: PositiveInt = 1,
        rule: Literal["priority", "components"] = "priority",
        max_cluster_size: Annotated[int, Interval(ge=2)] | None = None,
    ) -> None:
        self.eps = float(eps)
        self.keep = keep
        self.level = int(level)
        self.rule = rule
        self.max_cluster_size = None if max_cluster_size is None else int(max_cluster_size)

    def select(
        self, pool: ClusteredPool, rows: np.ndarray, target_size: int | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if not 1 <= self.level <= pool.hierarchy.n_levels:
            raise RadioCurationError(
                f"sampler semdedup level={self.level}, but the clustering has {pool.hierarchy.n_levels} levels"
            )
        x = RowView(pool.x(), rows)
        distance = cosine_to_centroid(pool, rows, self.level)
        if self.keep == "random":
            score = rng.random(pool.n)[rows]
        else:
            score = -distance if self.keep == "hard" else distance
        clusters = split_clusters(pool.paths[rows, self.level - 1], distance, self.max_cluster_size)
        tiebreak = pool.hierarchy.cutout_id[rows]
        if self.rule == "components":
            groups = duplicate_groups(x, clusters, 1.0 - self.eps)
            kept = rows[keep_one_per_group(groups, score, tiebreak)]
            sizes = np.bincount(groups)
            return kept, {"duplicate_groups": int((sizes > 1).sum()), "removed": int(len(rows) - len(kept))}
        rank = np.empty(len(rows), dtype=np.int64)
        rank[np.lexsort((tiebreak, score))] = np.arange(len(rows))
        kept = rows[priority_dedup(x, clusters, 1.0 - self.eps, rank)]
        return kept, {"removed": int(len(rows) - len(kept))}


class PrototypicalitySampler(Sampler):
    """Prototypicality pruning (Sorscher et al. 2022) by cosine distance to the cluster's centroid.

    Parameters
    ----------
    keep
        ``hard`` keeps the farthest rows (when data is abundant), ``easy`` the closest (when scarce).
    fraction
        Keep this fraction of the rows; ``None`` keeps ``target_size`` rows.
    level
        The clustering level whose centroids define the distance.
    """

    name = "prototypicality"

    def __init__(
        self,
        keep: Literal["hard", "easy"] = "hard",
        fraction: Annotated[float, Interval(gt=0, le=1)] | None = None,
        level: PositiveInt = 1,
    ) -> None:
        self.keep = keep
        self.fraction = fraction
        self.level = int(level)
        self.takes_target = fraction is None

    def select(
        self, pool: ClusteredPool, rows: np.ndarray, target_size: int | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if self.fraction is None:
            target = _require_target(self.name, target_size, len(rows))
        else:
            target = round(self.fraction * len(rows))
        distance = cosine_to_centroid(pool, rows, self.level)
        key = -distance if self.keep == "hard" else distance
        order = np.lexsort((pool.hierarchy.cutout_id[rows], key))
        kept = rows[np.sort(order[:target])]
        return kept, {"distance_threshold": float(distance[order[target - 1]]) if target else None}


class Compose:
    """Several samplers in order, each choosing among what the previous one kept.

    Parameters
    ----------
    steps
        Named samplers in order (the ``sampler`` config node: ``{semdedup: ..., balanced: ...}``).
    """

    def __init__(self, steps: Mapping[str, Sampler] | Sequence[Sampler]) -> None:
        items = list(steps.items()) if isinstance(steps, Mapping) else [(s.name, s) for s in steps]
        if not items:
            raise RadioCurationError("the sampler config is empty: choose one, e.g. sampler=balanced")
        self.steps = items

    def __call__(
        self, pool: ClusteredPool, target_size: int | None, seed: int
    ) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
        """Pool rows chosen by all steps (sorted) and, per step, its input/output sizes and details."""
        rows = np.arange(pool.n, dtype=np.int64)
        report: dict[str, dict[str, Any]] = {}
        if not any(s.takes_target for _, s in self.steps) and target_size is not None:
            log.info("target_size=%s is not used by samplers %s", target_size, [n for n, _ in self.steps])
        for i, (name, sampler) in enumerate(self.steps):
            rng = np.random.default_rng(derive_seed(seed, i))
            before = len(rows)
            rows, details = sampler.select(pool, rows, target_size, rng)
            report[name] = {"in": before, "out": len(rows), **details}
            log.info("sampler %s: %d -> %d rows", name, before, len(rows))
        return rows, report


def share_of_largest(
    counts_before: np.ndarray, counts_after: np.ndarray, fraction: float = 0.1
) -> dict[str, float]:
    """Share of rows in the largest ``fraction`` of clusters (by size before), before and after sampling."""
    n_top = max(1, round(fraction * len(counts_before)))
    top = np.argsort(counts_before, kind="stable")[::-1][:n_top]
    before = counts_before[top].sum() / max(counts_before.sum(), 1)
    after = counts_after[top].sum() / max(counts_after.sum(), 1)
    return {"clusters": int(n_top), "before": float(before), "after": float(after)}
