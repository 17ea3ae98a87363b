"""Samplers: water-filling, balanced, random, semdedup, prototypicality, composition."""

from __future__ import annotations

import numpy as np
import pytest

from radio_curation.curation.clusters import Hierarchy
from radio_curation.curation.kmeans import HierarchicalKMeans
from radio_curation.curation.samplers import (
    BalancedSampler,
    ClusteredPool,
    Compose,
    PrototypicalitySampler,
    RandomSampler,
    SemDedupSampler,
    duplicate_groups,
    keep_one_per_group,
    priority_dedup,
    share_of_largest,
    water_fill,
)
from radio_curation.errors import RadioCurationError
from tests.curation.planted import planted

# Two common planted clusters and four rare ones.
SIZES = [4000, 2500, 120, 100, 80, 60]


@pytest.fixture(scope="module")
def clustered():
    x, labels = planted(SIZES, dim=12, separation=20.0, seed=0)
    algo = HierarchicalKMeans([60, 12, 4], n_resampling_steps=[1, 3, 3], sample_size=[10, 3, 2], n_iters=10)
    ids = np.arange(len(x), dtype=np.int64) * 3 + 100
    hierarchy = Hierarchy(ids, algo.fit(x, seed=0))
    return x, labels, hierarchy


def _pool(clustered):
    x, _, hierarchy = clustered
    return ClusteredPool(hierarchy, lambda: x)


def test_water_fill_hits_every_quota_and_never_exceeds_a_size():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n_groups = int(rng.integers(1, 6))
        sizes = rng.integers(0, 40, int(rng.integers(1, 40)))
        groups = rng.integers(0, n_groups, len(sizes))
        totals = np.bincount(groups, weights=sizes, minlength=n_groups).astype(int)
        quota = np.array([rng.integers(0, t + 1) for t in totals])
        take = water_fill(sizes, groups, quota, rng)
        assert np.all(take >= 0) and np.all(take <= sizes)
        assert np.array_equal(np.bincount(groups, weights=take, minlength=n_groups).astype(int), quota)
        for g in range(n_groups):
            capped = (groups == g) & (take < sizes)
            if capped.any():
                # Members not taken whole are filled to one level (±1); nobody whole is above it.
                level = take[capped]
                assert level.max() - level.min() <= 1
                assert np.all(sizes[(groups == g) & ~capped] <= level.max() + 1)


def test_water_fill_caps_the_large_and_takes_the_small_whole():
    take = water_fill(
        np.array([1000, 10, 3, 500]), np.zeros(4, dtype=int), np.array([100]), np.random.default_rng(0)
    )
    assert take.tolist()[1:3] == [10, 3]
    assert sorted(take[[0, 3]].tolist()) == [43, 44]


def test_balanced_gives_exactly_the_target_from_the_pool(clustered):
    pool = _pool(clustered)
    rows, _ = BalancedSampler("r").select(pool, np.arange(pool.n), 900, np.random.default_rng(0))
    assert len(rows) == 900 == len(np.unique(rows))
    assert np.all(np.diff(rows) > 0)
    assert rows.min() >= 0 and rows.max() < pool.n


def test_balanced_raises_the_share_of_rare_clusters_over_random(clustered):
    _, labels, _ = clustered
    pool = _pool(clustered)
    rare = labels >= 2
    balanced = Compose([BalancedSampler("r")])(pool, 600, seed=1)[0]
    uniform = Compose([RandomSampler()])(pool, 600, seed=1)[0]
    assert rare[balanced].mean() > 2 * rare[uniform].mean()
    assert rare[balanced].mean() > 0.3


def test_same_seed_same_subsample(clustered):
    pool = _pool(clustered)
    for sampler in (BalancedSampler("r"), RandomSampler()):
        one = Compose([sampler])(pool, 500, seed=5)[0]
        two = Compose([sampler])(pool, 500, seed=5)[0]
        other = Compose([sampler])(pool, 500, seed=6)[0]
        assert np.array_equal(one, two)
        assert not np.array_equal(one, other)


def test_balanced_closest_takes_the_points_nearest_their_centroid(clustered):
    pool = _pool(clustered)
    _, _, hierarchy = clustered
    rows, _ = BalancedSampler("c").select(pool, np.arange(pool.n), 300, np.random.default_rng(0))
    leaf = hierarchy.levels[0].assignment
    distance = hierarchy.levels[0].distance
    for cluster in np.unique(leaf[rows]):
        chosen = rows[leaf[rows] == cluster]
        others = np.setdiff1d(np.flatnonzero(leaf == cluster), chosen)
        if len(others):
            assert distance[chosen].max() <= distance[others].min()


