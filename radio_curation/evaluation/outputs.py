"""Where an evaluation writes: PNGs and ``metrics.json`` as run artifacts, mirrored to the trackers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from radio_curation.runs.store import RunRecord


class RunHandle(Protocol):
    """What an evaluation needs of the run it runs as (the evaluate stage's run handle)."""

    run_id: str
    dir: Path
    parents: list[RunRecord]
    tracker: Any
    metrics: dict[str, Any]
    counts: dict[str, Any]
    info: dict[str, Any]

    def artifact(self, name: str) -> AbstractContextManager[Path]: ...

    def timer(self, name: str) -> AbstractContextManager[None]: ...


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to metrics.json")


class Outputs:
    """An evaluation's artifacts in its run directory, each logged to the run's trackers.

    Parameters
    ----------
    run
        The run the evaluation runs as.
    name
        The evaluation (``eval`` in ``metrics.json``).
    dpi
        Resolution of the PNGs.
    """

    def __init__(self, run: RunHandle, name: str, dpi: int) -> None:
        self.run = run
        self.name = name
        self.dpi = dpi
        self.images: list[Path] = []

    def timer(self, name: str) -> AbstractContextManager[None]:
        """Record the wall time of a block in the run's ``timings.<name>``."""
        return self.run.timer(name)

    @contextmanager
    def artifact(self, name: str, log: bool = True) -> Iterator[Path]:
        """Yield a temporary path for artifact ``name``: in place, and logged to the trackers unless ``log``
        is false, only once written."""
        with self.run.artifact(name) as tmp:
            yield tmp
        if log:
            self.run.tracker.log_artifact(self.run.dir / name)

    def png(self, name: str, plot: Callable[..., Path], *args: Any, **kwargs: Any) -> Path:
        """Draw ``plot(*args, path=<tmp>, dpi=dpi, **kwargs)`` into artifact ``name``."""
        with self.run.artifact(name) as tmp:
            plot(*args, path=tmp, dpi=self.dpi, **kwargs)
        path = self.run.dir / name
        self.run.tracker.log_image(path)
        self.images.append(path)
        return path

    def finish(
        self,
        metrics: dict[str, float],
        counts: dict[str, int],
        details: dict[str, Any],
        info: dict[str, Any] | None = None,
    ) -> None:
        """Record metrics, counts and ``info`` in the run's manifest and write ``metrics.json``."""
        self.run.metrics.update(metrics)
        self.run.counts.update(counts)
        self.run.info.update(info or {})
        payload = {
            "eval": self.name,
            "run_id": self.run.run_id,
            "parents": [p.run_id for p in self.run.parents],
            **counts,
            "metrics": metrics,
            **details,
        }
        with self.artifact("metrics.json") as tmp:
            tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
