"""Run an entry point and SIGKILL it right after the ``n``-th call of one of its functions returns.

``python tests/kill_after.py radio_curation.tasks.merge:write_index 1 extract.py stage=merge ...``

The process dies as a killed job does (no exception handler, no ``finally``, no atexit): the tests use it to
stop a stage at a chosen point, e.g. with an artifact written to its temporary name but not yet moved into
place, and then check that a rerun resumes to the result of an uninterrupted run.
"""

from __future__ import annotations

import functools
import importlib
import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def kill_after(target: str, n: int) -> None:
    """Wrap ``module:function`` so that the process kills itself once its ``n``-th call has returned."""
    module_name, name = target.split(":")
    module = importlib.import_module(module_name)
    original = getattr(module, name)
    calls = 0

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        nonlocal calls
        result = original(*args, **kwargs)
        calls += 1
        if calls == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(module, name, wrapper)


def run_killed(target: str, n: int, script: str, args: list[str], cwd: Path) -> None:
    """Run entry point ``script`` (e.g. ``"extract.py"``) with ``args`` from the command line, killed once
    ``target`` has returned ``n`` times; fails if the process ended any other way."""
    command = [sys.executable, __file__, target, str(n), str(ROOT / script), *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    if done.returncode != -signal.SIGKILL:
        raise AssertionError(f"{script} was not killed (exit {done.returncode}):\n{done.stderr[-3000:]}")


if __name__ == "__main__":
    # Run as a script, this folder comes first on sys.path, where tests/ssl would hide the standard ssl.
    sys.path.remove(os.path.dirname(os.path.abspath(__file__)))
    target, count, script, *overrides = sys.argv[1:]
    kill_after(target, int(count))
    sys.argv = [script, *overrides]
    runpy.run_path(script, run_name="__main__")
