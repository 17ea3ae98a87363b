"""User-facing errors: one readable message, a non-zero exit, no traceback, nothing left behind."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate

#: Exit status of a run stopped by a user-facing error (bad input, bad config, wrong run ID).
USER_ERROR_EXIT = 2


class RadioCurationError(Exception):
    """A mistake the user can fix: the message says what is wrong and how to fix it."""


class UserErrorExit(SystemExit):
    """Exit with :data:`USER_ERROR_EXIT` once ``message`` was printed (a SLURM launcher repeats it)."""

    def __init__(self, message: str) -> None:
        super().__init__(USER_ERROR_EXIT)
        self.message = message


def instantiate_user(node: Any) -> Any:
    """``hydra.utils.instantiate(node)``, re-raising a user mistake as the :class:`RadioCurationError` itself.

    Hydra wraps whatever the target raises in an ``InstantiationException``; the message the factory
    wrote for the user (bad checkpoint, wrong module name, wrong run ID) is the one to show.
    """
    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = _user_cause(err)
        if cause is not None:
            raise cause from err
        raise


def _user_cause(err: BaseException) -> RadioCurationError | None:
    """The :class:`RadioCurationError` ``err`` is or wraps (Hydra wraps errors of the objects it builds)."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, RadioCurationError):
        cause = cause.__cause__
    return cause


def _remove_unstarted_run_dir() -> None:
    """Hydra makes the run directory before the task starts; a run that never started leaves none behind."""
    if not HydraConfig.initialized():
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if run_dir.is_dir() and not (run_dir / "manifest.yaml").exists():
        # Only Hydra's own log can be there: the run store writes a manifest before anything else.
        shutil.rmtree(run_dir, ignore_errors=True)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a :class:`RadioCurationError` (also one Hydra wrapped while building an object) into one
    message on stderr and exit status 2."""
    try:
        yield
    except (RadioCurationError, InstantiationException) as err:
        cause = _user_cause(err)
        if cause is None:
            raise
        _remove_unstarted_run_dir()
        print(f"error: {cause}", file=sys.stderr, flush=True)
        raise UserErrorExit(str(cause)) from None
