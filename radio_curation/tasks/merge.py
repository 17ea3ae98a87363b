"""``extract.py stage=merge 'cutouts_ids=[A,B]'``: one filtered, deduplicated index ``merged.h5``.

Rows get a global ``cutout_id``; the manifest counts what each filter and the cross-mosaic deduplication
removed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig

from radio_curation.cutouts.index import read_index, write_index
from radio_curation.errors import EmptyResultError, RadioCurationError, instantiate_user
from radio_curation.runs.settings import Built
from radio_curation.runs.stage import Inputs, Run, Stage, run_stage

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run (or reuse) the merge of the cutouts runs ``cfg.cutouts_ids`` with the ``cfg.merge`` settings.

    Returns
    -------
    dict
        The run summary from :func:`radio_curation.runs.stage.run_stage`.

    Raises
    ------
    RadioCurationError
        If no cutouts run is given or an ID is not a complete cutouts run.
    """
    return run_stage(cfg, MERGE)


def _check(inputs: Inputs) -> None:
    given = inputs.cfg.cutouts_ids
    if not given:
        raise RadioCurationError(
            "no cutouts runs to merge: give their IDs, e.g. extract.py stage=merge 'cutouts_ids=[cutouts-1a2b3c4d5e]'"
        )
    given = [
        str(i) for i in (given if isinstance(given, Sequence) and not isinstance(given, str) else [given])
    ]
    repeated = sorted({i for i in given if given.count(i) > 1})
    if repeated:
        # The run's parents list each run once, so [A,A,B] is the run of [A,B].
        log.warning("cutouts_ids names %s more than once; merging each run once", ", ".join(repeated))
    instantiate_user(inputs.cfg.merge)  # a bad merge setting stops before the run is claimed


def _work(run: Run) -> None:
    merger = instantiate_user(run.cfg.merge)
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


MERGE = Stage(
    name="merge",
    work=_work,
    settings={"merge": Built},
    parents={"cutouts_ids": "cutouts"},
    check=_check,
    headline="metrics.kept_fraction",
)
