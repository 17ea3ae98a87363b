"""``extract.py stage=cutouts``: index the windows of a survey's mosaics into ``cutouts.h5``.

Mosaics are cut in a process pool (``survey.num_workers``); each mosaic's rows go to a part file first, so
an interrupted run resumes with the mosaics it had not finished. ``survey.shard=range(0,n) survey.n_shards=n``
spreads a survey over the tasks of a SLURM array (one run per shard; merge them afterwards).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from radio_curation.cutouts.cut import combine_parts, cut_mosaic, part_path
from radio_curation.cutouts.index import write_index
from radio_curation.cutouts.strategies import CatalogWindows, CutoutStrategy, SlidingWindow
from radio_curation.errors import EmptyResultError, RadioCurationError, instantiate_user
from radio_curation.progress import progress
from radio_curation.runs.settings import Built
from radio_curation.runs.stage import Inputs, Run, Stage, run_stage
from radio_curation.sky.fitsio import MosaicFiles, MosaicReadError, open_mosaic

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run (or reuse) the cutouts stage for ``cfg.survey`` and ``cfg.cutouts``.

    Returns
    -------
    dict
        The run summary from :func:`radio_curation.runs.stage.run_stage`.
    """
    return run_stage(cfg, CUTOUTS)


def _check(inputs: Inputs) -> None:
    strategy = instantiate_user(inputs.cfg.cutouts)
    instantiate_user(inputs.cfg.survey)
    if isinstance(strategy, CatalogWindows):
        strategy.sources()  # a catalogue that cannot be read stops before the run is claimed


def _why_empty(mosaics: list[MosaicFiles], strategy: CutoutStrategy, counts: dict[str, int]) -> str:
    """Why cutting ``mosaics`` gave no window, for the error message."""
    if not mosaics:
        return "every mosaic was skipped as unreadable (see the warnings above)"
    sides = []
    for files in mosaics:
        with open_mosaic(files) as mosaic:
            sides.append(min(mosaic.shape))
    sizes = [strategy.window_size] if isinstance(strategy, SlidingWindow) else []
    if sizes and min(sizes) > max(sides):
        return (
            f"window {min(sizes)} px is larger than every mosaic ({max(sides)} px); set "
            f"cutouts.window_size to at most {max(sides)}"
        )
    candidates, dropped = counts.get("candidates", 0), counts.get("dropped_nan", 0)
    if candidates and dropped == candidates:
        return (
            f"all {candidates} candidate windows have too many NaN pixels (cutouts.max_nan_fraction="
            f"{strategy.max_nan_fraction}): the mosaics are blank where the windows fall"
        )
    if isinstance(strategy, CatalogWindows):
        return "no catalogue source falls inside a mosaic; check cutouts.catalog and its columns"
    return f"no window passed the strategy's filters (counts: {counts})"


def _work(run: Run) -> None:
    survey = instantiate_user(run.cfg.survey)
    strategy = instantiate_user(run.cfg.cutouts)
    with run.timer("discover"):
        mosaics = survey.mosaics()
    parts_dir = run.dir / "parts"
    parts_dir.mkdir(exist_ok=True)
    todo = [m for m in mosaics if not part_path(parts_dir, m).is_file()]
    skipped: list[dict[str, str]] = []
    if len(todo) < len(mosaics):
        log.info("resuming: %d of %d mosaics already cut", len(mosaics) - len(todo), len(mosaics))

    def done(files: MosaicFiles, outcome: dict[str, int] | RadioCurationError) -> None:
        if isinstance(outcome, RadioCurationError):
            if not isinstance(outcome, MosaicReadError):
                raise outcome
            if survey.on_error == "fail":
                raise RadioCurationError(
                    f"{outcome} (survey.on_error=skip leaves unreadable mosaics out and lists them in the manifest)"
                ) from outcome
            log.warning("skipping mosaic %s: %s", files.name, outcome)
            skipped.append({"mosaic": files.name, "path": str(files.image), "error": str(outcome)})

    with run.timer("cut"), progress(len(mosaics), "cutting mosaics", unit="mosaic") as bar:
        bar.advance(len(mosaics) - len(todo))
        workers = min(survey.num_workers, len(todo))
        # The cores this job may use (SLURM sets the affinity) are shared among the worker processes.
        threads = max(1, len(os.sched_getaffinity(0)) // max(workers, 1))
        if workers > 1:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures: dict[Future, MosaicFiles] = {
                    pool.submit(cut_mosaic, m, strategy, part_path(parts_dir, m), threads): m for m in todo
                }
                try:
                    for future in as_completed(futures):
                        error = future.exception()
                        if error is not None and not isinstance(error, RadioCurationError):
                            raise error
                        done(futures[future], error or future.result())
                        bar.advance()
                except BaseException:
                    # Stop promptly: mosaics already cut keep their parts for the resumed run.
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
        else:
            for files in todo:
                try:
                    outcome = cut_mosaic(files, strategy, part_path(parts_dir, files), threads)
                except RadioCurationError as err:
                    outcome = err
                done(files, outcome)
                bar.advance()

    skipped_names = {s["mosaic"] for s in skipped}
    kept = [m for m in mosaics if m.name not in skipped_names]
    with run.timer("combine"):
        index, counts = combine_parts([part_path(parts_dir, m) for m in kept], strategy.attrs())
    if len(index) == 0:
        raise EmptyResultError(f"no windows: {_why_empty(kept, strategy, counts)}")
    with run.timer("write"), run.artifact("cutouts.h5") as tmp:
        write_index(tmp, index)
    shutil.rmtree(parts_dir)
    sizes, per_size = np.unique(index.columns["size"], return_counts=True)
    run.counts.update({"candidates": 0, "dropped_nan": 0, **counts})
    run.counts.update({"windows": len(index), "mosaics": len(kept), "skipped_mosaics": len(skipped)})
    run.info.update(
        {
            "mosaics": [str(Path(m.image).resolve()) for m in kept],
            "skipped": skipped,
            "windows_per_size": {int(s): int(n) for s, n in zip(sizes, per_size, strict=True)},
            "strategy": strategy.attrs(),
        }
    )
    if len(index):
        run.metrics["median_rms"] = float(np.nanmedian(index.columns["rms"]))
        run.metrics["median_peak_snr"] = float(np.nanmedian(index.columns["peak_snr"]))


CUTOUTS = Stage(
    name="cutouts",
    work=_work,
    # The survey and the strategy define the index; where the mosaics are read from and with how many
    # processes does not.
    settings={"survey": Built, "cutouts": Built},
    execution={"survey.num_workers": Built, "survey.data_dir": Built},
    check=_check,
    resumable=("parts/*.h5",),
    headline="counts.windows",
)
