"""The manifest of a run: written atomically, so it is either the old one or the new one, never half."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import yaml

MANIFEST = "manifest.yaml"
COMPLETE = "complete"
#: Stopped from outside (SLURM preemption, time-out or requeue, Ctrl-C), not by an error of its own:
#: the same command, or SLURM's requeue of the job, resumes it.
INTERRUPTED = "interrupted"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace ``run_dir/manifest.yaml``."""
    write_atomic(run_dir / MANIFEST, yaml.safe_dump(manifest, sort_keys=False))


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The manifest of ``run_dir``, or None when it has none (a run that never started)."""
    path = run_dir / MANIFEST
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text())


def sha256sum(path: Path, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()
