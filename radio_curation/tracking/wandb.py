"""Weights & Biases tracker: W&B run id = our run id, group = experiment name, offline unless configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radio_curation.tracking.base import TrackedRun


class WandbTracker:
    """Mirror a run to W&B (``mode=offline`` writes under the run directory; ``wandb sync`` uploads)."""

    def __init__(
        self,
        run: TrackedRun,
        project: str,
        entity: str | None = None,
        mode: str = "offline",
        tags: list[str] | None = None,
    ) -> None:
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            project=project,
            entity=entity,
            mode=mode,
            dir=str(run.run_dir),
            id=run.run_id,
            name=run.run_id,
            group=run.group,
            job_type=run.stage,
            tags=list(tags or []),
            resume="allow",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def log_image(self, path: Path, key: str | None = None) -> None:
        self.run.log({key or path.stem: self._wandb.Image(str(path))})

    def log_artifact(self, path: Path) -> None:
        self.run.save(str(path), base_path=str(path.parent), policy="now")

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "complete" else 1)
