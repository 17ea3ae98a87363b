"""Requeue simulation: a stage killed with SIGKILL mid-run and launched again with the same command (what
SLURM + submitit do on pre-emption) lands in the same run directory and finishes there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from radio_curation.tasks import cutouts, merge

ROOT = Path(__file__).resolve().parents[1]
SKY = ["survey.size=512", "survey.mosaics=2", "cutouts.window_size=64"]


@pytest.fixture
def merged(compose):
    """A merge run of a small synthetic sky."""
    cut = cutouts.run(compose("extract", ["stage=cutouts", *SKY]))
    return merge.run(compose("extract", ["stage=merge", f"cutouts_ids=[{cut['run_id']}]"]))["run_id"]


def _launch(args: list[str], runs_dir: Path, data_dir: Path, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args, f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}"],
        cwd=ROOT, stdout=stdout, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the stage finished before it could be killed"
        assert time.monotonic() < deadline, "the stage made no progress"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _run_dirs(runs_dir: Path, stage: str) -> list[Path]:
    return [p for p in (runs_dir / stage).glob("*") if p.is_dir()] if (runs_dir / stage).is_dir() else []


def _requeue(args, runs_dir, data_dir, stage: str, ready) -> dict:
    first = _launch(args, runs_dir, data_dir)
    _kill_when(first, lambda: any(ready(d) for d in _run_dirs(runs_dir, stage)))
    (run_dir,) = _run_dirs(runs_dir, stage)
    assert yaml.safe_load((run_dir / "manifest.yaml").read_text())["status"] == "running"
    second = _launch(args, runs_dir, data_dir, stdout=subprocess.PIPE)
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0
    assert out.strip().splitlines()[-1] == f"run_id={run_dir.name}"
    assert _run_dirs(runs_dir, stage) == [run_dir]
    manifest = yaml.safe_load((run_dir / "manifest.yaml").read_text())
    assert manifest["status"] == "complete" and manifest["attempts"] == 2
    return manifest


@pytest.mark.slow
def test_features_requeue_lands_in_the_same_run(merged, runs_dir, data_dir):
    args = ["extract.py", "stage=features", f"source_id={merged}", "backbone=timm", "backbone.name=test_resnet",
            "resize=64", "batch_size=4", "num_workers=0"]  # fmt: skip
    manifest = _requeue(
        args, runs_dir, data_dir, "features", lambda d: len(list(d.glob("shards/block-*.h5"))) >= 1
    )
    assert manifest["info"]["blocks_done_before"] >= 1  # the relaunch kept what the killed job wrote


@pytest.mark.slow
def test_training_requeue_resumes_from_last_checkpoint(merged, runs_dir, data_dir):
    args = ["train.py", f"source_id={merged}", "backbone=timm", "backbone.name=test_resnet",
            "augmentation.global_size=32", "data.batch_size=16", "data.num_workers=0", "trainer.max_epochs=2",
            "ssl.projection_hidden_dim=64", "ssl.prediction_hidden_dim=64", "ssl.warmup_epochs=0",
            "callbacks.checkpoint.every_n_train_steps=2"]  # fmt: skip
    manifest = _requeue(
        args, runs_dir, data_dir, "train", lambda d: (d / "checkpoints" / "last.ckpt").is_file()
    )
    assert manifest["info"]["resumed_from_step"] >= 2
