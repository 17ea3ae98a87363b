"""Curation report figures on a constructed pool whose answers are computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radio_curation.evaluation.curation_report import (
    balance,
    cluster_paths,
    curation_figures,
    redundancy,
    sample_mean_se,
    top_level_exemplars,
)
from radio_curation.evaluation.html import Section, Table, render_html
from radio_curation.evaluation.similarity import l2_normalise
from radio_curation.features.matrix import FeatureArray


def _unit(deg: float) -> list[float]:
    return [np.cos(np.radians(deg)), np.sin(np.radians(deg))]


# Eight points, two per level-1 cluster (identical vectors), level-1 clusters {0,1} -> top 0, {2,3} -> top 1.
ANGLES = [0, 0, 60, 60, 90, 90, 180, 180]
FEATURES = FeatureArray(np.array([_unit(a) for a in ANGLES], dtype=np.float32))
PATHS = cluster_paths([np.array([0, 0, 1, 1, 2, 2, 3, 3]), np.array([0, 0, 1, 1])])
LABELS = np.array(["a", "a", "b", "b", "a", "a", "c", "c"])
SETS = {"pool": np.arange(8), "subsample": np.array([0, 2, 4, 6]), "random": np.array([0, 1, 2, 3])}


def test_cluster_paths_compose_levels():
    np.testing.assert_array_equal(PATHS[:, 1], [0, 0, 0, 0, 1, 1, 1, 1])
    deeper = cluster_paths([np.array([2, 0, 1]), np.array([1, 1, 0]), np.array([0, 0])])
    np.testing.assert_array_equal(deeper, [[2, 0, 0], [0, 1, 0], [1, 1, 0]])


def test_report_figures_equal_hand_computed_values():
    figures = curation_figures(
        FEATURES, SETS, paths=PATHS, labels=LABELS, duplicate_threshold=0.95, max_queries=8
    )
    assert figures.sizes == {"pool": 8, "subsample": 4, "random": 4}
    assert figures.coverage == {"pool": [1.0, 1.0], "subsample": [1.0, 1.0], "random": [0.5, 0.5]}
    assert all(type(v) is float for v in figures.metrics().values())  # metrics.json is written as YAML too
    assert figures.balance["subsample"] == pytest.approx(1.0)
    assert figures.balance["random"] == pytest.approx(0.0)
    assert figures.shares["subsample"] == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert figures.shares["random"] == {"a": 0.5, "b": 0.5, "c": 0.0}
    # Subsample at 0°, 60°, 90°, 180°: nearest neighbours at cos 60°, cos 30°, cos 30°, cos 90°.
    expected = (0.5 + 2 * np.cos(np.radians(30)) + 0.0) / 4
    assert figures.redundancy["subsample"]["nn_similarity_mean"] == pytest.approx(expected, abs=1e-6)
    assert figures.redundancy["subsample"]["near_duplicate_rate"] == 0.0
    for name in ("pool", "random"):  # every point has an identical twin
        assert figures.redundancy[name]["nn_similarity_mean"] == pytest.approx(1.0, abs=1e-6)
        assert figures.redundancy[name]["near_duplicate_rate"] == 1.0
    metrics = figures.metrics()
    assert metrics["curation/random/coverage_level_1"] == 0.5
    assert metrics["curation/subsample/share/c"] == 0.25
    assert metrics["curation/pool/n_points"] == 8.0


def test_redundancy_samples_queries_when_the_set_is_large():
    result = redundancy(FEATURES, np.arange(8), 0.95, max_queries=3, rng=np.random.default_rng(0))
    assert result["n_queries"] == 3
    assert result["nn_similarity_mean"] == pytest.approx(1.0, abs=1e-6)


def test_redundancy_standard_errors_match_their_formula():
    # Eight points whose nearest-neighbour similarities are planted: two pairs of twins (1) and two
    # pairs at 60° (0.5), every pair orthogonal to the others.
    axes = np.eye(8, dtype=np.float32)
    tilted = [0.5 * axes[2] + np.sqrt(0.75) * axes[3], 0.5 * axes[4] + np.sqrt(0.75) * axes[5]]
    features = FeatureArray(
        np.stack([axes[0], axes[0], axes[1], axes[1], axes[2], tilted[0], axes[4], tilted[1]])
    )
    n, q = 8, 5
    for seed in range(6):
        result = redundancy(features, np.arange(n), 0.95, max_queries=q, rng=np.random.default_rng(seed))
        assert result["n_queries"] == q
        # The sample's share of twins f follows from its mean (f · 1 + (1 − f) · 0.5); s² = q f (1 − f) / (q − 1)
        # for the 0/1 duplicate flags, a quarter of that for the similarities.
        f = (result["nn_similarity_mean"] - 0.5) / 0.5
        assert result["near_duplicate_rate"] == pytest.approx(f)
        rate_se = np.sqrt((1 - q / n) * f * (1 - f) / (q - 1))
        assert result["near_duplicate_rate_se"] == pytest.approx(rate_se, abs=1e-6)
        assert result["nn_similarity_se"] == pytest.approx(0.5 * rate_se, abs=1e-6)
    exact = redundancy(features, np.arange(n), 0.95, max_queries=n, rng=np.random.default_rng(0))
    assert exact["near_duplicate_rate"] == 0.5
    assert exact["near_duplicate_rate_se"] == 0.0 and exact["nn_similarity_se"] == 0.0


def test_sample_mean_se_is_the_finite_population_formula():
    values = np.array([1.0, 2.0, 4.0, 7.0])
    assert sample_mean_se(values, 10) == pytest.approx(np.sqrt(0.6 * np.var(values, ddof=1) / 4))
    assert sample_mean_se(values, 4) == 0.0


def test_report_metrics_give_each_redundancy_figure_its_standard_error():
    metrics = curation_figures(FEATURES, SETS, duplicate_threshold=0.95, max_queries=3).metrics()
    for name in SETS:
        assert metrics[f"curation/{name}/n_queries"] == 3
        assert metrics[f"curation/{name}/nn_similarity_se"] >= 0.0
        assert metrics[f"curation/{name}/near_duplicate_rate_se"] >= 0.0


def test_default_queries_bound_the_redundancy_error_and_time():
    from omegaconf import OmegaConf

    queries = OmegaConf.load(
        Path(__file__).parents[2] / "configs" / "eval" / "curation_report.yaml"
    ).max_queries
    # A rate's standard error is at most 0.5 / sqrt(queries): a point at most, for ~queries × n products.
    assert 0.5 / np.sqrt(queries) <= 0.01
    assert queries <= 5000


def test_balance_is_normalised_entropy():
    assert balance(np.array([0, 1, 2, 3]), 4) == pytest.approx(1.0)
    assert balance(np.array([0, 0, 1, 1]), 4) == pytest.approx(0.5)


def test_exemplars_are_the_points_closest_to_each_top_centroid():
    centroids = np.array([_unit(0), _unit(180)], dtype=np.float32)
    exemplars = top_level_exemplars(FEATURES, PATHS, centroids, per_cluster=2, chunk=3)
    np.testing.assert_array_equal(exemplars[0], [0, 1])
    np.testing.assert_array_equal(exemplars[1], [6, 7])
    # Cosine distance ignores the centroids' length.
    cosine = top_level_exemplars(FEATURES, PATHS, 5.0 * centroids, per_cluster=3, metric="cosine")
    np.testing.assert_array_equal(cosine[0], [0, 1, 2])
    np.testing.assert_array_equal(cosine[1], [6, 7, 4])


def test_html_page_is_self_contained(tmp_path):
    from matplotlib.figure import Figure

    png = tmp_path / "dot.png"
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    fig.savefig(png)
    page = render_html(
        "Report <1>",
        [Section("Coverage", "text & more", [Table("t", ["set", "value"], [["pool", 0.123456]])], [png])],
    )
    assert "Report &lt;1&gt;" in page and "text &amp; more" in page
    assert "<td>0.1235</td>" in page
    assert "data:image/png;base64," in page
    assert str(png) not in page


def _planted_pool(n: int, dim: int = 16, seed: int = 0):
    """``n`` random unit-ish rows, a three-level hierarchy (64 → 16 → 4 clusters) and 12 classes, two rare."""
    rng = np.random.default_rng(seed)
    features = FeatureArray(rng.standard_normal((n, dim)).astype(np.float32))
    paths = cluster_paths([rng.integers(0, 64, n), np.arange(64) // 4, np.arange(16) // 4])
    weights = np.r_[np.full(10, 0.099), 0.005, 0.005]
    labels = np.array([f"class{i}" for i in range(12)])[rng.choice(12, n, p=weights)]
    centroids = rng.standard_normal((4, dim)).astype(np.float32)
    return features, paths, labels, centroids


def test_report_holds_a_few_bytes_per_row_beyond_its_inputs(monkeypatch):
    import tracemalloc

    from radio_curation.evaluation import blocked, enrichment, similarity

    # Every fixed-size block shrunk, so that 200,000 rows are many blocks, as 10 M rows are at the default
    # sizes: what is left of the peak is what grows with the rows.
    monkeypatch.setattr(similarity, "BLOCK_BYTES", 1 << 16)
    monkeypatch.setattr(similarity, "SIMILARITY_BLOCK", 1 << 14)
    monkeypatch.setattr(blocked, "ROW_BLOCK", 1 << 12)

    def report(n: int) -> int:
        """Peak bytes of new allocations of the report's label, cluster and exemplar figures on ``n`` rows."""
        features, paths, labels, centroids = _planted_pool(n)
        rng = np.random.default_rng(1)
        sets = {"pool": np.arange(n)}
        sets.update({name: np.sort(rng.choice(n, n // 4, replace=False)) for name in ("subsample", "random")})
        tracemalloc.start()
        try:
            curation_figures(
                features, sets, paths=paths, labels=labels, duplicate_threshold=0.95, max_queries=64
            )
            top_level_exemplars(features, paths, centroids, per_cluster=16, chunk=1 << 10)
            rare = enrichment.rare_classes(labels)
            enrichment.enrichment(labels, sets["subsample"], sets["random"], rare)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    report(1000)  # first-call allocations (lazy imports, caches) are not per row
    n = 200_000
    # Uint8 label codes (1 byte a row) and blocks: about 2 bytes a row. Full sorts of the labels, int64
    # codes, column copies and an N-long distance array and lexsort order held about 30.
    assert report(n) / n < 6.0


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_streamed_exemplars_equal_a_full_sort(metric):
    # Five planted clusters of repeated vectors (ties in distance, broken by row), one of them smaller
    # than per_cluster, one top-level cluster empty; blocks of 7 rows cut through the clusters.
    rng = np.random.default_rng(3)
    n, per_cluster = 300, 6
    top = rng.choice([0, 1, 2, 4, 5], n, p=[0.3, 0.3, 0.3, 0.01, 0.09])
    centroids = rng.standard_normal((6, 4)).astype(np.float32)
    x = centroids[top] + rng.integers(0, 3, (n, 1)).astype(np.float32) * rng.standard_normal((n, 4)).astype(
        np.float32
    )
    features = FeatureArray(x)
    paths = cluster_paths([top])
    got = top_level_exemplars(features, paths, centroids, per_cluster, metric=metric, chunk=7)
    mine = l2_normalise(centroids)[top] if metric == "cosine" else centroids[top]
    if metric == "cosine":
        distance = 1.0 - np.einsum("ij,ij->i", l2_normalise(x), mine)
    else:
        distance = np.sqrt(np.einsum("ij,ij->i", mine - x, mine - x))
    order = np.lexsort((distance, top))
    expected = {int(c): order[top[order] == c][:per_cluster] for c in np.unique(top)}
    assert list(got) == list(expected)
    assert min(np.bincount(top)[np.unique(top)]) < per_cluster
    assert any(len(np.unique(distance[top == c])) < (top == c).sum() for c in expected)  # ties planted
    for c in expected:
        np.testing.assert_array_equal(got[c], expected[c])
