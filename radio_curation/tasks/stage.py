"""Running one stage as a run of the store: reuse, resume, atomic artifacts, manifest, trackers."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning_fabric.connector import _PRECISION_INPUT
from omegaconf import DictConfig, OmegaConf

import radio_curation
from radio_curation.atomic import TEMPORARY_GLOB, atomic_path, remove_path, write_atomic
from radio_curation.errors import EmptyResultError, RadioCurationError
from radio_curation.runs.identity import stage_identity
from radio_curation.runs.manifest import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    RUNNING,
    read_manifest,
    sha256sum,
    write_manifest,
)
from radio_curation.runs.store import RunRecord, RunStore, check_artifact
from radio_curation.tracking.base import TrackedRun, Trackers

log = logging.getLogger(__name__)


def check_precision(value: Any, key: str, extra: tuple[str, ...] = ()) -> None:
    """Refuse a Lightning precision Lightning would not accept, before a run is claimed.

    Raises
    ------
    RadioCurationError
        Naming ``key`` and the values it accepts.
    """
    accepted = [*extra, *(str(v) for group in get_args(_PRECISION_INPUT) for v in get_args(group))]
    if str(value) not in accepted:
        raise RadioCurationError(f"{key}={value} is not a precision; use one of {', '.join(accepted)}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Run:
    """The handle a stage's work function gets: where to write, what to record, where to log."""

    def __init__(
        self,
        cfg: DictConfig,
        run_id: str,
        run_dir: Path,
        parents: list[RunRecord],
        manifest: dict[str, Any],
        tracker: Trackers,
    ) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.dir = run_dir
        self.parents = parents
        self.tracker = tracker
        self.manifest = manifest
        self.resumed = manifest["attempts"] > 1
        self.counts: dict[str, Any] = dict(manifest.get("counts") or {})
        self.metrics: dict[str, Any] = dict(manifest.get("metrics") or {})
        self.info: dict[str, Any] = dict(manifest.get("info") or {})
        self.timings: dict[str, float] = dict(manifest.get("timings") or {})
        self.artifacts: dict[str, dict[str, Any]] = dict(manifest.get("artifacts") or {})

    @contextmanager
    def artifact(self, name: str) -> Iterator[Path]:
        """Yield a temporary path to write artifact ``name`` to; renamed into place only on success."""
        final = self.dir / name
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(final) as tmp:
            yield tmp
        self.register(name)

    def register(self, name: str) -> None:
        """List a file already in the run directory as an artifact, with its checksum."""
        path = self.dir / name
        self.artifacts[name] = {"sha256": sha256sum(path), "bytes": path.stat().st_size}

    @contextmanager
    def timer(self, name: str) -> Iterator[None]:
        """Record the wall time of a block under ``timings.<name>`` (seconds)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)

    def _manifest(self, status: str) -> dict[str, Any]:
        return {
            **self.manifest,
            "status": status,
            "updated": _now(),
            "counts": self.counts,
            "metrics": self.metrics,
            "info": self.info,
            "timings": self.timings,
            "artifacts": self.artifacts,
        }

    def save(self, status: str) -> None:
        """Write the manifest (atomically) with ``status``."""
        self.manifest = self._manifest(status)
        write_manifest(self.dir, self.manifest)


def tracker_group(cfg: DictConfig) -> str:
    """The W&B group / MLflow experiment: ``experiment_name``, plus the sweep's name in a multirun.

    All jobs of one ``-m`` sweep share the sweep directory, so they land in one group per sweep.
    """
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{cfg.experiment_name}-{Path(HydraConfig.get().sweep.dir).name}"
    return str(cfg.experiment_name)


def _result(run_id: str, run_dir: Path, manifest: dict[str, Any], reused: bool) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "run_dir": str(run_dir),
        "stage": manifest["stage"],
        "reused": reused,
        "counts": manifest.get("counts") or {},
        "metrics": manifest.get("metrics") or {},
        "info": manifest.get("info") or {},
    }


def run_stage(
    cfg: DictConfig,
    spec: DictConfig,
    work: Callable[[Run], None],
    parents: list[str] | None = None,
    resumable: Sequence[str] = (),
) -> dict[str, Any]:
    """Run ``work`` as the run of ``spec`` under ``cfg``, or reuse it if it is complete.

    A run that fails leaves nothing behind: its directory is removed, unless it holds work worth
    resuming (files matching ``resumable``); then it stays with status ``failed`` and the error, and the
    same command resumes it. An :class:`~radio_curation.errors.EmptyResultError` always removes it.

    Parameters
    ----------
    cfg
        The composed root config (``paths.runs_dir``, ``force``, ``logger``, ``experiment_name``,
        ``store.execution_keys``, ``store.verify``).
    spec
        The stage spec: ``name``, ``keys`` (config keys that define the result) and ``parents`` (config
        keys holding parent run IDs).
    work
        Does the stage's work in ``run.dir`` through the :class:`Run` handle. It is called again on an
        incomplete run (resume), so it must pick up what an earlier attempt left.
    parents
        Parent run IDs, when the caller resolved them itself; by default they come from ``spec.parents``.
    resumable
        Glob patterns, relative to the run directory, of the partial work a resumed run picks up.

    Returns
    -------
    dict
        ``run_id``, ``run_dir``, ``stage``, ``reused``, ``counts``, ``metrics``, ``info``. The last line
        printed on stdout is ``run_id=<ID>``.
    """
    store = RunStore.of(cfg)
    identity = stage_identity(cfg, spec, parents)
    parent_records = [store.resolve(p) for p in identity.parents]
    with store.lease(identity.base_id, force=bool(cfg.force)) as (run_id, run_dir):
        _log_into(run_dir)
        previous = read_manifest(run_dir)
        if previous is not None and previous.get("status") == COMPLETE:
            for name in previous.get("artifacts") or {}:
                check_artifact(run_dir, name, previous, checksum=False)
            log.info("reusing complete run %s (force=true computes a new one)", run_id)
            result = _result(run_id, run_dir, previous, reused=True)
        else:
            result = _execute(
                cfg, identity, run_id, run_dir, parent_records, previous, store, work, resumable
            )
    print(f"run_id={run_id}", flush=True)
    return result


# Log handlers this process has moved into a run directory (curate.py runs two stages in one process).
_moved_handlers: set[logging.FileHandler] = set()


def _log_into(run_dir: Path) -> None:
    """Move this process's log file into ``run_dir`` when it is elsewhere.

    Hydra names its output directory before the run is leased: concurrent ``force=true`` launches all
    expect the same next run, and all but one are given later ones; ``curate.py`` opens its log in the
    sample run's directory and clusters first.
    """
    if not HydraConfig.initialized():
        return
    hydra_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            continue
        current = Path(handler.baseFilename)
        if current.parent == run_dir.resolve() or (
            current.parent != hydra_dir and handler not in _moved_handlers
        ):
            continue
        handler.acquire()
        try:
            handler.close()
            handler.baseFilename = str(run_dir.resolve() / current.name)
            handler.stream = handler._open()
        finally:
            handler.release()
        _moved_handlers.add(handler)
        log.info("logging into %s", run_dir)


def _progress(run_dir: Path, resumable: Sequence[str]) -> bool:
    return any(next(run_dir.glob(pattern), None) is not None for pattern in resumable)


def _execute(
    cfg, identity, run_id, run_dir, parent_records, previous, store, work, resumable
) -> dict[str, Any]:
    if previous is not None:
        log.info("resuming incomplete run %s (status: %s)", run_id, previous.get("status"))
        # Files an earlier attempt was killed writing (atomic_path's temporary names): never results, and
        # no other process writes here while this one holds the lease.
        for partial in list(run_dir.rglob(TEMPORARY_GLOB)):
            remove_path(partial)
    else:
        log.info("starting run %s in %s", run_id, run_dir)
    manifest = {
        "run_id": run_id,
        "stage": identity.stage,
        "status": RUNNING,
        "parents": list(identity.parents),
        "config": identity.config,
        "created": (previous or {}).get("created", _now()),
        "updated": _now(),
        "attempts": int((previous or {}).get("attempts", 0)) + 1,
        "experiment": tracker_group(cfg),
        "version": radio_curation.__version__,
        "host": socket.gethostname(),
        "command": " ".join(sys.argv),
        **{k: (previous or {}).get(k) or {} for k in ("counts", "metrics", "info", "timings", "artifacts")},
    }
    run: Run | None = None
    try:
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        tracker = Trackers.from_config(
            cfg.get("logger"),
            TrackedRun(run_id, identity.stage, run_dir, store.root, tracker_group(cfg)),
        )
        run = Run(cfg, run_id, run_dir, parent_records, manifest, tracker)
        run.save(RUNNING)
        tracker.log_params(
            {"stage": identity.stage, "parents": ",".join(identity.parents), **identity.config}
        )
        with run.timer("total"):
            work(run)
        tracker.log_metrics({**run.metrics, "counts": run.counts, "timings": run.timings})
        run.save(COMPLETE)
    except BaseException as err:
        interrupted = not isinstance(err, Exception)
        if run is not None:
            run.tracker.finish(INTERRUPTED if interrupted else FAILED)
        _after_failure(run, run_dir, err, resumable)
        raise
    run.tracker.finish(COMPLETE)
    return _result(run_id, run_dir, run.manifest, reused=False)


def _after_failure(run: Run | None, run_dir: Path, err: BaseException, resumable: Sequence[str]) -> None:
    """Keep an interrupted run to resume; remove a failed one, or keep it (``failed``) when it has partial
    work worth resuming."""
    if run is not None and not isinstance(err, Exception):
        # A signal stopped the job (submitit exits on SLURM's time-out signal and requeues the job; Lightning
        # exits on the SIGTERM of a requeue or preemption; Ctrl-C): the run waits to be resumed, it did not fail.
        run.save(INTERRUPTED)
        return
    if isinstance(err, EmptyResultError) or not _progress(run_dir, resumable):
        log.debug("removing %s: it failed before saving anything worth resuming", run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            run_dir.parent.rmdir()  # the stage's directory, if this was its only run
        return
    if run is None:
        return
    run.manifest["error"] = str(err).splitlines()[0] if str(err) else type(err).__name__
    run.save(FAILED)
    if isinstance(err, RadioCurationError):
        err.args = (
            f"{err} (run {run.run_id} keeps its partial work; once this is fixed, the same command "
            "resumes it)",
        )
