"""The windows of a features run with their feature rows, and the clustering made of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radio_curation.curation.clusters import Hierarchy
from radio_curation.cutouts.reader import WindowReader
from radio_curation.evaluation.inputs import require_ancestor, window_table
from radio_curation.features.matrix import FeatureFile, positions
from radio_curation.runs.store import RunRecord, RunStore


class WindowFeatures:
    """A features run's feature matrix with the windows its rows describe (their table and pixels): what the
    map, neighbour, probe and report evaluations read.

    Parameters
    ----------
    store
        The run store.
    features_run
        A complete features run; its merge run (up the lineage) holds the windows.
    """

    def __init__(self, store: RunStore, features_run: RunRecord) -> None:
        self.features_run = features_run
        self.file = FeatureFile(features_run.artifact("features.h5"))
        self.merge_run = require_ancestor(store, features_run, "merge", "reading window positions and pixels")
        self.merged = self.merge_run.artifact("merged.h5")
        self.cutout_ids = np.asarray(self.file.cutout_ids, dtype=np.int64)
        self._table: dict[str, np.ndarray] | None = None

    @property
    def table(self) -> dict[str, np.ndarray]:
        """Window columns aligned with the feature rows."""
        if self._table is None:
            self._table = window_table(self.merged, self.cutout_ids)
        return self._table

    def rows_of(self, ids: np.ndarray, what: str) -> np.ndarray:
        """Feature rows of cutout ``ids``."""
        return positions(self.cutout_ids, ids, f"features run {self.features_run.run_id} ({what})")

    def read_windows(self, ids: np.ndarray) -> list[np.ndarray]:
        """Pixels of windows ``ids`` (sizes may differ), in order, as ``[1, S, S]`` arrays."""
        reader = WindowReader(self.merged)
        ids = np.asarray(ids, dtype=np.int64)
        sizes = self.table["size"][self.rows_of(ids, "windows to show")]
        out: list[np.ndarray] = [np.empty(0)] * len(ids)
        for size in np.unique(sizes):
            where = np.flatnonzero(sizes == size)
            for i, pixels in zip(where, reader.read(ids[where]), strict=True):
                out[i] = pixels
        reader.close()
        return out


@dataclass(frozen=True)
class Clustering:
    """A cluster run's hierarchy and where its points are in the features run it clustered."""

    hierarchy: Hierarchy
    #: The features-file row of each clustered point.
    rows: np.ndarray
    features_run: RunRecord


def clustering_of(store: RunStore, record: RunRecord, clusters: RunRecord | None) -> Clustering | None:
    """The clustering ``clusters`` (a cluster run), else the one up ``record``'s lineage (None: there is none)."""
    cluster_run = clusters if clusters is not None else store.ancestor(record, "cluster")
    if cluster_run is None:
        return None
    hierarchy = Hierarchy.load(cluster_run.artifact("clusters.h5"))
    features_run = require_ancestor(store, cluster_run, "features", "the clustering")
    ids = FeatureFile(features_run.artifact("features.h5")).cutout_ids
    rows = positions(ids, hierarchy.cutout_id, f"features run {features_run.run_id}")
    return Clustering(hierarchy, rows, features_run)
