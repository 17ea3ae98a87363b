"""User-facing errors: one readable message, a non-zero exit, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Exit status of a run stopped by a user-facing error (bad input, bad config, wrong run ID).
USER_ERROR_EXIT = 2


class RadioCurationError(Exception):
    """A mistake the user can fix: the message says what is wrong and how to fix it."""


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a :class:`RadioCurationError` into one message on stderr and exit status 2."""
    try:
        yield
    except RadioCurationError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_EXIT)
