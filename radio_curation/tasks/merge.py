"""``extract.py stage=merge 'cutouts_ids=[A,B]'``: one filtered, deduplicated index ``merged.h5``.

Rows get a global ``cutout_id``; the manifest counts what each filter and the cross-mosaic deduplication
removed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig

from radio_curation.cutouts.index import read_index, write_index
from radio_curation.errors import RadioCurationError, instantiate_user
from radio_curation.runs.store import RunStore
from radio_curation.tasks.stage import Run, run_stage


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run (or reuse) the merge of the cutouts runs ``cfg.cutouts_ids`` with the ``cfg.merge`` settings.

    Returns
    -------
    dict
        The run summary from :func:`radio_curation.tasks.stage.run_stage`.

    Raises
    ------
    RadioCurationError
        If no cutouts run is given or an ID is not a complete cutouts run.
    """
    ids = cfg.cutouts_ids
    if ids is None or (isinstance(ids, ListConfig) and len(ids) == 0):
        raise RadioCurationError(
            "no cutouts runs to merge: give their IDs, e.g. extract.py stage=merge 'cutouts_ids=[cutouts-1a2b3c4d5e]'"
        )
    store = RunStore(cfg.paths.runs_dir)
    for run_id in ids if isinstance(ids, ListConfig) else [ids]:
        store.resolve(str(run_id), stage="cutouts")
    return run_stage(cfg, cfg.stage, _work)


def _work(run: Run) -> None:
    indexes = [read_index(parent.artifact("cutouts.h5")) for parent in run.parents]
    merger = instantiate_user(run.cfg.merge)
    with run.timer("merge"):
        merged, counts = merger.merge(indexes)
    merged.attrs["parents"] = [parent.run_id for parent in run.parents]
    with run.artifact("merged.h5") as tmp:
        write_index(tmp, merged)
    col = merged.columns
    sizes, per_size = np.unique(col["size"], return_counts=True)
    used = np.unique(col["mosaic"])
    run.counts.update(counts)
    run.counts["mosaics"] = len(used)
    run.info["windows_per_size"] = {int(s): int(n) for s, n in zip(sizes, per_size, strict=True)}
    if len(merged):
        run.metrics["median_rms"] = float(np.nanmedian(col["rms"]))
        run.metrics["kept_fraction"] = counts["windows"] / max(counts["input"], 1)
