"""The run store: ``<runs_dir>/<stage>/<run_id>/`` directories found by looking, no database."""

from __future__ import annotations

import difflib
import fcntl
import logging
import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from radio_curation.errors import RadioCurationError
from radio_curation.runs.manifest import (
    COMPLETE,
    INTERRUPTED,
    MANIFEST,
    RUNNING,
    SCHEME,
    DamagedRunError,
    read_manifest,
    recompute_hint,
    sha256sum,
)

log = logging.getLogger(__name__)

LOCK = ".lock"
#: ``store.verify`` values: what is checked of a parent's artifact when a process first opens it.
VERIFY_MODES = ("checksum", "size")
# Files whose checksum this process has already verified: (path, inode, size, mtime) -> sha256.
_verified: dict[tuple[str, int, int, int], str] = {}


def check_artifact(run_dir: Path, name: str, manifest: dict[str, Any], checksum: bool) -> None:
    """Check artifact ``name`` of a run against its manifest: present, same size, same sha256 (``checksum``).

    Raises
    ------
    DamagedRunError
        Naming the file, what differs, and how to recompute the run.
    """
    path = run_dir / name
    listed = (manifest.get("artifacts") or {}).get(name) or {}
    problem = None
    if not path.is_file():
        problem = "is missing"
    elif listed.get("bytes") is not None and path.stat().st_size != listed["bytes"]:
        problem = f"has {path.stat().st_size} bytes, but the run wrote {listed['bytes']}"
    elif checksum and listed.get("sha256"):
        stat = path.stat()
        key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key not in _verified:
            _verified[key] = sha256sum(path)
        if _verified[key] != listed["sha256"]:
            problem = "does not have the sha256 checksum the run recorded (its content changed)"
    if problem is not None:
        raise DamagedRunError(
            f"{path} (artifact of run {manifest.get('run_id', run_dir.name)}) {problem}; "
            f"{recompute_hint(run_dir, manifest)}"
        )


@dataclass(frozen=True)
class RunRecord:
    """A run found in the store."""

    run_id: str
    stage: str
    dir: Path
    manifest: dict[str, Any]
    verify: str = "checksum"

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == COMPLETE

    @property
    def parents(self) -> list[str]:
        return list(self.manifest.get("parents") or [])

    @property
    def outdated(self) -> bool:
        """Whether the run's ID was computed by an earlier identity scheme (see ``manifest.SCHEME``)."""
        return self.manifest.get("scheme") != SCHEME

    def artifact(self, name: str) -> Path:
        """The path of artifact ``name`` of this run, checked against the manifest.

        The size is always checked; the sha256 too with ``verify="checksum"`` (once per file and process).

        Raises
        ------
        RadioCurationError
            The run does not list ``name``, or the file is missing, truncated or changed.
        """
        if name not in (self.manifest.get("artifacts") or {}):
            raise RadioCurationError(
                f"run {self.run_id} ({self.stage}) has no artifact '{name}' in {self.dir}; "
                f"it lists: {sorted(self.manifest.get('artifacts') or {}) or 'nothing'}"
            )
        check_artifact(self.dir, name, self.manifest, checksum=self.verify == "checksum")
        return self.dir / name


def stage_of(run_id: str) -> str:
    """The stage a run ID belongs to (IDs are ``<stage>-<digest>[-n]``)."""
    return run_id.split("-", 1)[0]


