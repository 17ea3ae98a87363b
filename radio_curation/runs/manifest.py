"""The manifest of a run: written atomically, so it is either the old one or the new one, never half.

A run's ``status`` is one of:

``running``
    A process works on it, or one did and was killed (``runs list`` shows ``interrupted`` when no process
    holds the run's lock). Running the same command again resumes it.
``complete``
    Finished; the only status a later stage accepts as a parent.
``failed``
    Stopped by an error after it had saved work worth resuming (feature blocks, k-means levels, mosaic
    parts, training checkpoints); ``error`` holds the message. Fix the cause and run the same command
    again to resume. A run that fails before saving such work is removed instead, so a failure leaves
    nothing behind.
``interrupted``
    Stopped from outside (a SLURM requeue, preemption or time limit, Ctrl-C) while it ran: the same
    command, or SLURM's requeue of the job, resumes it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from radio_curation.atomic import write_atomic
from radio_curation.errors import RadioCurationError

MANIFEST = "manifest.yaml"
# A truncated YAML file often still parses: the closing line tells a whole manifest from the start of one.
_FIRST_LINE = "# radio-curation run manifest\n"
_LAST_LINE = "# end of manifest\n"
RUNNING = "running"
COMPLETE = "complete"
FAILED = "failed"
INTERRUPTED = "interrupted"
#: How run IDs are computed (``scheme`` in every manifest). Runs of an earlier scheme (manifests without it)
#: are listed but never reused nor taken as inputs: their IDs do not say what the current code would make.
SCHEME = 2


class DamagedRunError(RadioCurationError):
    """A run's manifest or one of its artifacts is not what the run wrote (truncated, changed, missing)."""


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace ``run_dir/manifest.yaml``."""
    write_atomic(run_dir / MANIFEST, _FIRST_LINE + yaml.safe_dump(manifest, sort_keys=False) + _LAST_LINE)


def recompute_hint(run_dir: Path, manifest: dict[str, Any] | None = None) -> str:
    """How to recompute a damaged run under the same ID: remove it and rerun the command that made it."""
    command = (manifest or {}).get("command")
    again = f"`python {command}`" if command else "the command that made it"
    return f"remove {run_dir} and run {again} again to recompute it under the same ID"


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The manifest of ``run_dir``, or None when it has none (a run that never started).

    Raises
    ------
    DamagedRunError
        If the file is not a whole manifest (truncated or overwritten: manifests are written atomically,
        so this is damage from outside).
    """
    path = run_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        text = path.read_text()
        manifest = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        problem = str(err).splitlines()[0]
        raise DamagedRunError(
            f"the manifest {path} is damaged ({problem}); {recompute_hint(run_dir)}"
        ) from err
    if text.startswith(_FIRST_LINE) and not text.endswith(_LAST_LINE):
        raise DamagedRunError(
            f"the manifest {path} is damaged (truncated: its last line is missing); "
            f"{recompute_hint(run_dir, manifest if isinstance(manifest, dict) else None)}"
        )
    if not isinstance(manifest, dict) or not {"run_id", "stage", "status"} <= manifest.keys():
        raise DamagedRunError(
            f"the manifest {path} is damaged (it is not a whole run manifest); {recompute_hint(run_dir)}"
        )
    return manifest


def sha256sum(path: Path, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()
