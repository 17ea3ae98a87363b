"""MLflow tracker: a local store under the runs directory by default, or any tracking server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from radio_curation.tracking.base import TrackedRun

RUN_ID_TAG = "radio_curation.run_id"


class MlflowTracker:
    """Mirror a run to MLflow; the run is tagged with our run ID and found again when a run resumes."""

    def __init__(
        self, run: TrackedRun, tracking_uri: str | None = None, experiment: str | None = None
    ) -> None:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self._metric, self._param = Metric, Param
        uri = tracking_uri or f"sqlite:///{run.runs_dir / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        name = experiment or run.group
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = None if tracking_uri else (run.runs_dir / "mlflow-artifacts").as_uri()
            experiment_id = self.client.create_experiment(name, artifact_location=location)
        previous = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run.run_id}'", max_results=1
        )
        if previous:
            self.mlflow_run_id = previous[0].info.run_id
            self.client.update_run(self.mlflow_run_id, status="RUNNING")
        else:
            created = self.client.create_run(
                experiment_id, run_name=run.run_id, tags={RUN_ID_TAG: run.run_id, "stage": run.stage}
            )
            self.mlflow_run_id = created.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        # MLflow refuses to change a logged parameter, so a resumed run only adds the new ones.
        logged = self.client.get_run(self.mlflow_run_id).data.params
        fresh = [self._param(k, str(v)[:6000]) for k, v in params.items() if k not in logged]
        for start in range(0, len(fresh), 100):
            self.client.log_batch(self.mlflow_run_id, params=fresh[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        batch = [self._metric(k, v, now, step or 0) for k, v in metrics.items()]
        self.client.log_batch(self.mlflow_run_id, metrics=batch)

    def log_image(self, path: Path, key: str | None = None) -> None:
        self.client.log_artifact(self.mlflow_run_id, str(path), artifact_path="plots")

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.mlflow_run_id, str(path))

    def finish(self, status: str) -> None:
        self.client.set_terminated(
            self.mlflow_run_id, status="FINISHED" if status == "complete" else "FAILED"
        )
