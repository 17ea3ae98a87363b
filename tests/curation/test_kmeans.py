"""k-means, its backends and hierarchical k-means with resampling, on planted clusters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from radio_curation.curation.backends import FaissBackend, TorchBackend
from radio_curation.curation.initialization import greedy_kmeans_plusplus, n_local_trials
from radio_curation.curation.kmeans import (
    HierarchicalKMeans,
    imbalance_factor,
    init_centroids,
    kmeans,
    select_per_cluster,
)
from radio_curation.errors import RadioCurationError
from tests.curation.planted import planted

SIZES = [1500, 600, 300, 120, 60, 30]


def _normalized(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("backend", [FaissBackend("cpu"), TorchBackend("cpu")], ids=["faiss", "torch"])
def test_planted_clusters_are_recovered(backend):
    x, labels = planted(SIZES, separation=30.0, seed=1)
    result = kmeans(x, len(SIZES), n_iters=20, init="kmeans++", seed=0, backend=backend)
    assert adjusted_rand_score(labels, result.assignment) > 0.99
    assert result.assignment.dtype == np.int64 and result.distance.dtype == np.float32
    # Converged runs stop at the fixed point, where the objective repeats.
    assert len(result.objective) == 20 or result.objective[-1] == result.objective[-2]
    assert result.objective[-1] <= result.objective[0]


def test_hierarchy_recovers_planted_clusters_at_the_upper_level():
    # 30 fine clusters, then 6: the upper level groups the fine centroids by planted cluster.
    x, labels = planted(SIZES, separation=30.0, seed=2)
    algo = HierarchicalKMeans([30, 6], n_resampling_steps=[2, 3], sample_size=[10, 3], n_iters=15)
    levels = algo.fit(x, seed=0)
    top = levels[1].assignment[levels[0].assignment]
    assert adjusted_rand_score(labels, top) > 0.99
    for level in levels:
        assert level.sizes.sum() == len(x)
    assert np.array_equal(np.sort(levels[1].sizes), np.sort(SIZES))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_faiss_and_torch_backends_agree_on_easy_data(metric):
    x, _ = planted([400, 300, 200, 100], dim=8, separation=20.0, seed=3)
    spherical = metric == "cosine"
    if spherical:
        x = _normalized(x + 5.0).astype(np.float32)
    results = [
        kmeans(x, 4, n_iters=10, init="kmeans++", seed=7, spherical=spherical, backend=b)
        for b in (FaissBackend("cpu"), TorchBackend("cpu"))
    ]
    a, b = results
    assert np.array_equal(a.assignment, b.assignment)
    np.testing.assert_allclose(a.centroids, b.centroids, atol=1e-4)
    np.testing.assert_allclose(a.distance, b.distance, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-4)


def test_same_seed_same_clustering_other_seed_other_start():
    x, _ = planted([200, 100, 50, 25], seed=4, separation=3.0)
    one = kmeans(x, 8, n_iters=5, init="random", seed=11)
    two = kmeans(x, 8, n_iters=5, init="random", seed=11)
    assert np.array_equal(one.assignment, two.assignment)
    assert np.array_equal(one.centroids, two.centroids)
    assert not np.array_equal(init_centroids(x, 8, "random", 1), init_centroids(x, 8, "random", 2))
    assert np.array_equal(init_centroids(x, 8, "kmeans++", 5), init_centroids(x, 8, "kmeans++", 5))


def test_random_init_takes_distinct_rows():
    x, _ = planted([50, 50], seed=5)
    init = init_centroids(x, 10, "random", 0)
    rows = [int(np.flatnonzero((x == c).all(1))[0]) for c in init]
    assert len(set(rows)) == 10


def test_training_subsample_is_explicit_and_every_point_is_assigned():
    x, _ = planted([3000, 1000], seed=6)
    result = kmeans(x, 4, n_iters=5, init="random", seed=0, max_points_per_centroid=100)
    assert result.n_train == 400
    assert len(result.assignment) == len(x)
    full = kmeans(x, 4, n_iters=5, init="random", seed=0)
    assert full.n_train == len(x)


def test_resampling_steps_are_recorded_and_keep_k():
    x, _ = planted(SIZES, seed=7)
    algo = HierarchicalKMeans([40, 10, 3], n_resampling_steps=[2, 3, 0], sample_size=[5, 2, 1], n_iters=5)
    levels = algo.fit(x, seed=1)
    assert [lv.k for lv in levels] == [40, 10, 3]
    assert [len(lv.resampling_objective) for lv in levels] == [3, 4, 1]
    assert [len(lv.assignment) for lv in levels] == [len(x), 40, 10]
    assert all(lv.sizes.sum() == len(x) for lv in levels)


def test_resampling_spreads_centroids_over_the_support():
    # One dense blob and four small ones. Plain k-means spends most centroids on the dense blob;
    # resampling (equal samples per cluster) moves them onto the small blobs, i.e. spreads the
    # centroids over the data's support rather than its density (Vo et al. 2024).
    # Over several seeds: one run's count moves by a few with float rounding (k-means is chaotic).
    x, labels = planted([20000, 200, 200, 200, 200], dim=8, separation=25.0, seed=8)
    resampled = HierarchicalKMeans([20], n_resampling_steps=[5], sample_size=[20], n_iters=10)

    def clusters_on_small_blobs(lv):
        return len(np.unique(lv.assignment[labels > 0]))

    seeds = range(5)
    plain = [clusters_on_small_blobs(HierarchicalKMeans([20], n_iters=10).fit(x, seed=s)[0]) for s in seeds]
    spread = [clusters_on_small_blobs(resampled.fit(x, seed=s)[0]) for s in seeds]
    assert max(plain) <= 8
    assert np.median(spread) >= 15 and min(spread) > max(plain)


def test_too_many_clusters_is_a_clear_error():
    x, _ = planted([10, 10], seed=9)
    with pytest.raises(RadioCurationError, match="only 20 points"):
        HierarchicalKMeans([50]).fit(x, seed=0)
    with pytest.raises(RadioCurationError, match="must not increase"):
        HierarchicalKMeans([5, 10])
    with pytest.raises(RadioCurationError, match="n_resampling_steps=None"):
        HierarchicalKMeans([5, 2], n_resampling_steps=None)


def test_imbalance_factor():
    assert imbalance_factor(np.array([5, 5, 5])) == pytest.approx(1.0)
    assert imbalance_factor(np.array([10, 0])) == pytest.approx(2.0)


def _reference_greedy_kmeans_plusplus(x: np.ndarray, k: int, seed: int, trials: int) -> np.ndarray:
    """scikit-learn's ``_kmeans_plusplus`` in float64 with no pruning, drawing as ours does."""
    rng = np.random.default_rng(seed)
    x = x.astype(np.float64)
    centres = [x[int(rng.integers(len(x)))]]
    dist = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        cumulative = np.cumsum(dist)
        candidates = np.minimum(
            np.searchsorted(cumulative, rng.random(trials) * cumulative[-1], "right"), len(x) - 1
        )
        to_cand = ((x[None, :, :] - x[candidates][:, None, :]) ** 2).sum(2)
        potentials = np.minimum(dist[None, :], to_cand).sum(1)
        best = int(np.argmin(potentials))
        centres.append(x[candidates[best]])
        dist = np.minimum(dist, to_cand[best])
    return np.asarray(centres)


