"""RankMe/effective rank of constructed spectra; alignment and uniformity limits."""

from __future__ import annotations

import numpy as np
import pytest

from radio_curation.evaluation.representation import (
    GramAccumulator,
    accumulate,
    alignment,
    dims_for_variance,
    entropy_rank,
    frechet_distance,
    spectrum_metrics,
    uniformity,
)


def _rank_k(n: int, dim: int, k: int, seed: int = 0, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, k)))[0].T  # k orthonormal directions
    return rng.normal(size=(n, k)) @ basis + offset


@pytest.mark.parametrize("k", [1, 5, 12])
def test_rankme_of_rank_k_data_is_about_k(k):
    x = _rank_k(4000, 32, k)
    acc = accumulate((x[i : i + 1000] for i in range(0, 4000, 1000)), 32)
    metrics, spectrum = spectrum_metrics(acc)
    assert metrics["rankme"] == pytest.approx(k, rel=0.06)
    assert metrics["effective_rank"] == pytest.approx(k, rel=0.06)
    assert metrics["n_rows"] == 4000
    assert (spectrum[k:] < 1e-6 * spectrum[0]).all()


def test_entropy_rank_of_equal_singular_values_is_exact():
    assert entropy_rank(np.array([2.0, 2.0, 2.0, 0.0])) == pytest.approx(3.0, rel=1e-5)


def test_effective_rank_ignores_a_common_offset():
    x = _rank_k(4000, 32, 6, offset=50.0)
    metrics, _ = spectrum_metrics(accumulate([x], 32))
    assert metrics["rankme"] < 3  # dominated by the mean direction
    assert metrics["effective_rank"] == pytest.approx(6, rel=0.06)


def test_chunked_gram_equals_direct_svd():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 10)) * np.arange(1, 11)
    acc = GramAccumulator(10)
    for i in range(0, 500, 77):
        acc.add(x[i : i + 77])
    direct = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(acc.singular_values(centred=True), direct, rtol=1e-8)
    np.testing.assert_allclose(
        acc.singular_values(centred=False), np.linalg.svd(x, compute_uv=False), rtol=1e-8
    )


def test_dims_for_variance():
    assert dims_for_variance(np.array([3.0, 1.0, 0.0]), 0.9) == 1  # 9/10 of the variance in one
    assert dims_for_variance(np.array([3.0, 1.0, 0.0]), 0.95) == 2


def test_alignment_and_uniformity_limits():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    assert alignment(x, 3.0 * x) == pytest.approx(0.0, abs=1e-10)
    assert alignment(x, -x) == pytest.approx(4.0)
    collapsed = np.ones((100, 8))
    assert uniformity(collapsed) == pytest.approx(0.0, abs=1e-12)
    assert uniformity(x) < -1.0
    # Known values: antipodal points are 2 apart (log e^(-2·4) = -8); orthonormal ones √2 apart (-4).
    assert uniformity(np.array([[3.0, 0.0], [-0.5, 0.0]])) == pytest.approx(-8.0)
    assert uniformity(5.0 * np.eye(6)) == pytest.approx(-4.0)
    # Orthogonal pairs are √2 apart: alignment (‖x̂ − ŷ‖²) is 2.
    assert alignment(np.eye(4), np.roll(np.eye(4), 1, axis=1)) == pytest.approx(2.0)


def test_frechet_distance_of_known_gaussians():
    dim = 6
    eye = np.eye(dim)
    assert frechet_distance(np.zeros(dim), eye, np.zeros(dim), eye) == pytest.approx(0.0, abs=1e-10)
    # C1 = I, C2 = 4 I: Tr(I + 4I - 2·2I) = dim; a mean shift m adds |m|².
    shift = np.arange(dim, dtype=np.float64)
    assert frechet_distance(np.zeros(dim), eye, shift, 4 * eye) == pytest.approx(dim + shift @ shift)
    # Rank-deficient (collapsed) covariances are fine: one direction each, orthogonal.
    a, b = np.diag([1.0, 0, 0, 0, 0, 0]), np.diag([0, 9.0, 0, 0, 0, 0])
    assert frechet_distance(np.zeros(dim), a, np.zeros(dim), b) == pytest.approx(10.0)


def test_accumulated_mean_and_covariance_match_numpy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4)) + 3.0
    mean, cov = accumulate([x[:100], x[100:]], 4).mean_covariance()
    np.testing.assert_allclose(mean, x.mean(axis=0))
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-8)
