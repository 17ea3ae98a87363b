"""Feature conditioning before clustering: centring, PCA whitening to ``d`` dimensions, L2 normalisation.

Network features share a large common component (an untrained or post-ReLU network gives every window
nearly the same direction, cosine similarities all close to 1), and a few high-variance directions (e.g.
overall brightness) dominate their distances. Centring removes the common part; PCA whitening keeps the
``d`` directions of largest variance and gives each unit variance, so cluster structure in a low-variance
direction is not drowned by a broad nuisance one; L2 normalisation puts the points on the unit sphere for
spherical (cosine) k-means.

The transform is fitted once on the clustered points and stored with the clustering (``clusters.h5``
group ``conditioning``): the samplers and the evaluations then measure distances in the space the
centroids live in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from radio_curation.atomic import atomic_path
from radio_curation.curation.sharded import LOCAL, Collective
from radio_curation.errors import RadioCurationError
from radio_curation.features.matrix import FeatureMatrix

#: Rows transformed at once (25 MiB of 384-d float32).
BLOCK_ROWS = 16384


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Divide every row of ``x`` by its L2 norm, in place, a block of rows at a time in float32 (all-zero
    rows stay zero); returns ``x``."""
    for start in range(0, x.shape[0], BLOCK_ROWS):
        x[start : start + BLOCK_ROWS] = _unit_rows(
            np.asarray(x[start : start + BLOCK_ROWS], dtype=np.float32)
        )
    return x


def _unit_rows(block: np.ndarray) -> np.ndarray:
    """A new array: the rows of ``block`` divided by their L2 norms (all-zero rows stay zero)."""
    return block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), np.finfo(np.float32).tiny)