@pytest.mark.parametrize("k", [7, 60])
def test_greedy_kmeans_plusplus_is_the_reference_algorithm_with_exact_pruning(k):
    # Pruning by the triangle inequality must not change a single choice.
    x, _ = planted([300, 200, 120, 80, 40, 20, 10], dim=6, separation=6.0, seed=10)
    ours = greedy_kmeans_plusplus(x, k, seed=3)
    reference = _reference_greedy_kmeans_plusplus(x, k, seed=3, trials=n_local_trials(k))
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
    assert n_local_trials(k) == 2 + int(np.log(k))
    plain = greedy_kmeans_plusplus(x, k, seed=3, n_candidates=1)
    np.testing.assert_allclose(
        plain, _reference_greedy_kmeans_plusplus(x, k, 3, trials=1), rtol=1e-5, atol=1e-5
    )


def _potential(x: np.ndarray, centres: np.ndarray) -> float:
    return float(((x[:, None, :] - centres[None, :, :]) ** 2).sum(2).min(1).sum())


def test_greedy_candidates_start_lower_than_plain_kmeans_plusplus():
    # Many small clusters of unequal size: the best of 2 + ln k candidates misses fewer of them.
    x, _ = planted([60] * 10 + [15] * 30, dim=10, separation=8.0, seed=11)
    greedy = np.mean([_potential(x, greedy_kmeans_plusplus(x, 40, seed=s)) for s in range(8)])
    plain = np.mean([_potential(x, greedy_kmeans_plusplus(x, 40, seed=s, n_candidates=1)) for s in range(8)])
    assert greedy < 0.9 * plain


