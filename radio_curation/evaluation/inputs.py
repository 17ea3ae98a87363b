"""What an evaluation reads: runs up the lineage, feature rows, window tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radio_curation.cutouts.index import read_index
from radio_curation.errors import RadioCurationError
from radio_curation.features.matrix import positions
from radio_curation.runs.store import RunRecord, RunStore


def require_ancestor(store: RunStore, record: RunRecord, stage: str, why: str) -> RunRecord:
    """:meth:`RunStore.ancestor`, or a user-facing error naming what was looked for and why."""
    found = store.ancestor(record, stage)
    if found is None:
        raise RadioCurationError(
            f"run {record.run_id} has no '{stage}' run in its lineage, which {why} needs "
            f"(see `radio-curation runs lineage {record.run_id}`)"
        )
    return found


def window_table(merged: Path, cutout_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of ``merged.h5`` for ``cutout_ids`` (in that order), plus ``pixel_scale`` [arcsec] per window."""
    index = read_index(merged)
    rows = positions(index.columns["cutout_id"], cutout_ids, str(merged))
    table = {key: np.asarray(values)[rows] for key, values in index.columns.items()}
    table["mosaic"] = np.asarray(index.mosaics["name"], dtype=str)[table["mosaic"]]
    table["pixel_scale"] = np.asarray(index.mosaics["pixel_scale"], dtype=np.float64)[
        np.asarray(index.columns["mosaic"])[rows]
    ]
    return table
