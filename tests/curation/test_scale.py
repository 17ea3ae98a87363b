"""What keeps the curation stage's memory and time bounded at scale: samples as indexes, float16 kept as
float16, an initialisation chosen by k, fixed-size update blocks, a memory check before the work."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import radio_curation.curation.samplers as samplers
from radio_curation.curation.backends import FaissBackend, RowView, TorchBackend
from radio_curation.curation.clusters import Hierarchy
from radio_curation.curation.conditioning import FeatureConditioning, normalize_rows
from radio_curation.curation.kmeans import HierarchicalKMeans, init_centroids, kmeans
from radio_curation.curation.samplers import (
    ClusteredPool,
    SemDedupSampler,
    near_duplicate_pairs,
    priority_dedup,
    split_clusters,
)
from radio_curation.errors import RadioCurationError
from radio_curation.runs.manifest import read_manifest
from radio_curation.suppression import greedy_keep
from radio_curation.tasks import curate
from tests.curation.planted import planted

SIZES = [900, 400, 200, 100]


class _Recording(FaissBackend):
    """The faiss backend, remembering the matrices it was asked to train on."""

    def __init__(self) -> None:
        super().__init__("cpu", threads=1)
        self.trained_on: list = []

    def fit(self, x, init, n_iters, spherical):
        self.trained_on.append(x)
        return super().fit(x, init, n_iters, spherical)


def test_training_and_resampling_samples_are_indexes_into_the_points():
    x, _ = planted(SIZES, dim=8, seed=1)
    backend = _Recording()
    algo = HierarchicalKMeans(
        n_clusters=[8], n_resampling_steps=2, sample_size=50, n_iters=5, max_points_per_centroid=100,
        init="random", backend=backend,
    )  # fmt: skip
    algo.fit(x, seed=3)
    assert len(backend.trained_on) == 3
    for sample in backend.trained_on:
        assert isinstance(sample, RowView) and sample.base is x
    first = backend.trained_on[0]
    assert first.shape == (800, 8) and np.all(np.diff(first.rows) > 0)
    # The same clustering as training on a copy of those rows.
    copied = kmeans(x[first.rows], 8, n_iters=5, init="random", seed=0)
    viewed = kmeans(RowView(x, first.rows), 8, n_iters=5, init="random", seed=0)
    np.testing.assert_array_equal(copied.centroids, viewed.centroids)


@pytest.mark.parametrize("backend", [FaissBackend("cpu"), TorchBackend("cpu")], ids=["faiss", "torch"])
def test_float16_points_cluster_like_their_float32_values(backend):
    x, _ = planted(SIZES, dim=16, separation=20.0, seed=2)
    half = normalize_rows(x.astype(np.float16))
    as_float32 = half.astype(np.float32)
    a = kmeans(half, 4, n_iters=10, init="kmeans++", seed=5, spherical=True, backend=backend)
    b = kmeans(as_float32, 4, n_iters=10, init="kmeans++", seed=5, spherical=True, backend=backend)
    np.testing.assert_array_equal(a.assignment, b.assignment)
    np.testing.assert_allclose(a.centroids, b.centroids, atol=1e-6)


def test_inplace_conditioning_keeps_float16_and_matches_float32():
    x, _ = planted(SIZES, dim=16, seed=3)
    half = x.astype(np.float16)
    for conditioning in (FeatureConditioning(), FeatureConditioning(whiten_dim=4)):
        fit = conditioning.fit(half)
        expected = fit.transform(half.astype(np.float32))
        out = fit.transform(half.copy(), inplace=True)
        assert out.dtype == np.float16 and expected.dtype == np.float32
        np.testing.assert_allclose(out, expected, atol=2e-3)


def test_auto_init_is_kmeanspp_while_its_work_is_small_then_kmeans_parallel_then_random():
    # Work: training points x k for k-means++; rounds x oversampling x k^2 (5 k^2) for k-means||.
    algo = HierarchicalKMeans(n_clusters=[100, 40, 4], init="auto", kmeanspp_max_work=100_000)
    assert [algo.level_init(level, 900) for level in (1, 2, 3)] == ["kmeans++"] * 3
    # 10,000 points x 100 = 1e6 > 1e5 >= 5 x 100^2: k-means||; level 2: 100 x 40 = 4000.
    assert [algo.level_init(level, 10_000) for level in (1, 2, 3)] == [
        "kmeans_parallel",
        "kmeans++",
        "kmeans++",
    ]
    # The training sample bounds the points: 100 x 5 = 500 points x 100 clusters = 5e4.
    sampled = HierarchicalKMeans(n_clusters=[100, 4], kmeanspp_max_work=100_000, max_points_per_centroid=5)
    assert sampled.level_init(1, 10_000) == "kmeans++"
    wide = HierarchicalKMeans(n_clusters=[500, 40], init="auto", kmeanspp_max_work=100_000)
    assert [wide.level_init(level, 10_000) for level in (1, 2)] == ["random", "kmeans++"]
    forced = HierarchicalKMeans(n_clusters=[500, 40], init=["kmeans++", "random"], kmeanspp_max_work=10)
    assert [forced.level_init(level, 10_000) for level in (1, 2)] == ["kmeans++", "random"]
    x, _ = planted(SIZES, dim=8, seed=4)
    assert np.array_equal(init_centroids(RowView(x, np.arange(0, 1600, 2)), 5, "random", 1), x[::2][
        np.sort(np.random.default_rng(1).choice(800, size=5, replace=False))
    ])  # fmt: skip


@pytest.mark.parametrize("k", [8, 4000])
def test_the_torch_update_block_does_not_shrink_with_k(monkeypatch, k):
    n = 20000
    x = np.random.default_rng(0).standard_normal((n, 4)).astype(np.float32)
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, k, n))
    calls = []
    original = torch.Tensor.index_add_

    def counting(self, dim, index, source, **kwargs):
        calls.append(len(index))
        return original(self, dim, index, source, **kwargs)

    monkeypatch.setattr(torch.Tensor, "index_add_", counting)
    backend = TorchBackend("cpu")
    new = backend._update(backend._points(x), labels, torch.zeros(n), k, spherical=False)
    assert calls == [n]  # one block of 20000 rows, whatever k (was 2^24 / k rows: 838 at k = 20000)
    expected = np.zeros((k, 4))
    np.add.at(expected, labels.numpy(), x)
    counts = np.bincount(labels.numpy(), minlength=k)[:, None]
    np.testing.assert_allclose(
        new.numpy()[counts[:, 0] > 0], (expected / np.maximum(counts, 1))[counts[:, 0] > 0], rtol=1e-5
    )


def test_clustering_that_cannot_fit_says_so_before_it_starts(compose, features_run):
    x, _ = planted(SIZES, dim=12, seed=5)
    features_id = features_run(x)
    overrides = [f"features_id={features_id}", "target_size=100", "clustering.n_clusters=[20,4]"]
    with pytest.raises(
        RadioCurationError, match=r"needs about .* GB .*features_dtype=float16.*memory_limit_gb"
    ):
        curate.run(compose("curate", [*overrides, "memory_limit_gb=0.0001"]))
    # Level 1: 1600 points x 20 > 10,000 >= 5 x 20^2: k-means||, recorded in the run.
    result = curate.run(compose("curate", [*overrides, "clustering.kmeanspp_max_work=10000"]))
    clusters_dir = Path(result["run_dir"]).parents[1] / "cluster" / result["clusters_id"]
    info = read_manifest(clusters_dir)["info"]
    assert info["init"] == ["kmeans_parallel", "kmeans++"]
    assert 0 < info["memory_estimate_gb"] < 0.01
    sampling = [f"clusters_id={result['clusters_id']}", "sampler=prototypicality", "target_size=100"]
    with pytest.raises(RadioCurationError, match=r"sampling from 1600 x 12 float32 features needs about"):
        curate.run(compose("curate", [*sampling, "memory_limit_gb=0.0001"]))


def _near_duplicates(n: int = 600, dim: int = 16, seed: int = 6) -> np.ndarray:
    """One cluster of unit rows in small groups of near-copies (chains included)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n // 4, dim))
    x = base[rng.integers(0, len(base), n)] + 0.08 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_semdedup_streamed_through_one_large_cluster_in_blocks_equals_the_in_memory_rule():
    x = _near_duplicates()
    rank = np.random.default_rng(1).permutation(len(x))
    clusters = np.zeros(len(x), dtype=np.int64)
    sims = x @ x.T > 0.99
    i, j = np.nonzero(np.triu(sims, k=1))
    first = rank[i] < rank[j]
    expected = greedy_keep(np.where(first, i, j), np.where(first, j, i), len(x))
    assert 100 < (~expected).sum() < len(x) - 100  # the case has near-duplicates, and not only them
    for block_rows in (7, 64, len(x)):
        kept = priority_dedup(RowView(x, np.arange(len(x))), clusters, 0.99, rank, block_rows=block_rows)
        np.testing.assert_array_equal(kept, expected)