def test_kmeans_plusplus_level_objective_matches_scikit_learn():
    # Greedy k-means++ and Lloyd iterations: the level's objective within 1% of scikit-learn's at equal
    # settings (their own draws; mean over seeds).
    from sklearn.cluster import KMeans

    x, _ = planted([400, 200, 120, 80, 60, 40, 30, 20, 20, 10] * 3, dim=32, separation=7.0, seed=12)
    ours, theirs = [], []
    for seed in range(3):
        ours.append(kmeans(x, 40, n_iters=30, init="kmeans++", seed=seed).distance.sum(dtype=np.float64))
        model = KMeans(
            40, init="k-means++", n_init=1, max_iter=30, tol=0.0, algorithm="lloyd", random_state=seed
        )
        theirs.append(model.fit(x).inertia_)
    assert np.mean(ours) <= 1.01 * np.mean(theirs)


def test_backends_initialise_where_their_data_lives():
    assert FaissBackend("cpu").init_device == "cpu" and TorchBackend("cpu").init_device == "cpu"


class _RecordingTorchBackend(TorchBackend):
    """The torch backend with its k-means++ device named explicitly, counting its fits and assignments."""

    init_device = "cpu:0"

    def __init__(self) -> None:
        super().__init__("cpu")
        self.fits: list[int] = []
        self.assigns = 0

    def fit(self, x, init, n_iters, spherical):
        self.fits.append(len(x))
        return super().fit(x, init, n_iters, spherical)

    def assign(self, x, centroids, spherical):
        self.assigns += 1
        return super().assign(x, centroids, spherical)


def test_torch_backend_runs_kmeans_plusplus_and_every_resampling_step_on_its_device(monkeypatch):
    import radio_curation.curation.kmeans as module

    devices = []
    real = module.greedy_kmeans_plusplus

    def spy(x, k, seed, device="cpu", n_candidates=None):
        devices.append(device)
        return real(x, k, seed, device=device, n_candidates=n_candidates)

    monkeypatch.setattr(module, "greedy_kmeans_plusplus", spy)
    x, labels = planted(SIZES, separation=30.0, seed=3)
    backend = _RecordingTorchBackend()
    levels = HierarchicalKMeans([6, 2], n_resampling_steps=[3, 2], n_iters=5, backend=backend).fit(x, seed=0)
    # Each level: its k-means, then each resampling step's k-means on the sample: all initialised with
    # k-means++ on the backend's device, all fitted and assigned by the backend.
    assert devices == ["cpu:0"] * (1 + 3 + 1 + 2)
    assert len(backend.fits) == 7 and backend.assigns == 7 + 3 + 2
    assert backend.fits[0] == len(x) and all(n < len(x) for n in backend.fits[1:4])
    assert adjusted_rand_score(labels, levels[0].assignment) == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kmeans_plusplus_on_a_cuda_device_picks_the_cpu_rows():
    x, _ = planted(SIZES, separation=30.0, seed=4)
    backend = TorchBackend("cuda")
    assert backend.init_device == "cuda"
    on_gpu = init_centroids(x, 6, "kmeans++", seed=2, backend=backend)
    np.testing.assert_array_equal(
        on_gpu, init_centroids(x, 6, "kmeans++", seed=2, backend=FaissBackend("cpu"))
    )


def test_per_level_settings_follow_n_clusters():
    two = HierarchicalKMeans(
        [50, 10],
        n_resampling_steps=[1, 10, 10],
        sample_size=[1, 7, 6],
        init=["random", "kmeans++", "kmeans++"],
    )
    assert (two.n_resampling_steps, two.sample_size, two.init) == ([1, 10], [1, 7], ["random", "kmeans++"])
    four = HierarchicalKMeans([50, 20, 10, 5], n_resampling_steps=3, init=["random", "kmeans++"])
    assert four.n_resampling_steps == [3] * 4 and four.init == ["random"] + ["kmeans++"] * 3
    # Unset sample sizes are half the level's mean cluster size (rounded, at least 1).
    assert four.sample_size == [None] * 4
    assert [
        four.level_sample_size(1, 1000),
        four.level_sample_size(2, 50),
        four.level_sample_size(4, 10),
    ] == [
        10,
        1,
        1,
    ]
    assert four.level_sample_size(3, 20) == 1 and HierarchicalKMeans([4]).level_sample_size(1, 30) == 4


