"""Progress bars with rates for long loops (on stderr, so stdout stays machine-readable)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm


class ProgressBar:
    """A handle on a running bar; call :meth:`advance` as work completes."""

    def __init__(self, bar: tqdm) -> None:
        self._bar = bar

    def advance(self, n: float = 1) -> None:
        """Mark ``n`` more units of work as done."""
        self._bar.update(n)

    def describe(self, text: str) -> None:
        """Show ``text`` after the bar (e.g. the current loss)."""
        self._bar.set_postfix_str(text, refresh=False)


@contextmanager
def progress(total: float | None, description: str, unit: str = "it") -> Iterator[ProgressBar]:
    """Show a progress bar with the rate in ``unit``/s for ``total`` units of work.

    The bar is shown only on an interactive terminal, so batch logs stay clean.
    """
    with tqdm(
        total=total, desc=description, unit=unit, unit_scale=True, dynamic_ncols=True, disable=None
    ) as bar:
        yield ProgressBar(bar)