def test_target_errors(clustered):
    pool = _pool(clustered)
    with pytest.raises(RadioCurationError, match="larger than the"):
        Compose([BalancedSampler()])(pool, pool.n + 1, seed=0)
    with pytest.raises(RadioCurationError, match="needs target_size"):
        Compose([RandomSampler()])(pool, None, seed=0)


def _with_duplicates(seed: int = 0):
    """200 distinct unit vectors plus, for 40 of them, 1-3 near-copies each; returns x and group ids."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((200, 32))
    rows, group = [base], [np.arange(200)]
    for g in range(40):
        copies = int(rng.integers(1, 4))
        rows.append(base[g] + 0.01 * rng.standard_normal((copies, 32)))
        group.append(np.full(copies, g))
    x = np.concatenate(rows)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.concatenate(group)


def test_semdedup_keeps_exactly_one_per_planted_group_whatever_the_row_order():
    x, truth = _with_duplicates()
    clusters = np.zeros(len(x), dtype=int)
    groups = duplicate_groups(x, clusters, threshold=0.95)
    assert len(np.unique(groups)) == 200
    # The found groups are the planted ones.
    for g in range(200):
        assert len(np.unique(groups[truth == g])) == 1
    score = -np.linalg.norm(x - x.mean(0), axis=1)
    ids = np.arange(len(x)) + 1000
    kept_ids = set(ids[keep_one_per_group(groups, score, ids)])
    assert len(kept_ids) == 200 and len({int(truth[i - 1000]) for i in kept_ids}) == 200
    perm = np.random.default_rng(1).permutation(len(x))
    groups_p = duplicate_groups(x[perm], clusters, threshold=0.95)
    assert set(ids[perm][keep_one_per_group(groups_p, score[perm], ids[perm])]) == kept_ids


def _chain():
    """a~b and b~c but not a~c (cosine threshold 0.98)."""
    angle = np.deg2rad([0.0, 9.0, 18.0])
    x = np.stack([np.cos(angle), np.sin(angle), np.zeros(3)], axis=1).astype(np.float32)
    cos = x @ x.T
    assert cos[0, 1] > 0.98 and cos[1, 2] > 0.98 and cos[0, 2] < 0.98
    return x


def test_semdedup_components_join_a_chain_into_one_group():
    assert len(np.unique(duplicate_groups(_chain(), np.zeros(3, dtype=int), threshold=0.98))) == 1


def test_semdedup_priority_rule_on_a_chain():
    x, clusters = _chain(), np.zeros(3, dtype=int)
    # a first: b goes because of a; c only resembles b, which is gone, so c stays.
    assert priority_dedup(x, clusters, 0.98, rank=np.array([0, 1, 2])).tolist() == [True, False, True]
    assert priority_dedup(x, clusters, 0.98, rank=np.array([2, 1, 0])).tolist() == [True, False, True]
    # b first: it removes both ends.
    assert priority_dedup(x, clusters, 0.98, rank=np.array([1, 0, 2])).tolist() == [False, True, False]
    # Other clusters never compare.
    assert priority_dedup(x, np.array([0, 1, 2]), 0.98, rank=np.arange(3)).all()


def test_semdedup_priority_rule_is_the_sequential_greedy_pass():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((600, 3)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    clusters = rng.integers(0, 3, len(x))
    rank = rng.permutation(len(x))
    threshold = 0.97  # dense enough on the 2-sphere for long chains
    expected = np.ones(len(x), dtype=bool)
    for row in np.argsort(rank):
        if expected[row]:
            later = (rank > rank[row]) & (clusters == clusters[row]) & (x @ x[row] > threshold)
            expected[later] = False
    kept = priority_dedup(x, clusters, threshold, rank)
    np.testing.assert_array_equal(kept, expected)
    assert 0.1 < kept.mean() < 0.9


def test_semdedup_sampler_on_a_clustered_pool():
    x, truth = _with_duplicates(2)
    algo = HierarchicalKMeans([8], n_iters=10, metric="cosine")
    hierarchy = Hierarchy(np.arange(len(x), dtype=np.int64), algo.fit(x, seed=0), "cosine")
    pool = ClusteredPool(hierarchy, lambda: x)
    for keep in ("hard", "easy", "random"):
        for rule in ("priority", "components"):
            rows, details = SemDedupSampler(eps=0.05, keep=keep, rule=rule).select(
                pool, np.arange(pool.n), None, np.random.default_rng(0)
            )
            assert len(np.unique(truth[rows])) == len(rows) == 200
            assert details["removed"] == len(x) - 200


def test_prototypicality_keeps_the_hardest_or_easiest(clustered):
    pool = _pool(clustered)
    x, _, hierarchy = clustered
    c = hierarchy.levels[0].centroids[hierarchy.levels[0].assignment]
    cos = 1 - (x * c).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(c, axis=1)
    hard, _ = PrototypicalitySampler("hard").select(pool, np.arange(pool.n), 100, np.random.default_rng(0))
    easy, _ = PrototypicalitySampler("easy", fraction=0.1).select(
        pool, np.arange(pool.n), None, np.random.default_rng(0)
    )
    assert len(hard) == 100 and len(easy) == round(0.1 * pool.n)
    rest = np.setdiff1d(np.arange(pool.n), hard)
    assert cos[hard].min() >= cos[rest].max() - 1e-6
    assert cos[easy].max() <= np.sort(cos)[len(easy)] + 1e-6


def test_dedup_then_balanced_hits_the_target_without_duplicates():
    x, truth = _with_duplicates(3)
    algo = HierarchicalKMeans([10, 3], n_iters=10, metric="cosine")
    hierarchy = Hierarchy(np.arange(len(x), dtype=np.int64), algo.fit(x, seed=0), "cosine")
    pool = ClusteredPool(hierarchy, lambda: x)
    rows, report = Compose({"semdedup": SemDedupSampler(eps=0.05), "balanced": BalancedSampler()})(
        pool, 150, seed=0
    )
    assert len(rows) == 150 == len(np.unique(truth[rows]))
    assert report["semdedup"]["in"] == len(x) and report["semdedup"]["out"] == 200
    assert report["balanced"]["in"] == 200 and report["balanced"]["out"] == 150
    assert 0 < report["balanced"]["leaf_clusters_used"] <= 10
    with pytest.raises(RadioCurationError, match="loosen the samplers before it"):
        Compose({"semdedup": SemDedupSampler(eps=0.05), "balanced": BalancedSampler()})(pool, 220, seed=0)


def test_share_of_largest():
    share = share_of_largest(np.array([80, 10, 5, 5]), np.array([10, 10, 5, 5]), fraction=0.25)
    assert share == {"clusters": 1, "before": 0.8, "after": pytest.approx(10 / 30)}


def test_balanced_on_a_single_level_clustering():
    x, labels = planted([900, 60, 40], dim=8, separation=20.0, seed=4)
    hierarchy = Hierarchy(
        np.arange(len(x), dtype=np.int64), HierarchicalKMeans([3], n_iters=10).fit(x, seed=0)
    )
    rows, _ = Compose([BalancedSampler("c")])(ClusteredPool(hierarchy), 90, seed=0)
    assert len(rows) == 90
    assert sorted(np.bincount(labels[rows]).tolist()) == [30, 30, 30]


def _shell_pool(metric: str) -> tuple[ClusteredPool, np.ndarray]:
    """A dense core of common points and a sparse shell of rare ones in the same directions, 4x farther out
    (what the bootstrap features show: windows of bright extended sources have 2-3x the feature norm of
    empty and compact ones, with no direction of their own)."""
    rng = np.random.default_rng(0)
    common, rare = rng.standard_normal((3000, 8)), rng.standard_normal((60, 8))
    x = np.concatenate([common, 4.0 * rare]).astype(np.float32)
    is_rare = np.arange(len(x)) >= len(common)
    if metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    algo = HierarchicalKMeans(
        [80, 16, 4], n_resampling_steps=[1, 3, 3], sample_size=[10, 3, 2], n_iters=10, metric=metric
    )
    hierarchy = Hierarchy(np.arange(len(x), dtype=np.int64), algo.fit(x, seed=0), metric)
    return ClusteredPool(hierarchy, lambda: x), is_rare


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_balanced_enriches_a_sparse_far_tail_with_l2_clusters_only(metric):
    pool, is_rare = _shell_pool(metric)
    balanced = Compose([BalancedSampler("r")])(pool, 306, seed=0)[0]
    enrichment = is_rare[balanced].mean() / is_rare.mean()
    if metric == "l2":
        # L2 k-means gives the sparse shell its own small clusters, which balanced sampling takes whole.
        assert enrichment > 5
    else:
        # On the unit sphere the shell's points sit among the core's: balancing cannot find them.
        assert enrichment < 2
