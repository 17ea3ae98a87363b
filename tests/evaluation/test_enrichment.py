"""Rare-class enrichment of a balanced subsample, on a hand-made hierarchy whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from radio_curation.curation.clusters import Hierarchy
from radio_curation.curation.kmeans import ClusterLevel
from radio_curation.curation.samplers import BalancedSampler, ClusteredPool
from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.enrichment import enrichment, rare_classes


def _level(assignment: np.ndarray, k: int, sizes: np.ndarray) -> ClusterLevel:
    n = len(assignment)
    return ClusterLevel(
        centroids=np.zeros((k, 2), np.float32),
        assignment=assignment.astype(np.int64),
        distance=np.zeros(n, np.float32),
        sizes=sizes.astype(np.int64),
        objective=np.zeros(1),
        resampling_objective=np.zeros(1),
        n_train=n,
        search_seconds=0.0,
    )


@pytest.fixture
def hand_made():
    """1,000 windows: a common top cluster (600 empty + 384 compact in four pure leaves) and a rare one
    (8 wat + 8 halo in two leaves)."""
    leaf_sizes = np.array([300, 300, 192, 192, 8, 8])
    leaf = np.repeat(np.arange(6), leaf_sizes)
    labels = np.repeat(np.array(["empty", "empty", "compact", "compact", "wat", "halo"]), leaf_sizes)
    top_of_leaf = np.array([0, 0, 0, 0, 1, 1])
    levels = [
        _level(leaf, 6, leaf_sizes),
        _level(top_of_leaf, 2, np.array([984, 16])),
    ]
    return Hierarchy(np.arange(1000, dtype=np.int64), levels), labels


def test_balanced_sampling_of_a_hand_made_hierarchy_gives_the_known_enrichment(hand_made):
    hierarchy, labels = hand_made
    assert rare_classes(labels) == ["halo", "wat"]  # 0.8 % each; empty never counts as rare
    rows, _ = BalancedSampler("r").select(
        ClusteredPool(hierarchy), np.arange(1000), 32, np.random.default_rng(0)
    )
    # Water-filling: 16 per top cluster; the rare one gives all 16, the common one 4 per leaf.
    assert sorted(np.unique(labels[rows], return_counts=True)[1].tolist()) == [8, 8, 8, 8]
    # A random subsample of 32 with the pool's shares, rounded: 1 rare, 19 empty, 12 compact.
    random = np.concatenate([np.arange(19), np.arange(600, 612), [984]])
    result = enrichment(labels, rows, random)
    assert result.rare == ("halo", "wat")
    assert result.rare_subsample == pytest.approx(16 / 32)
    assert result.rare_random == pytest.approx(1 / 32)
    assert result.ratio == pytest.approx(16.0)
    assert result.empty_subsample == pytest.approx(8 / 32)
    assert result.empty_ratio == pytest.approx((8 / 32) / (19 / 32))
    assert result.metrics()["enrichment/ratio"] == pytest.approx(16.0)
    # Against the pool's shares (a random subsample's expectation): 16 of 1,000 rare, 600 empty.
    assert result.rare_pool == pytest.approx(0.016)
    assert result.ratio_pool == pytest.approx(0.5 / 0.016)
    assert result.empty_pool == pytest.approx(0.6)


def test_enrichment_edge_cases(hand_made):
    _, labels = hand_made
    no_rare = np.arange(10)  # all empty
    assert enrichment(labels, [984, 985], no_rare).ratio == float("inf")
    assert np.isnan(enrichment(labels, no_rare, no_rare).ratio)
    assert enrichment(labels, [984], [0], rare=["compact"]).rare_subsample == 0.0
    with pytest.raises(RadioCurationError, match="non-empty"):
        enrichment(labels, [], no_rare)
