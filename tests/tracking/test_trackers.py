from __future__ import annotations

import csv
import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread
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


def _wandb_records(path: Path) -> Iterator:
    """The protobuf records of an offline ``.wandb`` file (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    block, header = 32768, 7
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks = header, []
    while pos + header <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        if left < header or (length == 0 and kind == 0):  # padding up to the next block
            pos += left
            continue
        chunks.append(data[pos + header : pos + header + length])
        pos += header + length
        if kind in (1, 4):  # a FULL record or the LAST piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def _wandb_offline_run(run_dir: Path) -> dict:
    """Config, summary, run and exit records of the one offline W&B run under ``run_dir``."""
    (folder,) = (run_dir / "wandb").glob("offline-run-*-toy-0123456789")
    (log,) = folder.glob("*.wandb")
    read = {"folder": folder, "config": {}, "summary": {}}
    for record in _wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind in ("config", "summary"):
            for item in getattr(record, kind).update:
                key = item.key or ".".join(item.nested_key)
                read[kind][key] = json.loads(item.value_json)
        elif kind in ("run", "exit"):
            read[kind] = getattr(record, kind)
    return read


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

    offline = _wandb_offline_run(run.run_dir)
    assert offline["run"].run_id == "toy-0123456789" and offline["run"].run_group == "tests"
    assert offline["run"].job_type == "toy"
    assert offline["config"]["sampler.target_size"] == 100
    assert offline["summary"]["loss"] == 1.25
    assert offline["exit"].exit_code == 0
    logged = offline["folder"] / "files" / offline["summary"]["sizes.path"]
    np.testing.assert_array_equal(imread(logged), imread(run.run_dir / "sizes.png"))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run.runs_dir / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert found.data.params["sampler.target_size"] == "100"
    assert found.data.metrics["loss"] == 1.25
    assert found.info.status == "FINISHED"
    assert found.data.tags["radio_curation.run_id"] == "toy-0123456789"
    assert (run.runs_dir / "mlflow-artifacts").is_dir()
