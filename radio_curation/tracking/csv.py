"""CSV tracker: metrics and parameters as plain files in the run directory."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

from radio_curation.tracking.base import TrackedRun


class CsvTracker:
    """Appends to ``<run_dir>/<subdir>/{params,metrics,files}.csv``."""

    def __init__(self, run: TrackedRun, subdir: str = "csv") -> None:
        self.dir = run.run_dir / subdir
        self.dir.mkdir(parents=True, exist_ok=True)

    def _append(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        path = self.dir / name
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(header)
            writer.writerows(rows)

    def log_params(self, params: dict[str, Any]) -> None:
        self._append("params.csv", ["name", "value"], [[k, v] for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = time.time()
        self._append(
            "metrics.csv", ["time", "step", "name", "value"], [[now, step, k, v] for k, v in metrics.items()]
        )

    def log_image(self, path: Path, key: str | None = None) -> None:
        self._append("files.csv", ["kind", "key", "path"], [["image", key, str(path)]])

    def log_artifact(self, path: Path) -> None:
        self._append("files.csv", ["kind", "key", "path"], [["artifact", path.name, str(path)]])

    def finish(self, status: str) -> None:
        self._append("params.csv", ["name", "value"], [["status", status]])