class RunStore:
    """Runs under one root directory, laid out as ``<root>/<stage>/<run_id>/manifest.yaml``."""

    def __init__(self, root: str | os.PathLike, verify: str = "checksum") -> None:
        if verify not in VERIFY_MODES:
            raise RadioCurationError(f"store.verify={verify!r}: choose one of {', '.join(VERIFY_MODES)}")
        self.root = Path(root).expanduser().resolve()
        self.verify = verify

    @classmethod
    def of(cls, cfg: DictConfig) -> RunStore:
        """The store of a composed config: ``paths.runs_dir``, checked as ``store.verify`` says."""
        return cls(cfg.paths.runs_dir, verify=OmegaConf.select(cfg, "store.verify", default="checksum"))

    def run_dir(self, run_id: str) -> Path:
        return self.root / stage_of(run_id) / run_id

    def runs(self, stage: str | None = None) -> list[RunRecord]:
        """Every run with a readable manifest (complete or not), oldest first."""
        records = []
        for path in self.root.glob(f"{stage or '*'}/*/{MANIFEST}"):
            try:
                manifest = read_manifest(path.parent)
            except DamagedRunError:
                continue
            if manifest is not None:
                records.append(self._record(path.parent.name, manifest))
        return sorted(records, key=lambda r: (str(r.manifest.get("created", "")), r.run_id))

    def damaged(self, stage: str | None = None) -> dict[str, str]:
        """Run directories whose manifest cannot be read: run ID -> the problem."""
        found = {}
        for path in self.root.glob(f"{stage or '*'}/*/{MANIFEST}"):
            try:
                read_manifest(path.parent)
            except DamagedRunError as err:
                found[path.parent.name] = str(err)
        return found

    def _record(self, run_id: str, manifest: dict[str, Any]) -> RunRecord:
        return RunRecord(run_id, stage_of(run_id), self.run_dir(run_id), manifest, self.verify)

    def held(self, run_id: str) -> bool:
        """Whether a process holds the run's lock now (works on it, or waits for it)."""
        lock = self.run_dir(run_id) / LOCK
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            return False
        try:
            if not _try_lock(fd):
                return True
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def display_status(self, record: RunRecord) -> str:
        """The status shown to users: ``running`` only while a process holds the run."""
        status = str(record.manifest.get("status"))
        if record.outdated:
            return f"{status}, old run-ID scheme (never reused: rerun its command)"
        if status == RUNNING and not self.held(record.run_id):
            return "interrupted (rerun to resume)"
        if status == INTERRUPTED:
            return f"{status} (rerun, or let SLURM requeue it, to resume)"
        if status != COMPLETE and status != RUNNING:
            return f"{status} (fix the error, rerun to resume)"
        return status

    def _known_ids(self, complete_only: bool) -> list[str]:
        if complete_only:
            return [r.run_id for r in self.runs() if r.complete and not r.outdated]
        return [p.parent.name for p in self.root.glob(f"*/*/{MANIFEST}")]

    def resolve(self, run_id: str, stage: str | None = None, require_complete: bool = True) -> RunRecord:
        """Find run ``run_id`` (or the one run whose ID starts with it).

        Raises
        ------
        RadioCurationError
            Unknown ID (with the closest known IDs), an ID of another stage than ``stage``, or, when
            ``require_complete`` (the run is an input), an incomplete run or one of an earlier ID scheme.
        """
        run_id = str(run_id).strip()
        manifest = read_manifest(self.run_dir(run_id)) if run_id else None
        if manifest is None:
            # A next stage is only offered complete runs, in hints as well.
            known = self._known_ids(complete_only=require_complete)
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
        record = self._record(run_id, manifest)
        if stage is not None and record.stage != stage:
            raise RadioCurationError(
                f"run {run_id} is a '{record.stage}' run, but a '{stage}' run is needed here. "
                f"Find {stage} runs with `radio-curation runs list --stage {stage}`."
            )
        if require_complete and record.outdated:
            raise RadioCurationError(
                f"run {run_id} was made by an earlier version of radio-curation, whose run IDs are computed "
                "differently, so it is not used as an input any more: rerun the command that made it "
                f"(`radio-curation runs show {run_id}` shows it) to make it again under a current ID."
            )
        if require_complete and not record.complete:
            error = f" after: {manifest['error']}" if manifest.get("error") else ""
            raise RadioCurationError(
                f"run {run_id} is not complete (status: {manifest.get('status')}{error}); rerun the "
                "command that created it to finish it, or pick a complete run."
            )
        return record

    def ancestor(self, record: RunRecord, stage: str) -> RunRecord | None:
        """The nearest run of ``stage`` up the lineage of ``record`` (``record`` itself included), or None."""
        queue, seen = deque([record]), {record.run_id}
        while queue:
            current = queue.popleft()
            if current.stage == stage:
                return current
            for parent in current.parents:
                if parent not in seen:
                    seen.add(parent)
                    queue.append(self.resolve(parent))
        return None

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
            fd = _claim(run_dir, wait=not force)
            if fd is None:
                continue
            if force and _is_complete(run_dir):
                os.close(fd)
                continue
            try:
                yield run_id, run_dir
            finally:
                os.close(fd)
            return


def _claim(run_dir: Path, wait: bool) -> int | None:
    """Lock the run directory: the locked file descriptor, or None if another process holds it and not
    ``wait``. A holder that failed may have removed the directory meanwhile: it is then made afresh."""
    while True:
        fd = _open_lock(run_dir)
        if fd is None:
            continue
        if not _try_lock(fd):
            if not wait:
                os.close(fd)
                return None
            log.info("run %s is being worked on by another process; waiting for it", run_dir.name)
            fcntl.flock(fd, fcntl.LOCK_EX)
        if _same_file(fd, run_dir / LOCK):
            return fd
        os.close(fd)


def _open_lock(run_dir: Path) -> int | None:
    """Create the run directory and open its lock file (None: the directory vanished meanwhile).

    A store that cannot be written is a user error."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            return os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            return None
    except OSError as err:
        raise RadioCurationError(
            f"cannot write to the run store: {err.strerror}: {err.filename}; point paths.runs_dir "
            "(or RC_RUNS_DIR) at a writable directory"
        ) from err


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _forced_id(base_id: str, n: int) -> str:
    return base_id if n == 1 else f"{base_id}-{n}"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _is_complete(run_dir: Path) -> bool:
    try:
        manifest = read_manifest(run_dir)
    except DamagedRunError:
        return False
    return manifest is not None and manifest.get("status") == COMPLETE


def first_open_run_id(store: RunStore, base_id: str, force: bool) -> str:
    """The run ID :meth:`RunStore.lease` will most likely pick, without taking a lock (for Hydra's run dir)."""
    if not force:
        return base_id
    n = 1
    while _is_complete(store.run_dir(_forced_id(base_id, n))):
        n += 1
    return _forced_id(base_id, n)