@pytest.mark.parametrize("rule", ["priority", "components"])
def test_semdedup_holds_one_float32_copy_of_a_cluster_not_its_stored_rows_and_temporaries(monkeypatch, rule):
    # One cluster of 2048 float16 rows of 2048 dimensions: its float32 unit rows are 16 MiB. Gathering the
    # stored rows whole, then converting and normalising them, held twice that at once. Similarity blocks
    # and gathers of 16 and 128 rows (0.2 and 2.5 MiB), so that the copies show.
    m, dim = 2048, 2048
    monkeypatch.setattr(samplers, "SIMILARITY_BLOCK", 16 * m)
    monkeypatch.setattr(samplers, "GATHER_ROWS", 128)
    x = np.random.default_rng(0).standard_normal((m, dim)).astype(np.float16)
    clusters = np.zeros(m, dtype=np.int64)
    float32_bytes = m * dim * 4
    tracemalloc.start()
    try:
        if rule == "priority":
            priority_dedup(RowView(x, np.arange(m)), clusters, 0.9, np.arange(m))
        else:
            list(near_duplicate_pairs(RowView(x, np.arange(m)), clusters, 0.9))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert float32_bytes < peak < 1.5 * float32_bytes


def test_clusters_above_the_size_cap_are_split_contiguously_in_key_order():
    clusters = np.array([0] * 7 + [1] * 2 + [2] * 4)
    key = np.array([0.7, 0.1, 0.6, 0.2, 0.5, 0.3, 0.4, 0.9, 0.8, 0.4, 0.3, 0.2, 0.1])
    split = split_clusters(clusters, key, max_size=3)
    sizes = np.bincount(split)
    assert sizes.max() <= 3 and len(sizes) == 6
    for label in np.unique(split):  # each piece lies within one cluster, contiguous in key
        members = np.flatnonzero(split == label)
        assert len(set(clusters[members])) == 1
        others = np.flatnonzero((clusters == clusters[members[0]]) & (split != label))
        assert not np.any((key[others] > key[members].min()) & (key[others] < key[members].max()))
    np.testing.assert_array_equal(split_clusters(clusters, key, None), clusters)


