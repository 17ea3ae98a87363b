"""The run store: ``<runs_dir>/<stage>/<run_id>/`` directories found by looking, no database."""

from __future__ import annotations

import difflib
import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radio_curation.errors import RadioCurationError
from radio_curation.runs.manifest import COMPLETE, MANIFEST, read_manifest

log = logging.getLogger(__name__)

LOCK = ".lock"


@dataclass(frozen=True)
class RunRecord:
    """A run found in the store."""

    run_id: str
    stage: str
    dir: Path
    manifest: dict[str, Any]

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == COMPLETE

    @property
    def parents(self) -> list[str]:
        return list(self.manifest.get("parents") or [])

    def artifact(self, name: str) -> Path:
        """The path of artifact ``name`` of this run; an error if the run does not list it."""
        path = self.dir / name
        if name not in (self.manifest.get("artifacts") or {}) or not path.exists():
            raise RadioCurationError(
                f"run {self.run_id} ({self.stage}) has no artifact '{name}' in {self.dir}; "
                f"it lists: {sorted(self.manifest.get('artifacts') or {}) or 'nothing'}"
            )
        return path


def stage_of(run_id: str) -> str:
    """The stage a run ID belongs to (IDs are ``<stage>-<digest>[-n]``)."""
    return run_id.split("-", 1)[0]


class RunStore:
    """Runs under one root directory, laid out as ``<root>/<stage>/<run_id>/manifest.yaml``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()

    def run_dir(self, run_id: str) -> Path:
        return self.root / stage_of(run_id) / run_id

    def runs(self, stage: str | None = None) -> list[RunRecord]:
        """Every run with a manifest (complete or not), oldest first."""
        pattern = f"{stage or '*'}/*/{MANIFEST}"
        records = []
        for path in self.root.glob(pattern):
            manifest = read_manifest(path.parent)
            if manifest is not None:
                records.append(RunRecord(path.parent.name, path.parent.parent.name, path.parent, manifest))
        return sorted(records, key=lambda r: (str(r.manifest.get("created", "")), r.run_id))

    def _known_ids(self) -> list[str]:
        return [p.parent.name for p in self.root.glob(f"*/*/{MANIFEST}")]

    def resolve(self, run_id: str, stage: str | None = None, require_complete: bool = True) -> RunRecord:
        """Find run ``run_id`` (or the one run whose ID starts with it).

        Raises
        ------
        RadioCurationError
            Unknown ID (with the closest known IDs), an ID of another stage than ``stage``, or an
            incomplete run when ``require_complete``.
        """
        run_id = str(run_id).strip()
        manifest = read_manifest(self.run_dir(run_id)) if run_id else None
        if manifest is None:
            known = self._known_ids()
            prefixed = [k for k in known if run_id and k.startswith(run_id)]
            if len(prefixed) == 1:
                run_id = prefixed[0]
                manifest = read_manifest(self.run_dir(run_id))
            else:
                close = prefixed or difflib.get_close_matches(run_id, known, n=5, cutoff=0.5)
                hint = f" Closest IDs: {', '.join(close)}." if close else ""
                raise RadioCurationError(
                    f"no run '{run_id}' in the run store {self.root}.{hint} "
                    "List runs with `radio-curation runs list`, or point paths.runs_dir / RC_RUNS_DIR "
                    "at the store that holds it."
                )
        record = RunRecord(run_id, stage_of(run_id), self.run_dir(run_id), manifest)
        if stage is not None and record.stage != stage:
            raise RadioCurationError(
                f"run {run_id} is a '{record.stage}' run, but a '{stage}' run is needed here. "
                f"Find {stage} runs with `radio-curation runs list --stage {stage}`."
            )
        if require_complete and not record.complete:
            raise RadioCurationError(
                f"run {run_id} is not complete (status: {manifest.get('status')}); rerun the command "
                "that created it to finish it, or pick a complete run."
            )
        return record

    @contextmanager
    def lease(self, base_id: str, force: bool = False) -> Iterator[tuple[str, Path]]:
        """Hold the run directory for ``base_id`` exclusively while a stage works in it.

        Without ``force`` the run is ``base_id`` itself; if another process holds it, wait for it (it
        may finish, and is then reused). With ``force`` it is the first of ``base_id``, ``base_id-2``,
        ``base_id-3`` ... that is neither complete nor held by another process, so a requeued forced
        run lands in the same directory and concurrent forced runs get distinct ones.
        """
        candidates = [base_id] if not force else (_forced_id(base_id, n) for n in range(1, 10**6))
        for run_id in candidates:
            run_dir = self.run_dir(run_id)
            if force and _is_complete(run_dir):
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            acquired = _try_lock(fd)
            if not acquired and force:
                os.close(fd)
                continue
            if not acquired:
                log.info("run %s is being worked on by another process; waiting for it", run_id)
                fcntl.flock(fd, fcntl.LOCK_EX)
            if force and _is_complete(run_dir):
                os.close(fd)
                continue
            try:
                yield run_id, run_dir
            finally:
                os.close(fd)
            return


def _forced_id(base_id: str, n: int) -> str:
    return base_id if n == 1 else f"{base_id}-{n}"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _is_complete(run_dir: Path) -> bool:
    manifest = read_manifest(run_dir)
    return manifest is not None and manifest.get("status") == COMPLETE


def first_open_run_id(store: RunStore, base_id: str, force: bool) -> str:
    """The run ID :meth:`RunStore.lease` will most likely pick, without taking a lock (for Hydra's run dir)."""
    if not force:
        return base_id
    n = 1
    while _is_complete(store.run_dir(_forced_id(base_id, n))):
        n += 1
    return _forced_id(base_id, n)
