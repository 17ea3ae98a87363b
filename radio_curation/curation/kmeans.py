"""k-means and hierarchical k-means with resampling (Vo et al. 2024), on any backend.

Level 1 clusters the points; level t clusters the centroids of level t-1. After each level's k-means,
``n_resampling_steps`` times: take ``sample_size`` points of every cluster (closest to its centroid, or at
random), run k-means again on those points only, and reassign every point of the level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import h5py
import numpy as np

from radio_curation.atomic import atomic_path
from radio_curation.curation.backends import FaissBackend, KMeansBackend, Points, RowView
from radio_curation.curation.initialization import greedy_kmeans_plusplus, kmeans_parallel
from radio_curation.curation.sharded import (
    derive_seed,
    gather_rows,
    local_rows,
    random_keys,
    random_rows,
    smallest_per_cluster,
)
from radio_curation.errors import RadioCurationError
from radio_curation.progress import progress
from radio_curation.runs.settings import NonNegativeInt, PositiveFloat, PositiveInt

log = logging.getLogger(__name__)

Init = Literal["kmeans++", "kmeans_parallel", "random", "auto"]
INITS = get_args(Init)


def resolve_init(method: str, k: int, n: int, max_work: int, oversampling_rounds: float) -> str:
    """The initialisation a k-means of ``k`` clusters on ``n`` training points runs.

    ``auto`` is greedy ``kmeans++`` while its work, ``n × k`` point-steps (``k`` sequential steps over the
    points), is at most ``max_work``; above it ``kmeans_parallel`` while the greedy k-means++ that reduces
    its ``oversampling_rounds × k`` drawn points (rounds × oversampling) to ``k``, ``oversampling_rounds ×
    k²`` point-steps, is at most ``max_work``; ``random`` above both (tens of thousands of clusters).
    """
    if method != "auto":
        return method
    if n * k <= max_work:
        return "kmeans++"
    return "kmeans_parallel" if oversampling_rounds * k * k <= max_work else "random"


def init_centroids(
    x: Points,
    k: int,
    method: str,
    seed: int,
    backend: KMeansBackend | None = None,
    rounds: int = 5,
    oversampling: float = 1.0,
) -> np.ndarray:
    """Initial centroids: ``k`` distinct rows of ``x`` (``random``), greedy k-means++ (``kmeans++``) or
    k-means‖ (``kmeans_parallel``).

    Parameters
    ----------
    x
        ``[n, d]`` points (float32, float16 or a row view), ``n >= k``.
    k
        Number of centroids.
    method
        ``kmeans++`` (:func:`~radio_curation.curation.initialization.greedy_kmeans_plusplus`, which holds a
        float32 copy of ``x``), ``kmeans_parallel``
        (:func:`~radio_curation.curation.initialization.kmeans_parallel`: ``rounds`` searches of the
        points, no copy) or ``random`` (no copy).
    seed
        Seed of the random choices; the same seed gives the same centroids on every backend.
    backend
        Runs k-means‖'s searches; its ``init_device`` runs the k-means++ distance computations, and its
        ``comm`` is the ranks ``x`` is sharded over (``x`` is then this rank's rows): every rank gets the
        centroids of all the rows, the ones a single process would pick. k-means++ copies all rows onto
        every rank. Default: faiss on the CPU.
    rounds, oversampling
        k-means‖'s sampling rounds and the points it draws per round, as a multiple of ``k``.
    """
    backend = backend or FaissBackend("cpu")
    comm = backend.comm
    if method == "random":
        return gather_rows(x, random_rows(comm.layout(x.shape[0])[1], k, seed), comm)
    if method == "kmeans++":
        return greedy_kmeans_plusplus(comm.gather_all(x), k, seed, device=backend.init_device)
    if method == "kmeans_parallel":
        return kmeans_parallel(x, k, seed, backend, rounds=rounds, oversampling=oversampling)
    raise RadioCurationError(f"unknown k-means init {method!r}; use one of {', '.join(INITS)}")


@dataclass
class KMeansResult:
    """One k-means run: centroids, every point's assignment, and diagnostics."""

    centroids: np.ndarray
    assignment: np.ndarray
    distance: np.ndarray
    objective: np.ndarray
    n_train: int
    search_seconds: float


def kmeans(
    x: Points,
    k: int,
    *,
    n_iters: int,
    init: str,
    seed: int,
    spherical: bool = False,
    backend: KMeansBackend | None = None,
    max_points_per_centroid: int | None = None,
    init_rounds: int = 5,
    oversampling: float = 1.0,
) -> KMeansResult:
    """k-means of ``x`` into ``k`` clusters, then every point assigned to its nearest centroid.

    Parameters
    ----------
    x
        ``[n, d]`` points, float32 or float16 (read a block at a time), or a row view of them
        (L2-normalised when ``spherical``); or this rank's rows of them when ``backend.comm`` spans
        several processes (every choice below is then made over all ranks' rows).
    k
        Number of clusters, at most ``n``.
    n_iters
        Lloyd iterations.
    init
        ``kmeans++``, ``kmeans_parallel`` or ``random``.
    seed
        Seed of the initialisation and of the training subsample.
    spherical
        Spherical k-means (cosine distance; centroids renormalised each iteration).
    backend
        Where the work runs (faiss on the CPU by default).
    max_points_per_centroid
        Train on a random subsample of at most ``k * max_points_per_centroid`` points (``None``: all),
        held as an index into ``x``, not a copy. Every point is assigned either way.
    init_rounds, oversampling
        k-means‖'s rounds and points drawn per round (a multiple of ``k``).

    Returns
    -------
    KMeansResult
    """
    backend = backend or FaissBackend("cpu")
    offset, n = backend.comm.layout(x.shape[0])
    if k < 1 or k > n:
        raise RadioCurationError(
            f"cannot make {k} clusters of {n} points: lower the number of clusters (clustering.n_clusters) "
            f"to at most {n}"
        )
    train = x
    if max_points_per_centroid is not None and n > k * max_points_per_centroid:
        rows = random_rows(n, k * max_points_per_centroid, derive_seed(seed, 1))
        train = RowView(x, local_rows(rows, offset, x.shape[0]))
        log.info(
            "training k-means on %d of %d points (max_points_per_centroid=%d)",
            len(rows),
            n,
            max_points_per_centroid,
        )
    start = init_centroids(
        train, k, init, derive_seed(seed, 0), backend, rounds=init_rounds, oversampling=oversampling
    )
    fit = backend.fit(train, start, n_iters, spherical)
    assignment, distance = backend.assign(x, fit.centroids, spherical)
    return KMeansResult(fit.centroids, assignment, distance, fit.objective, fit.n_train, fit.search_seconds)


def imbalance_factor(sizes: np.ndarray) -> float:
    """``k * sum(s²) / (sum s)²``: 1 for equal cluster sizes, larger when uneven (faiss' definition)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    total = sizes.sum()
    return float(len(sizes) * (sizes**2).sum() / total**2) if total > 0 else float("nan")


def select_per_cluster(assignment: np.ndarray, key: np.ndarray, per_cluster: np.ndarray | int) -> np.ndarray:
    """Indices of the ``per_cluster`` rows with the smallest ``key`` in each cluster, ascending.

    ``per_cluster`` is one number for all clusters or one per cluster; clusters smaller than it give all
    their rows. Ties in ``key`` go to the lower row index. A ``key`` that is a permutation of ``0..n-1``
    (a random order) is its own rank, which saves sorting it.
    """
    n = len(assignment)
    key = np.asarray(key)
    if np.issubdtype(key.dtype, np.integer) and len(key) and key.min() >= 0 and key.max() < n:
        is_permutation = bool((np.bincount(key, minlength=n) == 1).all())
    else:
        is_permutation = False
    if is_permutation:
        key_rank = key.astype(np.int64, copy=False)
    else:
        key_rank = np.empty(n, dtype=np.int64)
        key_rank[np.argsort(key, kind="stable")] = np.arange(n)
    # One sort of unique int64 codes (cluster, then key rank): the order of lexsort((key, assignment)),
    # at a fraction of its cost.
    order = np.argsort(np.asarray(assignment, dtype=np.int64) * max(n, 1) + key_rank)
    sorted_labels = assignment[order]
    n_clusters = int(assignment.max()) + 1 if len(assignment) else 0
    starts = np.searchsorted(sorted_labels, np.arange(n_clusters))
    rank = np.arange(len(order)) - starts[sorted_labels]
    limit = per_cluster if np.isscalar(per_cluster) else np.asarray(per_cluster)[sorted_labels]
    return np.sort(order[rank < limit])


@dataclass
class ClusterLevel:
    """One level of a hierarchy.

    Attributes
    ----------
    centroids
        ``[k, d]`` float32.
    assignment
        ``[n_l]`` int64: the cluster of each point (level 1) or of each level l-1 centroid.
    distance
        ``[n_l]`` float32: distance to the assigned centroid (squared L2 or cosine distance).
    sizes
        ``[k]`` int64: number of points (level 1 rows) under each cluster.
    objective
        Objective per iteration of the level's first k-means.
    resampling_objective
        Objective over all of the level's inputs after the first k-means and after each resampling step.
    n_train
        Training points of the level's first k-means.
    search_seconds
        Seconds in assignment steps over the level's k-means runs.
    """

    centroids: np.ndarray
    assignment: np.ndarray
    distance: np.ndarray
    sizes: np.ndarray
    objective: np.ndarray
    resampling_objective: np.ndarray
    n_train: int
    search_seconds: float

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def save(self, group: h5py.Group) -> None:
        """Write the level into an HDF5 group (plain arrays, no pickles)."""
        for name in ("centroids", "assignment", "distance", "sizes", "objective", "resampling_objective"):
            group.create_dataset(name, data=getattr(self, name))
        group.attrs["n_train"] = self.n_train
        group.attrs["search_seconds"] = self.search_seconds
        group.attrs["imbalance_factor"] = imbalance_factor(self.sizes)

    @classmethod
    def load(cls, group: h5py.Group) -> ClusterLevel:
        """Read a level written by :meth:`save`."""
        arrays = {
            name: group[name][()]
            for name in ("centroids", "assignment", "distance", "sizes", "objective", "resampling_objective")
        }
        return cls(
            **arrays, n_train=int(group.attrs["n_train"]), search_seconds=float(group.attrs["search_seconds"])
        )


@dataclass
class HierarchicalKMeans:
    """Hierarchical k-means with resampling, configured by the ``clustering`` config group.

    Parameters
    ----------
    n_clusters
        Clusters per level, e.g. ``[60000, 4000, 300]``; each at most the previous one. The per-level
        settings below take one value for all levels or a list that follows these levels (see
        :meth:`_per_level`).
    n_resampling_steps
        Resampling steps per level (0: none).
    sample_size
        Points taken from each cluster in a resampling step, per level (1 turns resampling off, as a
        k-means of one point per cluster would return those points); ``None``: about half the level's
        mean cluster size.
    sampling_strategy
        ``closest`` (to the centroid) or ``random``.
    n_iters
        Lloyd iterations of every k-means run.
    init
        ``kmeans++`` (greedy), ``kmeans_parallel`` (k-means‖), ``random`` or ``auto``, for all levels or
        one per level. k-means++ takes ``k`` sequential steps, each over the points near its candidates,
        and holds a float32 copy of the points it starts from; k-means‖ takes ``kmeans_parallel_rounds``
        searches of the points, then a k-means++ over the points it drew; ``auto`` picks by
        ``kmeanspp_max_work`` (see :func:`resolve_init`; the choice per level is :meth:`level_init`).
    metric
        ``l2``, or ``cosine`` (features L2-normalised, spherical k-means).
    max_points_per_centroid
        Train each k-means on at most ``k * max_points_per_centroid`` random points (``None``: all);
        every point is still assigned.
    kmeanspp_max_work
        ``init: auto`` runs greedy k-means++ while training points × k is at most this, k-means‖ while
        its reduction (``kmeans_parallel_rounds × kmeans_parallel_oversampling × k²``) is, random above.
    kmeans_parallel_rounds
        k-means‖'s sampling rounds.
    kmeans_parallel_oversampling
        Points k-means‖ draws per round, as a multiple of ``k``.
    backend
        A :class:`~radio_curation.curation.backends.KMeansBackend`.
    """

    n_clusters: Sequence[PositiveInt]
    n_resampling_steps: Sequence[NonNegativeInt] | NonNegativeInt = 0
    sample_size: Sequence[PositiveInt | None] | PositiveInt | None = None
    sampling_strategy: Literal["closest", "random"] = "closest"
    n_iters: PositiveInt = 20
    init: Sequence[Init] | Init = "kmeans++"
    metric: Literal["l2", "cosine"] = "l2"
    max_points_per_centroid: PositiveInt | None = None
    kmeanspp_max_work: PositiveInt = 250_000_000
    kmeans_parallel_rounds: PositiveInt = 5
    kmeans_parallel_oversampling: PositiveFloat = 1.0
    backend: KMeansBackend = field(default_factory=lambda: FaissBackend("cpu"))

    def __post_init__(self) -> None:
        self.n_clusters = [int(k) for k in self.n_clusters]
        n_levels = len(self.n_clusters)
        self.n_resampling_steps = self._per_level(self.n_resampling_steps, "n_resampling_steps", int)
        self.sample_size = self._per_level(self.sample_size, "sample_size", int, derived=True)
        self.init = self._per_level(self.init, "init", str)
        if n_levels == 0:
            raise RadioCurationError("clustering.n_clusters is empty: give the number of clusters per level")
        if any(b > a for a, b in zip(self.n_clusters, self.n_clusters[1:], strict=False)):
            raise RadioCurationError(
                f"clustering.n_clusters={self.n_clusters}: each level clusters the previous level's "
                "centroids, so the numbers must not increase"
            )

    def _per_level(
        self, value: Any, name: str, cast: Callable[[Any], Any], derived: bool = False
    ) -> list[Any]:
        """One value per level of ``n_clusters``: a scalar applies to all levels; a list follows the levels,
        its first entries for the first levels and its last entry repeated above them (so changing the
        number of levels is one override). ``None`` (with ``derived``) is worked out per level at fit time.
        """
        n_levels = len(self.n_clusters)
        given = value
        if value is None or isinstance(value, str | int):
            value = [value]
        values = [None if v is None else cast(v) for v in value]
        if not values or (None in values and not derived):
            raise RadioCurationError(
                f"clustering.{name}={given}: give one value for all levels or one per level of n_clusters"
            )
        if len(values) > 1 and len(values) != n_levels:
            log.info(
                "clustering.%s has %d entries for the %d levels of n_clusters: using %s",
                name,
                len(values),
                n_levels,
                values[:n_levels] + values[-1:] * (n_levels - len(values)),
            )
        return values[:n_levels] + values[-1:] * (n_levels - len(values))

    def level_sample_size(self, level: int, n_inputs: int) -> int:
        """Points per cluster in level ``level``'s resampling steps: as configured, or (``null``) about half
        the level's mean cluster size, ``n_inputs / (2 k)``, rounded (at least 1)."""
        k = self.n_clusters[level - 1]
        configured = self.sample_size[level - 1]
        return configured if configured is not None else max(1, (n_inputs + k) // (2 * k))

    def level_init(self, level: int, n_points: int) -> str:
        """The initialisation level ``level`` (1-based) runs on ``n_points`` level-1 points (all ranks'):
        ``auto`` resolved by the level's k and training points (its inputs, at most ``k ×
        max_points_per_centroid``)."""
        k = self.n_clusters[level - 1]
        n = n_points if level == 1 else self.n_clusters[level - 2]
        if self.max_points_per_centroid is not None:
            n = min(n, k * self.max_points_per_centroid)
        rounds = self.kmeans_parallel_rounds * self.kmeans_parallel_oversampling
        return resolve_init(self.init[level - 1], k, n, self.kmeanspp_max_work, rounds)

    @property
    def n_levels(self) -> int:
        return len(self.n_clusters)

    @property
    def spherical(self) -> bool:
        return self.metric == "cosine"

    def fit_level(self, x: Points, level: int, seed: int) -> ClusterLevel:
        """Cluster ``x`` (points or the previous level's centroids) as level ``level`` (1-based).

        ``ClusterLevel.sizes`` counts ``x``'s rows; the caller weights upper levels by points. At level 1
        ``x`` may be this rank's shard of the points (the backend's ``comm``); the level's assignment and
        distances are then this rank's. Upper levels cluster centroids every rank holds whole, on
        :attr:`~radio_curation.curation.backends.KMeansBackend.replicated` (identically on every rank).
        """
        i = level - 1
        k = self.n_clusters[i]
        backend = self.backend if level == 1 else self.backend.replicated
        comm = backend.comm
        offset, n = comm.layout(x.shape[0])
        if k > n:
            what = "points" if level == 1 else f"level-{level - 1} centroids"
            raise RadioCurationError(
                f"level {level} asks for {k} clusters but there are only {n} {what}: "
                f"lower clustering.n_clusters[{i}]"
            )
        init = self.level_init(level, n)
        parallel = {
            "init_rounds": self.kmeans_parallel_rounds,
            "oversampling": self.kmeans_parallel_oversampling,
        }
        first = kmeans(
            x,
            k,
            n_iters=self.n_iters,
            init=init,
            seed=derive_seed(seed, level, 0),
            spherical=self.spherical,
            backend=backend,
            max_points_per_centroid=self.max_points_per_centroid,
            **parallel,
        )
        centroids, assignment, distance = first.centroids, first.assignment, first.distance
        resampling_objective = [comm.total(distance)]
        search = first.search_seconds
        sample_size = self.level_sample_size(level, n)
        steps = self.n_resampling_steps[i] if sample_size > 1 else 0
        if self.n_resampling_steps[i] and not steps:
            log.info(
                "level %d: sample_size 1 turns its %d resampling steps off", level, self.n_resampling_steps[i]
            )
        for step in range(1, steps + 1):
            step_seed = derive_seed(seed, level, step)
            key = distance if self.sampling_strategy == "closest" else random_keys(len(x), offset, step_seed)
            if comm.world_size == 1:
                rows = select_per_cluster(assignment, key, sample_size)
            else:
                rows = smallest_per_cluster(assignment, key, sample_size, k, comm)
            sample = RowView(x, rows)
            n_sample = comm.layout(sample.shape[0])[1]
            if n_sample < k:
                # Only possible when many clusters are empty; the level keeps its k centroids.
                log.warning(
                    "level %d: the resampling sample has %d points for %d clusters; stopping resampling",
                    level,
                    n_sample,
                    k,
                )
                break
            again = kmeans(
                sample,
                k,
                n_iters=self.n_iters,
                init=init,
                seed=step_seed,
                spherical=self.spherical,
                backend=backend,
                **parallel,
            )
            centroids = again.centroids
            assignment, distance = backend.assign(x, centroids, self.spherical)
            resampling_objective.append(comm.total(distance))
            search += again.search_seconds
        return ClusterLevel(
            centroids=centroids,
            assignment=assignment.astype(np.int64),
            distance=distance.astype(np.float32),
            sizes=comm.sum(np.bincount(assignment, minlength=centroids.shape[0]).astype(np.int64)),
            objective=first.objective,
            resampling_objective=np.asarray(resampling_objective),
            n_train=first.n_train,
            search_seconds=search,
        )

    def fit(
        self,
        x: Points | None,
        seed: int,
        done: Sequence[ClusterLevel] = (),
        on_level: Callable[[int, ClusterLevel], None] | None = None,
    ) -> list[ClusterLevel]:
        """All levels, continuing after the levels in ``done`` (a resumed run).

        Parameters
        ----------
        x
            ``[n, d]`` float32 or float16 points, or this rank's shard of them when the backend's ``comm``
            spans several processes; only read when level 1 is not in ``done`` (may then be ``None``).
        seed
            Seed of the whole hierarchy; each level and resampling step derives its own.
        done
            Levels already computed, in order.
        on_level
            Called with ``(level, ClusterLevel)`` as each new level finishes (to save it).

        Returns
        -------
        list of ClusterLevel
            One per level, whole on every rank; ``sizes`` count level-1 points at every level.
        """
        levels = list(done)
        if not levels and x is None:
            raise ValueError("level 1 is not done, so the points are needed")
        with progress(self.n_levels, "hierarchical k-means", unit="level") as bar:
            bar.advance(len(levels))
            for level in range(len(levels) + 1, self.n_levels + 1):
                inputs = x if level == 1 else levels[-1].centroids
                result = self.fit_level(inputs, level, seed)
                if level == 1 and self.backend.comm.world_size > 1:
                    result.assignment, result.distance = (
                        np.concatenate(self.backend.comm.gather(a))
                        for a in (result.assignment, result.distance)
                    )
                if level > 1:
                    result.sizes = np.bincount(
                        result.assignment, weights=levels[-1].sizes, minlength=result.k
                    ).astype(np.int64)
                levels.append(result)
                if on_level is not None:
                    on_level(level, result)
                bar.advance(1)
        return levels


def save_level(path: Path, level: ClusterLevel, cutout_id: np.ndarray | None = None) -> None:
    """Write one finished level to its own file (atomically), so a killed run resumes after it."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        level.save(f)
        if cutout_id is not None:
            f.create_dataset("cutout_id", data=cutout_id)


def load_level(path: Path) -> tuple[ClusterLevel, np.ndarray | None]:
    """Read a level file written by :func:`save_level` (and its ``cutout_id`` if it holds them)."""
    with h5py.File(path, "r") as f:
        return ClusterLevel.load(f), (f["cutout_id"][()] if "cutout_id" in f else None)
