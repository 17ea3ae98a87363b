"""User-facing errors: one readable message, a non-zero exit, no traceback, nothing left behind."""

from __future__ import annotations

import difflib
import fcntl
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.utils import instantiate
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from radio_curation.logs import quiet_third_party

#: Exit status of a run stopped by a user-facing error (bad input, bad config, wrong run ID).
USER_ERROR_EXIT = 2


class RadioCurationError(Exception):
    """A mistake the user can fix: the message says what is wrong and how to fix it."""


class EmptyResultError(RadioCurationError):
    """A stage would produce no rows; the message says why (the same command would again, so nothing is
    kept of the run)."""


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
        cause = user_cause(err)
        if cause is not None:
            raise cause from err
        raise


def user_cause(err: BaseException) -> RadioCurationError | None:
    """The :class:`RadioCurationError` ``err`` is or wraps (Hydra wraps errors of the objects it builds;
    OmegaConf those of a resolver, as the exception it was handling)."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, RadioCurationError):
        cause = cause.__cause__ or (cause.__context__ if isinstance(cause, OmegaConfBaseException) else None)
    return cause


def _remove_unstarted_run_dir() -> None:
    """Hydra makes the run directory before the task starts; a run that never started leaves none behind."""
    if not HydraConfig.initialized():
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if not run_dir.is_dir() or (run_dir / "manifest.yaml").exists():
        return
    # Only Hydra's own log can be there: the run store writes a manifest before anything else. Another
    # process may have just claimed the directory (it holds the lock before it writes the manifest).
    lock = run_dir / ".lock"
    if lock.exists():
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        finally:
            os.close(fd)
    shutil.rmtree(run_dir, ignore_errors=True)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a :class:`RadioCurationError` (also one Hydra or OmegaConf wrapped while building an object or
    resolving an interpolation) into one message on stderr and exit status 2."""
    global _task_started
    _task_started = True
    try:
        yield
    except (RadioCurationError, InstantiationException, OmegaConfBaseException) as err:
        cause = user_cause(err)
        if cause is None:
            raise
        _remove_unstarted_run_dir()
        print(f"error: {cause}", file=sys.stderr, flush=True)
        raise UserErrorExit(str(cause)) from None


# Set once the task function runs: an OSError before that is Hydra failing to make the run directory.
_task_started = False


def close_matches(word: str, options: list[str], prefix: str = "", n: int = 3, cutoff: float = 0.6) -> str:
    """`` (did you mean A or B?)`` with the ``options`` closest to ``word`` (difflib), or ``""``."""
    close = difflib.get_close_matches(word, options, n=n, cutoff=cutoff)
    return f" (did you mean {' or '.join(prefix + c for c in close)}?)" if close else ""


def config_error_line(err: BaseException) -> str | None:
    """One line for a mistake in the command line or config that Hydra reports, else None.

    Unknown group options keep Hydra's list of the available ones; unknown keys get the closest keys.
    """
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        options = [str(o) for o in err.options or []]
        if not group or not options:
            return str(err).splitlines()[0]
        return (
            f"{group}={option} is not an option{close_matches(option, options)}; available options for "
            f"{group}: {', '.join(options)}"
        )
    cause = err.__cause__
    if isinstance(err, ConfigCompositionException) and isinstance(
        cause, ConfigKeyError | ConfigAttributeError
    ):
        key = str(getattr(cause, "full_key", None) or cause.key)
        parent = getattr(cause, "parent_node", None)
        prefix = key[: -len(str(cause.key))]
        close = close_matches(str(cause.key), [str(k) for k in parent], prefix) if parent is not None else ""
        return f"unknown config key '{key}'{close}; to add a new key, prefix it with +: +{key}=..."
    if isinstance(err, ConfigCompositionException | OverrideParseException | OmegaConfBaseException):
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        lines = [line for line in lines if not line.startswith(("full_key:", "object_type=", "See https"))]
        return "; ".join(lines) or type(err).__name__
    return None


def run_main(main: Callable[[], None]) -> None:
    """Call a ``@hydra.main`` entry point; Hydra's config errors and an unwritable run store become one
    message on stderr and exit status 2, like every other user error."""
    # Hydra then raises its errors here instead of printing them with a trimmed traceback and exit 1.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    # Before Hydra composes the config: resolving the run directory imports the stage (and faiss).
    quiet_third_party()
    try:
        main()
    except Exception as err:
        user = user_cause(err)
        line = str(user) if user is not None else config_error_line(err)
        if line is None and isinstance(err, OSError) and not _task_started:
            line = (
                f"cannot create the run directory: {err.strerror}: {err.filename}; point paths.runs_dir "
                "(or RC_RUNS_DIR) at a writable directory"
            )
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr, flush=True)
        raise UserErrorExit(line) from None
