"""Stages and their runs: one declaration per stage, run as a run of the store.

A stage is declared once, in Python, next to its work, as a :class:`Stage`: its name, its typed parents
(config keys holding run IDs, and the stage each must be), the settings that define its result, the
execution-only settings it may also read, its resumable partial work and its headline metric.
:func:`run_stage` does the rest for every stage alike:

- resolves the parent IDs (one readable error for an unknown ID or a run of the wrong stage);
- computes the run ID from the stage, the result-defining settings and the parents
  (:class:`~radio_curation.runs.identity.StageIdentity`);
- reuses a complete run, or takes the run's lease and calls ``stage.work(run)``, resuming an incomplete
  one; writes the manifest, the resolved config and the trackers' records;
- under DDP (``stage.distributed``) rank 0 does all of that; every other rank calls ``stage.work(run)``
  in rank 0's run directory with a handle that cannot write the manifest (``run.rank > 0``).

The work function (and ``stage.check``) sees only a restricted, read-only, struct-mode view of the config
(:attr:`Inputs.cfg`) holding the declared settings, execution settings and parent keys: reading anything
else raises, so a setting that changes a result cannot be left out of the run's identity by mistake.

Example::

    def _work(run: Run) -> None:
        source = run.parent("source_id")            # a RunRecord of the merge stage
        with run.artifact("out.h5") as tmp:
            write(tmp, source.artifact("merged.h5"), run.cfg.threshold)
        run.metrics["kept"] = ...

    EXAMPLE = Stage(
        name="example",
        work=_work,
        parents={"source_id": "merge"},
        settings={"threshold": float, "seed": int},
        execution={"num_workers": NonNegativeInt},
        headline="metrics.kept",
    )

    run_stage(cfg, EXAMPLE)   # -> {"run_id", "run_dir", "stage", "reused", "counts", "metrics", "info",
                              #     "headline"}
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

import radio_curation
from radio_curation.atomic import TEMPORARY_GLOB, atomic_path, remove_path, write_atomic
from radio_curation.distributed import launched_rank
from radio_curation.errors import EmptyResultError, RadioCurationError
from radio_curation.logs import quiet_third_party
from radio_curation.runs.identity import StageIdentity, plain, select_keys, semantic_config
from radio_curation.runs.manifest import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    RUNNING,
    SCHEME,
    read_manifest,
    sha256sum,
    write_manifest,
)
from radio_curation.runs.settings import check_settings
from radio_curation.runs.store import RunRecord, RunStore, check_artifact, first_open_run_id
from radio_curation.tracking.base import TrackedRun, Trackers

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


#: Settings every root config carries, checked for the stages that do not read them too, so that a
#: mistyped value is refused wherever it is given (``extract.py stage=cutouts seed=x``).
ROOT_SETTINGS: Mapping[str, Any] = {"seed": int}


@dataclass(frozen=True)
class Stage:
    """The declaration of one stage: what defines its runs, what it reads, how it works.

    Attributes
    ----------
    name
        The stage's name: run IDs are ``<name>-<digest>``, runs live in ``<runs_dir>/<name>/``.
    work
        Does the stage's work through the :class:`Run` handle, in ``run.dir``. Called again on an
        incomplete run (resume), so it must pick up what an earlier attempt left.
    settings
        Dotted config keys whose values define the result (a whole group, e.g. ``backbone``, or one key),
        each with its type (:mod:`radio_curation.runs.settings`): an annotation (``int``,
        ``Annotated[int, Ge(1)] | None``, ``Literal[...]``), :data:`~radio_curation.runs.settings.Built`
        for a group Hydra instantiates (typed by its target's parameters), or a mapping of the keys of a
        plain group to their types. Checked, and written in their canonical form, before the run ID is
        computed.
    headline
        The run's headline figure, a dotted path into the result of :func:`run_stage` (e.g.
        ``metrics.loss``, ``counts.windows``): what the entry point returns, for Hydra sweepers to optimise.
    parents
        Config key holding parent run ID(s) (one, or a list) -> the stage those runs must be of. A null key
        has no parent. Parent keys may lie inside a setting (``backbone.model_id``): they count in the
        identity as the resolved parent IDs, not as the text given.
    execution
        Dotted keys the stage may read that never change its result (workers, devices, batch size for
        inference ...), with their types as ``settings``. Inside a setting they are left out of the
        identity (their type is the setting's); elsewhere they are added to the view. Keys the config does
        not have (an option without them) are skipped.
    derived
        Identity entries computed from the view, for an execution setting that changes the result in some
        cases (with ``limit_batches`` the features stage's row count is ``limit_batches × batch_size``).
    derive_parents
        Parent key -> another stage: when the key is null, its parent is that stage's run under the same
        config (``curate.py`` without ``clusters_id`` clusters first, then samples).
    check
        Validates the inputs (settings, parents) before the run is claimed: bad input leaves nothing.
    resumable
        Glob patterns, relative to the run directory, of the partial work a resumed run picks up. A run
        that fails with such work kept stays (status ``failed``) to be resumed; otherwise it is removed.
    distributed
        Every DDP rank runs the stage: rank 0 owns the run, the others compute in its directory.
    """

    name: str
    work: Callable[[Run], None]
    settings: Mapping[str, Any]
    headline: str
    parents: Mapping[str, str] = field(default_factory=dict)
    execution: Mapping[str, Any] = field(default_factory=dict)
    derived: Mapping[str, Callable[[DictConfig], Any]] = field(default_factory=dict)
    derive_parents: Mapping[str, Stage] = field(default_factory=dict)
    check: Callable[[Inputs], None] | None = None
    resumable: tuple[str, ...] = ()
    distributed: bool = False

    def values(self, cfg: DictConfig, execution: bool = True) -> dict[str, Any]:
        """The declared keys' values in ``cfg`` (nested, resolved), each checked against its type and in
        its canonical form; parent and execution keys the config does not have are left out, and all of
        them without ``execution`` (the settings alone, for the run's identity).

        Raises
        ------
        RadioCurationError
            A declared setting is not in ``cfg``;
            :class:`~radio_curation.runs.settings.SettingError`: a value of the wrong type or range.
        """
        unread = {
            key: kind for key, kind in ROOT_SETTINGS.items() if key not in {**self.settings, **self.execution}
        }
        check_settings(select_keys(cfg, (), unread), unread)
        if not execution:
            return check_settings(select_keys(cfg, self.settings), self.settings)
        values = select_keys(cfg, self.settings, [*self.parents, *self.execution])
        return check_settings(values, {**self.settings, **self.execution})

    def view(self, cfg: DictConfig) -> DictConfig:
        """The read-only, struct-mode part of ``cfg`` this stage may read (:meth:`values`)."""
        view = OmegaConf.create(self.values(cfg))
        OmegaConf.set_struct(view, True)
        OmegaConf.set_readonly(view, True)
        return view

    def identity(self, cfg: DictConfig, parents: Mapping[str, list[str]]) -> StageIdentity:
        """The identity of this stage's run under ``cfg`` with the resolved ``parents`` (key -> run IDs)."""
        config = semantic_config(
            self.values(cfg, execution=False), self.settings, [*self.execution, *self.parents]
        )
        if self.derived:
            view = self.view(cfg)
            config["derived"] = {name: compute(view) for name, compute in self.derived.items()}
        return StageIdentity(self.name, config, {k: tuple(v) for k, v in parents.items() if v})


def stage_of(cfg: DictConfig) -> Stage:
    """The stage a root config runs: ``stage.declaration``, the dotted path of a :class:`Stage` (or of a
    function of the config returning one)."""
    declared = get_object(str(cfg.stage.declaration))
    return declared if isinstance(declared, Stage) else declared(cfg)


class Inputs:
    """What a stage may read: its view of the config and its parent runs (resolved when first asked for).

    Attributes
    ----------
    cfg
        The stage's restricted view of the config (see :meth:`Stage.view`).
    store
        The run store.
    """

    def __init__(self, cfg: DictConfig, store: RunStore, stage: Stage, ids: Mapping[str, list[str]]) -> None:
        self.cfg = cfg
        self.store = store
        self.stage = stage
        self._ids = {key: list(dict.fromkeys(v)) for key, v in ids.items()}
        self._records: dict[str, list[RunRecord]] = {}

    def runs(self, key: str) -> list[RunRecord]:
        """The parent runs parent key ``key`` names (none: the key is null).

        Raises
        ------
        RadioCurationError
            ``<key>=<ID>``: an unknown ID, a run of another stage than the key needs, an incomplete run or
            one of an earlier run-ID scheme.
        """
        if key not in self._records:
            records = []
            for run_id in self._ids[key]:
                try:
                    records.append(self.store.resolve(run_id, stage=self.stage.parents[key]))
                except RadioCurationError as err:
                    raise RadioCurationError(f"{key}={run_id}: {err}") from err
            self._records[key] = list({r.run_id: r for r in records}.values())
        return self._records[key]

    @property
    def by_key(self) -> dict[str, list[RunRecord]]:
        """Parent key -> its parent runs, every key resolved."""
        return {key: self.runs(key) for key in self._ids}

    @property
    def parents(self) -> list[RunRecord]:
        """Every parent run once, in the order of the declaration's parent keys."""
        unique: dict[str, RunRecord] = {}
        for records in self.by_key.values():
            unique.update({r.run_id: r for r in records if r.run_id not in unique})
        return list(unique.values())

    def parent(self, key: str) -> RunRecord | None:
        """The parent run named by ``key`` (None: the key is null)."""
        records = self.runs(key)
        if len(records) > 1:
            raise RadioCurationError(f"{key} names {len(records)} runs; one is needed here")
        return records[0] if records else None

    def _with_view(self, cfg: DictConfig) -> Inputs:
        inputs = Inputs(cfg, self.store, self.stage, self._ids)
        inputs._records = self._records
        return inputs

    def ancestor(self, record: RunRecord, stage: str) -> RunRecord:
        """The nearest ``stage`` run up the lineage of ``record`` (itself included).

        Raises
        ------
        RadioCurationError
            There is none.
        """
        found = self.store.ancestor(record, stage)
        if found is None:
            raise RadioCurationError(
                f"run {record.run_id} does not descend from a {stage} run; check its lineage with "
                f"`radio-curation runs lineage {record.run_id}`."
            )
        return found


class Run(Inputs):
    """The handle a stage's work function gets: its inputs, where to write, what to record.

    ``rank`` is the process's DDP rank: only rank 0 owns the run (artifacts, manifest, trackers).
    """

    def __init__(
        self,
        inputs: Inputs,
        run_id: str,
        run_dir: Path,
        manifest: dict[str, Any],
        tracker: Trackers,
        rank: int = 0,
    ) -> None:
        super().__init__(inputs.cfg, inputs.store, inputs.stage, inputs._ids)
        self._records = inputs._records
        self.run_id = run_id
        self.dir = run_dir
        self.tracker = tracker
        self.manifest = manifest
        self.rank = rank
        self.resumed = int(manifest.get("attempts", 1)) > 1
        self.counts: dict[str, Any] = dict(manifest.get("counts") or {})
        self.metrics: dict[str, Any] = dict(manifest.get("metrics") or {})
        self.info: dict[str, Any] = dict(manifest.get("info") or {})
        self.timings: dict[str, float] = dict(manifest.get("timings") or {})
        self.artifacts: dict[str, dict[str, Any]] = dict(manifest.get("artifacts") or {})

    def _owner(self) -> None:
        if self.rank > 0:
            raise RuntimeError(f"rank {self.rank} does not own run {self.run_id}: only rank 0 records it")

    @contextmanager
    def artifact(self, name: str) -> Iterator[Path]:
        """Yield a temporary path to write artifact ``name`` to; renamed into place only on success."""
        self._owner()
        final = self.dir / name
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(final) as tmp:
            yield tmp
        self.register(name)

    def register(self, name: str) -> None:
        """List a file already in the run directory as an artifact, with its checksum."""
        self._owner()
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
        self._owner()
        self.manifest = self._manifest(status)
        write_manifest(self.dir, self.manifest)


def tracker_group(cfg: DictConfig) -> str:
    """The W&B group / MLflow experiment: ``experiment_name``, plus the sweep's name in a multirun.

    All jobs of one ``-m`` sweep share the sweep directory, so they land in one group per sweep.
    """
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{cfg.experiment_name}-{Path(HydraConfig.get().sweep.dir).name}"
    return str(cfg.experiment_name)


def headline(result: Mapping[str, Any], path: str) -> float:
    """The float at dotted ``path`` of a run's result (NaN, with a warning, when the run did not record it)."""
    node: Any = result
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node or node[part] is None:
            log.warning("run %s recorded no %s (its headline metric): returning NaN", result["run_id"], path)
            return math.nan
        node = node[part]
    return float(node)


def _result(
    stage: Stage, run_id: str, run_dir: Path, manifest: dict[str, Any], reused: bool
) -> dict[str, Any]:
    result = {
        "run_id": run_id,
        "run_dir": str(run_dir),
        "stage": stage.name,
        "reused": reused,
        "counts": manifest.get("counts") or {},
        "metrics": manifest.get("metrics") or {},
        "info": manifest.get("info") or {},
    }
    return {**result, "headline": headline(result, stage.headline)}


def _parent_values(
    cfg: DictConfig, stage: Stage, store: RunStore, given: Mapping[str, Any] | None
) -> dict[str, list[str]]:
    """Parent key -> the run IDs it names: ``given``, else the config's, else a derived stage's run."""
    values = {}
    for key in stage.parents:
        if given and key in given:
            value = given[key]
        else:
            value = plain(OmegaConf.select(cfg, key, default=None))
            if value is None and key in stage.derive_parents:
                value = stage_identity(cfg, stage.derive_parents[key], store).base_id
        values[key] = (
            [] if value is None else [str(v) for v in (value if isinstance(value, list) else [value])]
        )
    return values


def resolve_inputs(
    cfg: DictConfig, stage: Stage, parents: Mapping[str, Any] | None = None, store: RunStore | None = None
) -> Inputs:
    """The stage's view of ``cfg`` and its parent runs (each checked when first asked for: complete,
    current, of the stage its key needs).

    Parameters
    ----------
    cfg
        The composed root config.
    stage
        The stage.
    parents
        Parent key -> run ID(s), instead of the config's value for that key.
    store
        The run store (default: ``cfg``'s).
    """
    store = store or RunStore.of(cfg)
    return Inputs(stage.view(cfg), store, stage, _parent_values(cfg, stage, store, parents))


def stage_identity(
    cfg: DictConfig, stage: Stage, store: RunStore | None = None, parents: Mapping[str, Any] | None = None
) -> StageIdentity:
    """The identity of ``stage``'s run under ``cfg``, without checking its parents.

    Parent IDs are resolved in the store where they can be (a prefix names the full ID); an ID that does
    not resolve counts as given (:func:`run_stage` then stops on it with the reason).
    """
    store = store or RunStore.of(cfg)
    resolved = {}
    for key, ids in _parent_values(cfg, stage, store, parents).items():
        full = []
        for run_id in ids:
            try:
                full.append(store.resolve(run_id, stage=stage.parents[key]).run_id)
            except RadioCurationError:
                full.append(run_id)
        resolved[key] = list(dict.fromkeys(full))
    return stage.identity(cfg, resolved)


# The directory of the run this process works on now: ``${rc_run_dir:}`` (e.g. the checkpoint directory).
_current_run_dir: ContextVar[Path | None] = ContextVar("current_run_dir", default=None)


def expected_run_dir(cfg: DictConfig) -> Path:
    """The directory of the run ``cfg`` describes: the one this process works in while it runs, else the
    one rank 0 will lease (Hydra's output directory; the other DDP ranks work there)."""
    current = _current_run_dir.get()
    if current is not None:
        return current
    store = RunStore.of(cfg)
    identity = stage_identity(cfg, stage_of(cfg), store)
    return store.run_dir(first_open_run_id(store, identity.base_id, bool(cfg.force)))


@contextmanager
def _working_in(run_dir: Path) -> Iterator[None]:
    token = _current_run_dir.set(run_dir)
    try:
        yield
    finally:
        _current_run_dir.reset(token)


def run_stage(cfg: DictConfig, stage: Stage, parents: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``stage`` under ``cfg``, or reuse its run if it is complete.

    A run that fails leaves nothing behind: its directory is removed, unless it holds work worth
    resuming (files matching ``stage.resumable``); then it stays with status ``failed`` and the error, and
    the same command resumes it. An :class:`~radio_curation.errors.EmptyResultError` always removes it.

    Parameters
    ----------
    cfg
        The composed root config: the stage's settings, plus what the store reads itself
        (``paths.runs_dir``, ``force``, ``logger``, ``experiment_name``, ``store.verify``).
    stage
        The stage's declaration.
    parents
        Parent key -> run ID(s), instead of the config's value (a parent made in the same process).

    Returns
    -------
    dict
        ``run_id``, ``run_dir``, ``stage``, ``reused``, ``counts``, ``metrics``, ``info`` and ``headline``
        (the float ``stage.headline`` names). The last line printed on stdout is ``run_id=<ID>``. On a DDP
        rank above 0: ``run_id``, ``run_dir``, ``stage``, ``reused``, ``rank`` and what the rank counted.
    """
    quiet_third_party()
    store = RunStore.of(cfg)
    inputs = resolve_inputs(cfg, stage, parents, store)
    if stage.check is not None:
        stage.check(inputs)
    identity = stage.identity(cfg, {k: [r.run_id for r in v] for k, v in inputs.by_key.items()})
    rank = launched_rank() if stage.distributed else 0
    if rank > 0:
        return _work_on_rank(cfg, stage, inputs, identity, rank)
    with store.lease(identity.base_id, force=bool(cfg.force)) as (run_id, run_dir), _working_in(run_dir):
        _log_into(run_dir)
        previous = read_manifest(run_dir)
        if previous is not None and previous.get("status") == COMPLETE:
            for name in previous.get("artifacts") or {}:
                check_artifact(run_dir, name, previous, checksum=False)
            log.info("reusing complete run %s (force=true computes a new one)", run_id)
            result = _result(stage, run_id, run_dir, previous, reused=True)
        else:
            result = _execute(cfg, stage, inputs, identity, run_id, run_dir, previous)
    print(f"run_id={run_id}", flush=True)
    return result


def _work_on_rank(
    cfg: DictConfig, stage: Stage, inputs: Inputs, identity: StageIdentity, rank: int
) -> dict[str, Any]:
    """A DDP rank above 0: compute in the run directory rank 0 leases, without touching the store.

    Rank 0 holds the run's lock for the whole work; when the run is already complete it reuses it and
    starts no process group, so this rank has nothing to do either.
    """
    store = inputs.store
    run_dir = store.run_dir(first_open_run_id(store, identity.base_id, bool(cfg.force)))
    previous = read_manifest(run_dir) or {}
    # The headline is rank 0's to report (a sweeper reads it from rank 0).
    summary = {
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "stage": stage.name,
        "rank": rank,
        "headline": math.nan,
    }
    if previous.get("status") == COMPLETE:
        return {**summary, "reused": True}
    with _working_in(run_dir):
        run = Run(
            inputs._with_view(stage.view(cfg)), run_dir.name, run_dir, previous, Trackers([]), rank=rank
        )
        stage.work(run)
    return {**summary, "reused": False, "counts": run.counts}


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
    cfg: DictConfig,
    stage: Stage,
    inputs: Inputs,
    identity: StageIdentity,
    run_id: str,
    run_dir: Path,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    if previous is not None:
        log.info("resuming incomplete run %s (status: %s)", run_id, previous.get("status"))
        # Files an earlier attempt was killed writing (atomic_path's temporary names): never results, and
        # no other process writes here while this one holds the lease.
        for partial in list(run_dir.rglob(TEMPORARY_GLOB)):
            remove_path(partial)
    else:
        log.info("starting run %s in %s", run_id, run_dir)
    for key, records in inputs.by_key.items():
        if not records:
            continue
        described = (f"{r.run_id} ({_counted(r.manifest.get('counts') or {})})" for r in records)
        log.info("reading %s: %s", key, ", ".join(described))
    manifest = {
        "run_id": run_id,
        "stage": identity.stage,
        "status": RUNNING,
        "scheme": SCHEME,
        "parents": identity.parent_ids,
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
            TrackedRun(run_id, identity.stage, run_dir, inputs.store.root, tracker_group(cfg)),
        )
        # The view is resolved here, in the leased run: ``${rc_run_dir:}`` is this run's directory.
        run = Run(inputs._with_view(stage.view(cfg)), run_id, run_dir, manifest, tracker)
        run.save(RUNNING)
        tracker.log_params(
            {"stage": identity.stage, "parents": ",".join(identity.parent_ids), **identity.config}
        )
        with run.timer("total"):
            stage.work(run)
        tracker.log_metrics({**run.metrics, "counts": run.counts, "timings": run.timings})
        run.save(COMPLETE)
    except BaseException as err:
        interrupted = not isinstance(err, Exception)
        if run is not None:
            run.tracker.finish(INTERRUPTED if interrupted else FAILED)
        _after_failure(run, run_dir, err, stage.resumable)
        raise
    run.tracker.finish(COMPLETE)
    result = _result(stage, run_id, run_dir, run.manifest, reused=False)
    log.info(
        "run %s complete in %s: %s; %s = %.4g",
        run_id,
        _duration(run.timings["total"]),
        _counted(run.counts) or "no counts",
        stage.headline,
        result["headline"],
    )
    log.info(
        "wrote %s", ", ".join(f"{n} ({_size(a['bytes'])})" for n, a in run.artifacts.items()) or "nothing"
    )
    return result


def _counted(counts: Mapping[str, Any]) -> str:
    """``"2420 windows, 4 mosaics"``: a run's whole-number counts, for the log."""
    return ", ".join(f"{v} {k}" for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool))


def _duration(seconds: float) -> str:
    """``"12.3 s"`` under a minute, else ``"h:mm:ss"``."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{seconds:.1f} s" if seconds < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _size(n: float) -> str:
    """``"1.2 MB"``: a file size in decimal units."""
    unit = "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            break
        n /= 1000
    return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"


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
