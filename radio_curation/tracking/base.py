"""One small interface through which every stage logs; stages never talk to W&B or MLflow directly."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker needs to know about the run it mirrors."""

    run_id: str
    stage: str
    run_dir: Path
    runs_dir: Path
    group: str


class Tracker(Protocol):
    """A destination for a run's parameters, metrics, plots and files."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_image(self, path: Path, key: str | None = None) -> None: ...

    def log_artifact(self, path: Path) -> None: ...

    def finish(self, status: str) -> None: ...


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists are kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class Trackers:
    """All enabled trackers behind the one interface (``logger=[csv,wandb]`` enables several)."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    @classmethod
    def from_config(cls, logger_cfg: DictConfig | None, run: TrackedRun) -> Trackers:
        """Build each tracker of the ``logger`` group; each option is a partial taking the run."""
        factories = [] if logger_cfg is None else [instantiate(node) for node in logger_cfg.values()]
        return cls([factory(run=run) for factory in factories])

    def log_params(self, params: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_params(flatten(params))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        numeric = {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, int | float)}
        if numeric:
            for tracker in self.trackers:
                tracker.log_metrics(numeric, step)

    def log_image(self, path: Path, key: str | None = None) -> None:
        for tracker in self.trackers:
            tracker.log_image(Path(path), key or Path(path).stem)

    def log_artifact(self, path: Path) -> None:
        for tracker in self.trackers:
            tracker.log_artifact(Path(path))

    def finish(self, status: str) -> None:
        for tracker in self.trackers:
            try:
                tracker.finish(status)
            except Exception:  # a dashboard failing must not turn a finished run into a failed one
                log.exception("tracker %s failed to finish", type(tracker).__name__)
