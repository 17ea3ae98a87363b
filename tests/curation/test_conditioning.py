"""Feature conditioning: centring, PCA whitening, L2 normalisation, and what it does for k-means."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from radio_curation.curation.conditioning import ConditioningFit, FeatureConditioning
from radio_curation.curation.kmeans import kmeans
from radio_curation.errors import RadioCurationError
from radio_curation.features.matrix import FeatureArray


def _correlated(n: int = 4000, dim: int = 12, seed: int = 0) -> np.ndarray:
    """Gaussian features with a large common offset and very unequal, correlated directions."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) * np.logspace(0, 2, dim)[None, :]
    return (rng.standard_normal((n, dim)) @ mixing.T + 50.0).astype(np.float32)


def test_center_l2_gives_unit_rows_in_the_direction_of_the_centred_features():
    x = _correlated()
    fit = FeatureConditioning(center=True, normalize=True).fit(x)
    y = fit.transform(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)
    centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
    np.testing.assert_allclose(y, centred / np.linalg.norm(centred, axis=1, keepdims=True), atol=1e-5)
    # Without normalisation the output is exactly centred (the common offset of 50 is gone).
    plain = FeatureConditioning(center=True, normalize=False).fit(x).transform(x)
    np.testing.assert_allclose(plain.mean(0), 0.0, atol=1e-3 * np.abs(x).mean())


def test_pca_whitening_gives_identity_covariance_in_the_kept_directions():
    x = _correlated(dim=12)
    fit = FeatureConditioning(center=True, whiten_dim=5, normalize=False, eps=0.0).fit(x)
    y = fit.transform(x)
    assert y.shape == (len(x), 5) and fit.out_dim(12) == 5
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(5), atol=1e-3)
    # The kept directions are the top principal axes: their share of the variance is the top 5 eigenvalues'.
    eig = np.sort(np.linalg.eigvalsh(np.cov(x.astype(np.float64), rowvar=False)))[::-1]
    assert fit.explained_variance == pytest.approx(eig[:5].sum() / eig.sum(), rel=1e-6)
    # Whitened then normalised: unit rows pointing where the whitened rows point.
    unit = FeatureConditioning(center=True, whiten_dim=5, normalize=True, eps=0.0).fit(x).transform(x)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(unit, y / np.linalg.norm(y, axis=1, keepdims=True), atol=1e-5)


def test_in_place_transform_and_conditioned_source_agree():
    x = _correlated(n=1000)
    fit = FeatureConditioning(center=True, normalize=True).fit(x)
    expected = fit.transform(x)
    source = FeatureArray(x.copy())
    chunks = np.concatenate([c for _, c in fit.source(source).iter_chunks(300)])
    np.testing.assert_array_equal(chunks, expected)
    np.testing.assert_array_equal(source.features, x)  # the source is read, not changed
    np.testing.assert_array_equal(fit.source(source).read(np.array([3, 999])), expected[[3, 999]])
    copy = x.copy()
    assert fit.transform(copy, inplace=True) is copy
    np.testing.assert_array_equal(copy, expected)


def test_fit_round_trips_through_hdf5(tmp_path):
    import h5py

    x = _correlated(n=500)
    fit = FeatureConditioning(center=True, whiten_dim=4).fit(x)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        fit.save(f.create_group("conditioning"))
    with h5py.File(tmp_path / "c.h5", "r") as f:
        back = ConditioningFit.load(f["conditioning"])
    np.testing.assert_array_equal(back.transform(x), fit.transform(x))
    assert back.explained_variance == fit.explained_variance
    identity = FeatureConditioning(center=False, normalize=False).fit(x)
    assert identity.is_identity and identity.transform(x) is x


def _nuisance_dominated(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four tight clusters at the corners of a unit square in two low-variance directions, plus one broad
    unimodal nuisance direction (std 10, like overall brightness) and a large common offset."""
    rng = np.random.default_rng(seed)
    n, dim = 4000, 10
    labels = rng.integers(0, 4, n)
    x = rng.standard_normal((n, dim)) * 0.7
    x[:, 0] = np.where(labels % 2, 1.0, -1.0) + 0.25 * rng.standard_normal(n)
    x[:, 1] = np.where(labels // 2, 1.0, -1.0) + 0.25 * rng.standard_normal(n)
    x[:, 2] = 10.0 * rng.standard_normal(n)
    x += 30.0
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    return (x @ rotation).astype(np.float32), labels


def test_spherical_kmeans_on_whitened_features_recovers_clusters_raw_l2_kmeans_merges():
    x, labels = _nuisance_dominated()
    raw = kmeans(x, 4, n_iters=30, init="kmeans++", seed=0)
    # Raw L2 k-means cuts along the broad nuisance direction and merges the planted clusters.
    assert adjusted_rand_score(labels, raw.assignment) < 0.2
    fit = FeatureConditioning(center=True, whiten_dim=10, normalize=True).fit(x)
    conditioned = kmeans(fit.transform(x), 4, n_iters=30, init="kmeans++", seed=0, spherical=True)
    assert adjusted_rand_score(labels, conditioned.assignment) > 0.95


def test_bad_settings_are_clear_errors():
    with pytest.raises(RadioCurationError, match="center=true"):
        FeatureConditioning(center=False, whiten_dim=4)
    with pytest.raises(RadioCurationError, match="whiten_dim=0"):
        FeatureConditioning(whiten_dim=0)
    x = _correlated(n=50, dim=6)
    with pytest.raises(RadioCurationError, match="at most 6 directions"):
        FeatureConditioning(whiten_dim=7).fit(x)
    with pytest.raises(RadioCurationError, match="fewer than"):
        FeatureConditioning(whiten_dim=2, eps=0.0).fit(np.ones((20, 3), dtype=np.float32))
