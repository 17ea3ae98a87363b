from __future__ import annotations

import csv
import socket
from pathlib import Path

import matplotlib
import pytest
from omegaconf import OmegaConf

from radio_curation.tracking.base import TrackedRun, Trackers

matplotlib.use("Agg")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open an internet connection fails the test."""

    def refuse(self, address, *args, **kwargs):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "localhost", "::1") and not str(host).startswith("/"):
            raise AssertionError(f"tracker tried to reach {address}")
        return real_connect(self, address, *args, **kwargs)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _plot(path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)
    return path


def _tracked(tmp_path: Path) -> TrackedRun:
    run_dir = tmp_path / "runs" / "toy" / "toy-0123456789"
    run_dir.mkdir(parents=True)
    return TrackedRun("toy-0123456789", "toy", run_dir, tmp_path / "runs", "tests")


def _logger_cfg(*names: str):
    nodes = {
        "csv": {"_target_": "radio_curation.tracking.csv.CsvTracker", "_partial_": True},
        "wandb": {
            "_target_": "radio_curation.tracking.wandb.WandbTracker",
            "_partial_": True,
            "project": "radio-curation-tests",
            "mode": "offline",
        },
        "mlflow": {"_target_": "radio_curation.tracking.mlflow.MlflowTracker", "_partial_": True},
    }
    return OmegaConf.create({name: nodes[name] for name in names})


def test_csv_tracker_writes_params_metrics_and_files(tmp_path):
    run = _tracked(tmp_path)
    trackers = Trackers.from_config(_logger_cfg("csv"), run)
    trackers.log_params({"cutouts": {"window_size": 128}})
    trackers.log_metrics({"loss": 0.5, "counts": {"rows": 10}, "label": "not a number"}, step=3)
    trackers.log_image(_plot(run.run_dir / "plot.png"))
    trackers.finish("complete")
    rows = list(csv.DictReader((run.run_dir / "csv" / "metrics.csv").read_text().splitlines()))
    assert {(r["step"], r["name"], float(r["value"])) for r in rows} == {
        ("3", "loss", 0.5),
        ("3", "counts.rows", 10.0),
    }
    params = dict(csv.reader((run.run_dir / "csv" / "params.csv").read_text().splitlines()))
    assert params["cutouts.window_size"] == "128" and params["status"] == "complete"
    assert "plot.png" in (run.run_dir / "csv" / "files.csv").read_text()


def test_wandb_offline_and_mlflow_local_together_stay_on_disk(tmp_path, no_network, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    run = _tracked(tmp_path)
    trackers = Trackers.from_config(_logger_cfg("wandb", "mlflow"), run)
    trackers.log_params({"sampler": {"target_size": 100}})
    trackers.log_metrics({"loss": 1.25}, step=1)
    trackers.log_image(_plot(run.run_dir / "sizes.png"))
    trackers.finish("complete")

    offline = list((run.run_dir / "wandb").glob("offline-run-*-toy-0123456789"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run.runs_dir / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert found.data.params["sampler.target_size"] == "100"
    assert found.data.metrics["loss"] == 1.25
    assert found.info.status == "FINISHED"
    assert found.data.tags["radio_curation.run_id"] == "toy-0123456789"
    assert (run.runs_dir / "mlflow-artifacts").is_dir()
