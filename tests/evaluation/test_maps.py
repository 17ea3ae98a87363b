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
from radio_curation.evaluation.similarity import ArrayFeatures


def test_umap_fits_a_sample_and_transforms_the_rest(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 150)
    x = rng.normal(size=(300, 8)).astype(np.float32) + 8.0 * labels[:, None] * np.eye(8)[0]
    coords, info = umap_embedding(
        ArrayFeatures(x),
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
        umap_embedding(ArrayFeatures(np.zeros((10, 2))), backend="tsne")
    with pytest.raises(RadioCurationError, match="at least 3"):
        umap_embedding(ArrayFeatures(np.zeros((2, 2))))


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    written = [
        confusion_plot(np.array([[5, 1], [2, 7]]), ["FRI", "FRII"], tmp_path / "c.png", "confusion"),
        spectrum_plot({"a": np.array([4.0, 2.0, 1.0, 0.0]), "b": np.ones(3)}, tmp_path / "s.png", "spectrum"),
        histogram_plot({"a": rng.random(50), "b": rng.random(40)}, tmp_path / "h.png", "h", "d"),
        bar_plot({"pool": {"l1": 1.0, "l2": 1.0}, "sub": {"l1": 0.5}}, tmp_path / "b.png", "b", "y"),
        image_grid(
            [("q", list(rng.random((3, 1, 16, 16)))), ("r", [rng.random((8, 8)), rng.random((16, 16))])],
            tmp_path / "g.png",
            "g",
        ),
    ]
    for path in written:
        assert path.is_file()
        assert imread(path).ndim == 3
