"""2-D UMAP maps of feature sets: fit on a sample, transform the rest; cuML on a GPU when present."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np

from radio_curation.errors import RadioCurationError
from radio_curation.features.matrix import FeatureMatrix
from radio_curation.progress import progress

BACKENDS = ("auto", "umap", "cuml")


def _cuml_available() -> bool:
    if importlib.util.find_spec("cuml") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _make_reducer(backend: str, n_neighbors: int, min_dist: float, metric: str, seed: int):
    if backend not in BACKENDS:
        raise RadioCurationError(f"eval.backend={backend!r} is not one of {BACKENDS}")
    if backend == "cuml" or (backend == "auto" and _cuml_available()):
        if not _cuml_available():
            raise RadioCurationError(
                "eval.backend=cuml needs the cuml package and a CUDA GPU; use eval.backend=umap on CPU"
            )
        from cuml.manifold import UMAP as CumlUMAP

        return CumlUMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric=metric, random_state=seed), "cuml"
    with warnings.catch_warnings():
        # umap-learn announces at import that its optional TensorFlow-based ParametricUMAP is unavailable.
        warnings.filterwarnings("ignore", message="Tensorflow not installed", category=ImportWarning)
        import umap

    # n_jobs=1 together with random_state: umap would otherwise warn that the seed forces one thread.
    reducer = umap.UMAP(
        n_neighbors=n_neighbors, min_dist=min_dist, metric=metric, random_state=seed, n_jobs=1
    )
    return reducer, "umap"


def umap_embedding(
    features: FeatureMatrix,
    n_neighbors: int = 50,
    min_dist: float = 0.1,
    metric: str = "cosine",
    fit_sample: int = 50_000,
    transform_chunk: int = 50_000,
    seed: int = 0,
    backend: str = "auto",
) -> tuple[np.ndarray, dict]:
    """2-D UMAP coordinates of every row of ``features``.

    When there are more than ``fit_sample`` rows the map is fitted on a random sample of that size and
    the remaining rows are placed with ``transform``, so millions of windows can be mapped.

    Parameters
    ----------
    features : FeatureMatrix
        The feature matrix (a ``FeatureFile`` or a ``FeatureArray``).
    n_neighbors, min_dist, metric
        UMAP parameters.
    fit_sample : int
        Largest number of rows the map is fitted on.
    transform_chunk : int
        Rows per ``transform`` call for the rows outside the fitting sample.
    seed : int
        Seed of the sample and of UMAP.
    backend : {"auto", "umap", "cuml"}
        ``auto`` uses cuML when it is installed and a GPU is visible.

    Returns
    -------
    coords : np.ndarray
        ``[N, 2]`` float32.
    info : dict
        ``backend``, ``n_fit`` (rows fitted), ``n_neighbors`` (after capping to the fitted rows).
    """
    n = features.n
    if n < 3:
        raise RadioCurationError(f"a UMAP map needs at least 3 feature rows, got {n}")
    rng = np.random.default_rng(seed)
    fit_rows = np.arange(n) if n <= fit_sample else np.sort(rng.choice(n, fit_sample, replace=False))
    n_neighbors = int(min(n_neighbors, len(fit_rows) - 1))
    reducer, used = _make_reducer(backend, n_neighbors, float(min_dist), metric, seed)
    coords = np.empty((n, 2), dtype=np.float32)
    coords[fit_rows] = np.asarray(reducer.fit_transform(features.read(fit_rows)), dtype=np.float32)
    rest = np.setdiff1d(np.arange(n), fit_rows)
    if len(rest):
        with progress(len(rest), "UMAP transform", unit="row") as bar:
            for start in range(0, len(rest), transform_chunk):
                rows = rest[start : start + transform_chunk]
                coords[rows] = np.asarray(reducer.transform(features.read(rows)), dtype=np.float32)
                bar.advance(len(rows))
    return coords, {"backend": used, "n_fit": len(fit_rows), "n_neighbors": n_neighbors}
