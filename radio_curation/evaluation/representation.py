"""Representation health: singular-value spectrum, RankMe, effective rank, alignment and uniformity.

The spectrum is computed from the ``D × D`` Gram matrix accumulated chunk by chunk, so a features file of
millions of rows is never loaded whole.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.spatial.distance import pdist

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.similarity import l2_normalise


class GramAccumulator:
    """Running ``Σ xᵀx``, ``Σ x`` and row count over feature chunks (float64)."""

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.total = np.zeros(dim)
        self.gram = np.zeros((dim, dim))

    def add(self, chunk: np.ndarray) -> None:
        """Accumulate a ``[B, D]`` chunk of features."""
        x = np.asarray(chunk, dtype=np.float64)
        self.n += len(x)
        self.total += x.sum(axis=0)
        self.gram += x.T @ x

    def mean_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``[D]`` and sample covariance ``[D, D]`` of the accumulated rows."""
        if self.n < 2:
            raise RadioCurationError("a covariance needs at least two feature rows")
        mean = self.total / self.n
        cov = (self.gram - self.n * np.outer(mean, mean)) / (self.n - 1)
        return mean, (cov + cov.T) / 2

    def singular_values(self, centred: bool) -> np.ndarray:
        """Singular values of the accumulated matrix (mean-subtracted if ``centred``), descending."""
        if self.n == 0:
            raise RadioCurationError("no feature rows to compute a spectrum from")
        gram = self.gram
        if centred:
            mean = self.total / self.n
            gram = gram - self.n * np.outer(mean, mean)
        eig = np.linalg.eigvalsh((gram + gram.T) / 2)[::-1]
        return np.sqrt(np.clip(eig, 0.0, None))


def accumulate(chunks: Iterable[np.ndarray], dim: int) -> GramAccumulator:
    """Accumulate an iterable of ``[B, D]`` chunks into a :class:`GramAccumulator`."""
    acc = GramAccumulator(dim)
    for chunk in chunks:
        acc.add(chunk)
    return acc


def entropy_rank(singular_values: np.ndarray, eps: float = 1e-7) -> float:
    """``exp`` of the Shannon entropy of the normalised singular values (Roy & Vetterli 2007).

    Equals ``k`` for a matrix with ``k`` equal non-zero singular values.

    Parameters
    ----------
    singular_values : np.ndarray
        Non-negative singular values.
    eps : float
        Added to each normalised value for numerical stability (as in RankMe).

    Returns
    -------
    float
    """
    s = np.asarray(singular_values, dtype=np.float64)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def dims_for_variance(singular_values: np.ndarray, fraction: float = 0.99) -> int:
    """Number of leading components that explain ``fraction`` of the variance (``σ²``)."""
    var = np.asarray(singular_values, dtype=np.float64) ** 2
    if var.sum() <= 0:
        return 0
    return int(np.searchsorted(np.cumsum(var) / var.sum(), fraction) + 1)


def spectrum_metrics(acc: GramAccumulator) -> tuple[dict[str, float], np.ndarray]:
    """RankMe, effective rank and variance dimensions of accumulated features.

    ``rankme`` (Garrido et al. 2023) uses the singular values of the raw embeddings; ``effective_rank`` the
    same entropy on mean-subtracted embeddings, so a large common offset (e.g. post-ReLU pooling) does not
    hide how many directions actually vary.

    Returns
    -------
    metrics : dict
        ``rankme``, ``effective_rank``, ``dims_99pct_variance``, ``dim``, ``n_rows``.
    spectrum : np.ndarray
        Centred singular values, descending (the dimensional-collapse curve).
    """
    raw = acc.singular_values(centred=False)
    centred = acc.singular_values(centred=True)
    metrics = {
        "rankme": entropy_rank(raw),
        "effective_rank": entropy_rank(centred),
        "dims_99pct_variance": float(dims_for_variance(centred, 0.99)),
        "dim": float(len(raw)),
        "n_rows": float(acc.n),
    }
    return metrics, centred


def alignment(x: np.ndarray, y: np.ndarray, alpha: float = 2.0) -> float:
    """Mean ``‖x̂ − ŷ‖^α`` over positive pairs of L2-normalised rows (Wang & Isola 2020); lower is better."""
    if len(x) != len(y) or len(x) == 0:
        raise RadioCurationError(f"alignment needs equally many positive pairs, got {len(x)} and {len(y)}")
    diff = l2_normalise(x) - l2_normalise(y)
    return float((np.linalg.norm(diff, axis=1) ** alpha).mean())


def uniformity(x: np.ndarray, t: float = 2.0) -> float:
    """``log E exp(−t ‖x̂ᵢ − x̂ⱼ‖²)`` over all pairs of L2-normalised rows (Wang & Isola 2020); lower is better."""
    if len(x) < 2:
        raise RadioCurationError("uniformity needs at least two feature rows")
    sq = pdist(l2_normalise(x).astype(np.float64), "sqeuclidean")
    return float(np.log(np.mean(np.exp(-t * sq))))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    eig, vec = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vec * np.sqrt(np.clip(eig, 0.0, None))) @ vec.T


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (as in FID).

    ``‖μ₁ − μ₂‖² + Tr(C₁ + C₂ − 2 (C₁^{½} C₂ C₁^{½})^{½})``, computed with symmetric eigendecompositions so
    that rank-deficient covariances (collapsed features) are handled exactly.

    Parameters
    ----------
    mean1, cov1, mean2, cov2 : np.ndarray
        Means ``[D]`` and covariances ``[D, D]`` (e.g. :meth:`GramAccumulator.mean_covariance`).

    Returns
    -------
    float
    """
    if np.shape(mean1) != np.shape(mean2):
        raise RadioCurationError(
            f"the two feature sets have different dimensions ({np.shape(mean1)[0]} vs {np.shape(mean2)[0]}); "
            "a distribution distance needs features of the same space"
        )
    root1 = _psd_sqrt(cov1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ cov2 @ root1), 0.0, None)).sum()
    diff = np.asarray(mean1, dtype=np.float64) - np.asarray(mean2, dtype=np.float64)
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * cross)