@dataclass
class ConditioningFit:
    """A fitted conditioning: ``y = normalize((x - mean) @ projection)``, each part optional.

    Attributes
    ----------
    mean
        ``[D]`` float32 subtracted first (``None``: no centring).
    projection
        ``[D, d]`` float32 PCA whitening matrix (principal axes divided by the square root of their
        variance); ``None``: no projection.
    normalize
        L2-normalise every row last.
    explained_variance
        Fraction of the total variance in the ``d`` kept directions (``None`` without whitening).
    """

    mean: np.ndarray | None = None
    projection: np.ndarray | None = None
    normalize: bool = False
    explained_variance: float | None = None

    @property
    def is_identity(self) -> bool:
        return self.mean is None and self.projection is None and not self.normalize

    def out_dim(self, dim: int) -> int:
        """Dimension of the conditioned features of ``dim``-dimensional inputs."""
        return dim if self.projection is None else int(self.projection.shape[1])

    def transform(self, x: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Conditioned features of ``x`` ``[n, D]``, computed in float32 one block of rows at a time.

        Float32 by default. With ``inplace`` the result keeps ``x``'s dtype (float16 or float32), and
        without a projection ``x`` itself is overwritten and returned, so conditioning a large matrix needs
        no second copy; a projection always writes a new ``[n, d]`` array.
        """
        if self.is_identity:
            return x
        dtype = x.dtype if inplace and x.dtype in (np.float16, np.float32) else np.dtype(np.float32)
        if self.projection is None:
            out = x if dtype == x.dtype and inplace else np.empty(x.shape, dtype=dtype)
        else:
            out = np.empty((x.shape[0], self.projection.shape[1]), dtype=dtype)
        for start in range(0, x.shape[0], BLOCK_ROWS):
            block = np.asarray(x[start : start + BLOCK_ROWS], dtype=np.float32)
            if self.mean is not None:
                block = block - self.mean
            if self.projection is not None:
                block = block @ self.projection
            if self.normalize:
                block = _unit_rows(block)
            out[start : start + len(block)] = block
        return out

    def source(self, features: FeatureMatrix) -> ConditionedFeatures:
        """``features`` seen through this conditioning (chunk by chunk, nothing held in memory)."""
        return ConditionedFeatures(features, self)

    def save(self, group: h5py.Group) -> None:
        """Write into an HDF5 group (absent parts are absent datasets)."""
        for name in ("mean", "projection"):
            value = getattr(self, name)
            if value is not None:
                group.create_dataset(name, data=value)
        group.attrs["normalize"] = self.normalize
        if self.explained_variance is not None:
            group.attrs["explained_variance"] = self.explained_variance

    @classmethod
    def load(cls, group: h5py.Group) -> ConditioningFit:
        """Read a group written by :meth:`save`."""
        return cls(
            mean=group["mean"][()] if "mean" in group else None,
            projection=group["projection"][()] if "projection" in group else None,
            normalize=bool(group.attrs["normalize"]),
            explained_variance=(
                float(group.attrs["explained_variance"]) if "explained_variance" in group.attrs else None
            ),
        )

    def describe(self) -> dict[str, Any]:
        """What the fit does, for the run's manifest."""
        return {
            "centred": self.mean is not None,
            "whitened_dim": None if self.projection is None else int(self.projection.shape[1]),
            "normalized": self.normalize,
            "explained_variance": self.explained_variance,
        }


def save_conditioning(path: Path, fit: ConditioningFit) -> None:
    """Write ``fit`` to its own HDF5 file (atomically), so a resumed clustering reuses it."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        fit.save(f)


def load_conditioning(path: Path) -> ConditioningFit:
    """Read a file written by :func:`save_conditioning`."""
    with h5py.File(path, "r") as f:
        return ConditioningFit.load(f)


class ConditionedFeatures:
    """A :class:`~radio_curation.features.matrix.FeatureMatrix` whose rows come out conditioned (the
    underlying matrix untouched)."""

    def __init__(self, features: FeatureMatrix, fit: ConditioningFit) -> None:
        self.features = features
        self.fit = fit

    @property
    def n(self) -> int:
        return self.features.n

    @property
    def dim(self) -> int:
        return self.fit.out_dim(self.features.dim)

    @property
    def cutout_ids(self) -> np.ndarray:
        return self.features.cutout_ids

    def read(self, rows: np.ndarray | None = None) -> np.ndarray:
        return self.fit.transform(self.features.read(rows))

    def iter_chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for start, chunk in self.features.iter_chunks(rows):
            yield start, self.fit.transform(chunk)


class FeatureConditioning:
    """How features are conditioned before clustering (the ``conditioning`` config group).

    Parameters
    ----------
    center
        Subtract the mean feature vector.
    whiten_dim
        PCA-whiten to this many dimensions (``None``: no whitening). Needs ``center``.
    normalize
        L2-normalise every row last (for spherical k-means).
    eps
        Added to every kept variance, relative to the largest, so near-empty directions are not blown up.
    """

    def __init__(
        self, center: bool = True, whiten_dim: int | None = None, normalize: bool = True, eps: float = 1e-6
    ) -> None:
        if whiten_dim is not None and not center:
            raise RadioCurationError(
                "conditioning.whiten_dim is set but conditioning.center=false: PCA whitening works on centred "
                "features; set conditioning.center=true"
            )
        if whiten_dim is not None and int(whiten_dim) < 1:
            raise RadioCurationError(
                f"conditioning.whiten_dim={whiten_dim} must be >= 1 (or null: no whitening)"
            )
        if not eps >= 0:
            raise RadioCurationError(f"conditioning.eps={eps} must be >= 0")
        self.center = bool(center)
        self.whiten_dim = None if whiten_dim is None else int(whiten_dim)
        self.normalize = bool(normalize)
        self.eps = float(eps)

    def fit(self, x: np.ndarray, comm: Collective = LOCAL) -> ConditioningFit:
        """Fit the mean and (with whitening) the principal axes of ``x`` ``[n, D]``, in float64.

        With ``comm``, ``x`` is this rank's shard of the rows and the fit is that of all ranks' rows.
        """
        dim = x.shape[1]
        n = comm.layout(x.shape[0])[1]
        if not self.center:
            return ConditioningFit(normalize=self.normalize)
        mean = np.zeros(dim, dtype=np.float64)
        for start in range(0, x.shape[0], BLOCK_ROWS):
            mean += np.asarray(x[start : start + BLOCK_ROWS], dtype=np.float64).sum(0)
        mean = comm.sum(mean) / max(n, 1)
        if self.whiten_dim is None:
            return ConditioningFit(mean=mean.astype(np.float32), normalize=self.normalize)
        if self.whiten_dim > min(dim, n - 1):
            raise RadioCurationError(
                f"conditioning.whiten_dim={self.whiten_dim}, but {n} points of dimension {dim} have at most "
                f"{min(dim, n - 1)} directions of variance; lower conditioning.whiten_dim"
            )
        cov = np.zeros((dim, dim), dtype=np.float64)
        for start in range(0, x.shape[0], BLOCK_ROWS):
            block = np.asarray(x[start : start + BLOCK_ROWS], dtype=np.float64) - mean
            cov += block.T @ block
        cov = comm.sum(cov) / (n - 1)
        variance, axes = np.linalg.eigh(cov)
        variance, axes = variance[::-1], axes[:, ::-1]
        kept = np.clip(variance[: self.whiten_dim], 0.0, None)
        total = float(np.clip(variance, 0.0, None).sum())
        scale = kept + self.eps * float(kept[0])
        if not np.all(scale > 0):
            raise RadioCurationError(
                f"the features have fewer than conditioning.whiten_dim={self.whiten_dim} directions with "
                "variance; lower conditioning.whiten_dim (or raise conditioning.eps)"
            )
        projection = axes[:, : self.whiten_dim] / np.sqrt(scale)[None, :]
        return ConditioningFit(
            mean=mean.astype(np.float32),
            projection=projection.astype(np.float32),
            normalize=self.normalize,
            explained_variance=float(kept.sum() / total) if total > 0 else None,
        )