def test_semdedup_with_a_size_cap_still_finds_exact_duplicates():
    x, _ = planted([400, 300], dim=32, separation=3.0, seed=7)
    x = np.repeat(x, 2, axis=0) + 1e-4  # every row twice: exact duplicates, found within any piece
    hierarchy = Hierarchy(
        np.arange(len(x), dtype=np.int64),
        HierarchicalKMeans(n_clusters=[2], n_iters=5, metric="cosine").fit(normalize_rows(x.copy()), seed=0),
        "cosine",
    )
    pool = ClusteredPool(hierarchy, lambda: x)
    whole, _ = SemDedupSampler(eps=1e-3).select(pool, np.arange(len(x)), None, np.random.default_rng(0))
    capped, _ = SemDedupSampler(eps=1e-3, max_cluster_size=50).select(
        pool, np.arange(len(x)), None, np.random.default_rng(0)
    )
    assert len(whole) == len(x) // 2
    assert len(capped) == len(x) // 2


@pytest.mark.parametrize("probe", ["knn", "linear_probe"])
def test_probes_of_a_features_run_sample_a_bounded_number_of_windows_by_default(compose, probe):
    assert compose("evaluate", [f"eval={probe}"]).eval.max_images == 50000


@pytest.mark.parametrize("sampler", ["dedup_then_balanced", "prototypicality"])
def test_a_float16_features_run_is_clustered_and_sampled_from_float16(compose, features_run, sampler):
    x, _ = planted(SIZES, dim=12, separation=20.0, seed=8)
    x = np.concatenate([x, x[:200]])  # 200 exact duplicates for semdedup
    ids = np.arange(len(x), dtype=np.int64)
    half = features_run(x.astype(np.float16), ids)
    overrides = ["target_size=300", "clustering.n_clusters=[12,3]", f"sampler={sampler}"]
    overrides += ["sampler.semdedup.eps=1e-4"] if sampler == "dedup_then_balanced" else []
    result = curate.run(compose("curate", [f"features_id={half}", *overrides]))
    report = result["info"]["samplers"]
    assert result["counts"]["selected"] == 300
    if sampler == "dedup_then_balanced":
        assert report["semdedup"]["in"] - report["semdedup"]["out"] >= 200
