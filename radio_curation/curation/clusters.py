"""``clusters.h5`` and ``subsample.h5``: the cluster hierarchy and a chosen subset, as plain HDF5 arrays.

``clusters.h5``: ``cutout_id`` [N]; per level ``level_<l>/`` (l = 1..L): ``centroids`` [k_l, D],
``assignment`` [n_l] (level 1: per point; level t: per level t-1 centroid), ``distance`` [n_l],
``sizes`` [k_l] (points under each cluster), ``objective``, ``resampling_objective``; attrs ``metric``,
``distance`` (``squared_l2`` or ``cosine``), ``n_levels``; ``conditioning/`` (optional ``mean`` [D],
``projection`` [D, d]; attr ``normalize``): the transform the features went through before clustering,
so centroids and distances live in the conditioned space.

``subsample.h5``: ``cutout_id`` [M] int64 ascending, ``cluster_path`` [M, L] int64; attrs ``sampler``,
``target_size``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from radio_curation.curation.conditioning import ConditioningFit
from radio_curation.curation.kmeans import ClusterLevel
from radio_curation.errors import RadioCurationError


@dataclass
class Hierarchy:
    """A clustering: the points' cutout IDs, one :class:`ClusterLevel` per level (finest first), and the
    conditioning that maps the features into the space of the centroids."""

    cutout_id: np.ndarray
    levels: list[ClusterLevel]
    metric: str = "l2"
    conditioning: ConditioningFit = field(default_factory=ConditioningFit)

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n(self) -> int:
        return len(self.cutout_id)

    def parents(self, level: int) -> np.ndarray:
        """The level-``level`` cluster (1-based, >= 2) of every level ``level-1`` cluster."""
        return self.levels[level - 1].assignment

    def paths(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``[n, L]`` int64: each point's cluster at every level (optionally only ``rows``)."""
        first = self.levels[0].assignment
        current = first if rows is None else first[rows]
        out = np.empty((len(current), self.n_levels), dtype=np.int64)
        out[:, 0] = current
        for level in range(2, self.n_levels + 1):
            current = self.parents(level)[current]
            out[:, level - 1] = current
        return out

    def save(self, path: Path, attrs: dict[str, Any] | None = None) -> None:
        """Write ``clusters.h5``."""
        with h5py.File(path, "w") as f:
            f.create_dataset("cutout_id", data=self.cutout_id.astype(np.int64))
            for i, level in enumerate(self.levels, start=1):
                level.save(f.create_group(f"level_{i}"))
            f.attrs["metric"] = self.metric
            f.attrs["distance"] = "cosine" if self.metric == "cosine" else "squared_l2"
            f.attrs["n_levels"] = self.n_levels
            self.conditioning.save(f.create_group("conditioning"))
            for key, value in (attrs or {}).items():
                f.attrs[key] = value

    @classmethod
    def load(cls, path: Path) -> Hierarchy:
        """Read ``clusters.h5``."""
        try:
            with h5py.File(path, "r") as f:
                n_levels = int(f.attrs["n_levels"])
                levels = [ClusterLevel.load(f[f"level_{i}"]) for i in range(1, n_levels + 1)]
                conditioning = ConditioningFit.load(f["conditioning"])
                return cls(f["cutout_id"][()], levels, str(f.attrs["metric"]), conditioning)
        except (OSError, KeyError) as err:
            raise RadioCurationError(f"{path} is not a readable clusters.h5 ({err})") from err


def write_subsample(
    path: Path,
    cutout_id: np.ndarray,
    cluster_path: np.ndarray,
    sampler: dict[str, Any],
    target_size: int | None,
) -> None:
    """Write ``subsample.h5`` (rows sorted by ``cutout_id``)."""
    order = np.argsort(cutout_id, kind="stable")
    with h5py.File(path, "w") as f:
        f.create_dataset("cutout_id", data=np.asarray(cutout_id, dtype=np.int64)[order])
        f.create_dataset("cluster_path", data=np.asarray(cluster_path, dtype=np.int64)[order])
        f.attrs["sampler"] = json.dumps(sampler, sort_keys=True)
        f.attrs["target_size"] = -1 if target_size is None else int(target_size)


def read_subsample(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``cutout_id`` [M] and ``cluster_path`` [M, L] of a ``subsample.h5``."""
    with h5py.File(path, "r") as f:
        return f["cutout_id"][()], f["cluster_path"][()]