def test_derived_sample_size_is_what_resampling_takes(monkeypatch):
    import radio_curation.curation.kmeans as module

    taken = []
    real = module.select_per_cluster

    def spy(assignment, key, per_cluster):
        taken.append(per_cluster)
        return real(assignment, key, per_cluster)

    monkeypatch.setattr(module, "select_per_cluster", spy)
    x, _ = planted(SIZES, seed=13)
    HierarchicalKMeans([20, 5], n_resampling_steps=1, n_iters=3).fit(x, seed=0)
    assert taken == [(len(x) + 20) // 40, 2]


def test_select_per_cluster_takes_the_smallest_keys_of_each_cluster():
    rng = np.random.default_rng(14)
    assignment = rng.integers(0, 7, 500)
    per_cluster = rng.integers(0, 90, 7)
    # Float keys, a permutation (its own rank) and tied integer keys (ties go to the lower row).
    for key in (rng.random(500), rng.permutation(500), rng.integers(0, 5, 500)):
        expected = []
        for cluster in range(7):
            members = np.flatnonzero(assignment == cluster)
            ranked = sorted(members, key=lambda row: (key[row], row))
            expected.extend(ranked[: per_cluster[cluster]])
        got = select_per_cluster(assignment, key, per_cluster)
        np.testing.assert_array_equal(got, np.sort(expected))


#: Well separated clusters of very unequal sizes: random rows miss the small ones.
ZIPF_SIZES = [1500, 600, 300, 120, 60, 30, 20, 12, 8]


def test_kmeans_parallel_starts_in_every_planted_cluster_like_kmeanspp_where_random_misses_some():
    x, labels = planted(ZIPF_SIZES, separation=30.0, seed=1)
    k = len(ZIPF_SIZES)

    def clusters_hit(centres: np.ndarray) -> int:
        nearest = ((centres[:, None, :] - x[None]) ** 2).sum(2).argmin(1)
        return len(set(labels[nearest]))

    starts = {m: [init_centroids(x, k, m, s) for s in range(4)] for m in ("kmeans_parallel", "random")}
    assert [clusters_hit(c) for c in starts["kmeans_parallel"]] == [k] * 4
    assert max(clusters_hit(c) for c in starts["random"]) < k
    parallel = np.mean([_potential(x, c) for c in starts["kmeans_parallel"]])
    plusplus = np.mean([_potential(x, init_centroids(x, k, "kmeans++", s)) for s in range(4)])
    assert parallel <= 1.05 * plusplus
    assert parallel < 0.1 * np.mean([_potential(x, c) for c in starts["random"]])


def test_kmeans_parallel_starts_as_low_as_kmeanspp_on_many_unequal_clusters():
    x, _ = planted([60] * 10 + [15] * 30, dim=10, separation=8.0, seed=11)
    parallel = np.mean([_potential(x, init_centroids(x, 40, "kmeans_parallel", s)) for s in range(6)])
    plusplus = np.mean([_potential(x, init_centroids(x, 40, "kmeans++", s)) for s in range(6)])
    assert parallel <= 1.05 * plusplus


def test_kmeans_parallel_is_deterministic_for_a_seed_and_does_not_depend_on_the_search_blocks():
    x, _ = planted(SIZES, separation=3.0, seed=2)
    half = x.astype(np.float16)
    start = init_centroids(half, 30, "kmeans_parallel", 4, FaissBackend("cpu", block_rows=4096))
    assert start.dtype == np.float32 and start.shape == (30, x.shape[1])
    assert len(np.unique(start, axis=0)) == 30
    for backend in (FaissBackend("cpu", threads=1, block_rows=37), FaissBackend("cpu", block_rows=4096)):
        np.testing.assert_array_equal(init_centroids(half, 30, "kmeans_parallel", 4, backend), start)
    assert not np.array_equal(init_centroids(half, 30, "kmeans_parallel", 5), start)


def test_kmeans_parallel_tops_up_with_random_rows_when_its_rounds_draw_fewer_than_k():
    x, _ = planted([100, 100], dim=4, seed=3)
    start = init_centroids(x, 50, "kmeans_parallel", 0, rounds=1, oversampling=0.1)
    assert len(np.unique(start, axis=0)) == 50
    assert all((x == c).all(1).any() for c in start)


def test_weighted_kmeanspp_never_starts_from_a_weightless_point():
    x, _ = planted([300, 300, 300], dim=6, separation=20.0, seed=4)
    weights = np.where(np.arange(len(x)) % 2 == 0, 1.0, 0.0)
    for seed in range(3):
        chosen = greedy_kmeans_plusplus(x, 12, seed=seed, weights=weights)
        rows = [int(np.flatnonzero((x == c).all(1))[0]) for c in chosen]
        assert all(r % 2 == 0 for r in rows)
