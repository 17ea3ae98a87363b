"""``extract.py stage=merge 'cutouts_ids=[A,B]'``: one filtered, deduplicated index ``merged.h5``.

Rows get a global ``cutout_id``; the manifest counts what each filter and the cross-mosaic deduplication
removed.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig

from radio_curation.cutouts.index import read_index, write_index
from radio_curation.errors import EmptyResultError, RadioCurationError, instantiate_user
from radio_curation.runs.store import RunStore
from radio_curation.tasks.stage import Run, run_stage

log = logging.getLogger(__name__)


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
    store = RunStore.of(cfg)
    given = [str(i) for i in (ids if isinstance(ids, ListConfig) else [ids])]
    for run_id in given:
        store.resolve(run_id, stage="cutouts")
    repeated = sorted({i for i in given if given.count(i) > 1})
    if repeated:
        # The run's parents list each run once (see parent_ids), so [A,A,B] is the run of [A,B].
        log.warning("cutouts_ids names %s more than once; merging each run once", ", ".join(repeated))
    merger = instantiate_user(cfg.merge)  # a bad merge setting stops before the run is claimed
    return run_stage(cfg, cfg.stage, lambda run: _work(run, merger))


def _work(run: Run, merger: Any) -> None:
    indexes = [read_index(parent.artifact("cutouts.h5")) for parent in run.parents]
    with run.timer("merge"):
        merged, counts = merger.merge(indexes)
    if len(merged) == 0:
        removed = {k: v for k, v in counts.items() if k not in ("input", "windows") and v}
        raise EmptyResultError(
            f"the merge keeps no window of the {counts.get('input', 0)} in {', '.join(p.run_id for p in run.parents)}"
            f" (removed: {removed or 'none'}); loosen the merge filters (merge=...)"
        )
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
