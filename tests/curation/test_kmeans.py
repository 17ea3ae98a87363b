"""k-means, its backends and hierarchical k-means with resampling, on planted clusters."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from radio_curation.curation.backends import FaissBackend, TorchBackend
from radio_curation.curation.kmeans import HierarchicalKMeans, imbalance_factor, init_centroids, kmeans
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
    x, labels = planted([20000, 200, 200, 200, 200], dim=8, separation=25.0, seed=8)
    plain = HierarchicalKMeans([20], n_iters=10).fit(x, seed=3)[0]
    resampled = HierarchicalKMeans([20], n_resampling_steps=[5], sample_size=[20], n_iters=10)
    level = resampled.fit(x, seed=3)[0]

    def clusters_on_small_blobs(lv):
        return len(np.unique(lv.assignment[labels > 0]))

    assert clusters_on_small_blobs(plain) <= 8
    assert clusters_on_small_blobs(level) >= 15


def test_too_many_clusters_is_a_clear_error():
    x, _ = planted([10, 10], seed=9)
    with pytest.raises(RadioCurationError, match="only 20 points"):
        HierarchicalKMeans([50]).fit(x, seed=0)
    with pytest.raises(RadioCurationError, match="must not increase"):
        HierarchicalKMeans([5, 10])
    with pytest.raises(RadioCurationError, match="sample_size has 1 entries"):
        HierarchicalKMeans([5, 2], sample_size=[2])
    with pytest.raises(RadioCurationError, match="metric"):
        HierarchicalKMeans([5], metric="manhattan")


def test_imbalance_factor():
    assert imbalance_factor(np.array([5, 5, 5])) == pytest.approx(1.0)
    assert imbalance_factor(np.array([10, 0])) == pytest.approx(2.0)
