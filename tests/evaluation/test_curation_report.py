"""Curation report figures on a constructed pool whose answers are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from radio_curation.evaluation.curation_report import (
    balance,
    cluster_paths,
    curation_figures,
    redundancy,
    top_level_exemplars,
)
from radio_curation.evaluation.html import Section, Table, render_html
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
    figures = curation_figures(FEATURES, SETS, paths=PATHS, labels=LABELS, duplicate_threshold=0.95)
    assert figures.sizes == {"pool": 8, "subsample": 4, "random": 4}
    assert figures.coverage == {"pool": [1.0, 1.0], "subsample": [1.0, 1.0], "random": [0.5, 0.5]}
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
