"""UMAP maps (fit on a sample, transform the rest) and the PNG plots."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.maps import umap_embedding
from radio_curation.evaluation.plots import (
    bar_plot,
    confusion_plot,
    histogram_plot,
    image_grid,
    map_plot,
    spectrum_plot,
)
from radio_curation.features.matrix import FeatureArray


def test_umap_fits_a_sample_and_transforms_the_rest(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 150)
    x = rng.normal(size=(300, 8)).astype(np.float32) + 8.0 * labels[:, None] * np.eye(8)[0]
    coords, info = umap_embedding(
        FeatureArray(x),
        n_neighbors=15,
        fit_sample=200,
        transform_chunk=40,
        metric="euclidean",
        backend="umap",
    )
    assert coords.shape == (300, 2) and coords.dtype == np.float32
    assert np.isfinite(coords).all()
    assert info == {"backend": "umap", "n_fit": 200, "n_neighbors": 15}
    # The two well-separated groups stay apart in the map, transformed points included.
    centre = [coords[labels == c].mean(axis=0) for c in (0, 1)]
    spread = max(np.linalg.norm(coords[labels == c] - centre[c], axis=1).mean() for c in (0, 1))
    assert np.linalg.norm(centre[0] - centre[1]) > 2 * spread
    path = map_plot(coords, labels.astype(str), tmp_path / "umap.png", "map", dpi=50)
    highlighted = map_plot(coords, rng.random(300), tmp_path / "h.png", "h", dpi=50, highlight=labels == 1)
    assert imread(path).shape[0] > 50 and imread(highlighted).shape[0] > 50


def test_umap_rejects_unknown_backend_and_tiny_sets():
    with pytest.raises(RadioCurationError, match=r"eval\.backend"):
        umap_embedding(FeatureArray(np.zeros((10, 2))), backend="tsne")
    with pytest.raises(RadioCurationError, match="at least 3"):
        umap_embedding(FeatureArray(np.zeros((2, 2))))


def _pixels_of(path, rgb, tol: float = 0.02) -> int:
    """How many pixels of a PNG have the colour ``rgb`` (floats in [0, 1])."""
    image = imread(path)[..., :3]
    return int((np.abs(image - np.asarray(rgb)[:3]).max(axis=-1) < tol).sum())


def test_plots_draw_their_data(tmp_path):
    from matplotlib import colormaps
    from matplotlib.colors import to_rgb

    rng = np.random.default_rng(0)
    blue, orange = to_rgb("tab:blue"), to_rgb("tab:orange")
    # Confusion cells are shaded by the row-normalised rate: 5/6, 1/6 in the first row, 2/9, 7/9 in the next.
    path = confusion_plot(np.array([[5, 1], [2, 7]]), ["FRI", "FRII"], tmp_path / "c.png", "confusion")
    for rate in (5 / 6, 1 / 6, 2 / 9, 7 / 9):
        assert _pixels_of(path, colormaps["Blues"](rate), tol=0.01) > 500
    # Two spectra, two curves in the first two colours of the cycle.
    path = spectrum_plot(
        {"a": np.array([4.0, 2.0, 1.0, 0.0]), "b": np.ones(3)}, tmp_path / "s.png", "spectrum"
    )
    assert _pixels_of(path, blue) > 100 and _pixels_of(path, orange) > 100
    # Half-transparent histograms on white, and where they overlap.
    path = histogram_plot({"a": rng.random(50), "b": rng.random(40)}, tmp_path / "h.png", "h", "d")
    on_white = [0.5 * np.asarray(c) + 0.5 for c in (blue, orange)]
    assert all(_pixels_of(path, c) > 500 for c in on_white)
    # One bar per set and category: pool (l1, l2) twice the area of sub (l1, half as tall).
    path = bar_plot({"pool": {"l1": 1.0, "l2": 1.0}, "sub": {"l1": 0.5}}, tmp_path / "b.png", "b", "y")
    pool_area, sub_area = _pixels_of(path, blue), _pixels_of(path, orange)
    assert pool_area == pytest.approx(4 * sub_area, rel=0.1)
    # On a log axis a share of 0.001 next to one of 0.99 is a bar a quarter as tall (one decade of four
    # above the axis' foot at 1e-4), not an invisible one.
    shares = {"pool": {"common": 0.99}, "sub": {"rare": 0.001}}
    for log, low, high in ((False, 0.0, 0.02), (True, 0.15, 0.4)):  # (the legend has one patch of each)
        path = bar_plot(shares, tmp_path / f"log_{log}.png", "b", "y", log=log)
        assert low <= _pixels_of(path, orange) / _pixels_of(path, blue) <= high
    # Each image in its own asinh stretch: the brightest pixel of every image reaches the top colour.
    path = image_grid(
        [("q", [np.eye(16)] * 3), ("r", [np.eye(8), np.zeros((16, 16))])], tmp_path / "g.png", "g", dpi=50
    )
    assert _pixels_of(path, colormaps["inferno"](1.0), tol=0.05) > 4 * 10
