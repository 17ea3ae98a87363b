"""Ranks before Lightning starts, and Lightning's cluster environment inside and outside srun."""

from __future__ import annotations

import os
import warnings

import pytest
import pytorch_lightning as pl

from radio_curation.distributed import (
    RANK_VARIABLES,
    SRUN_UNUSED,
    cluster_plugins,
    launched_rank,
    lightning_outside_srun,
)

SLURM_TASK = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "train"}


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, 0),
        ({"RANK": "3"}, 3),
        ({"LOCAL_RANK": "1"}, 1),
        ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, 1),
        ({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"}, 2),
        ({"SLURM_NTASKS": "1", "SLURM_PROCID": "5"}, 0),
    ],
)
def test_launched_rank(monkeypatch, env, rank):
    for key in (*RANK_VARIABLES, "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launched_rank() == rank


@pytest.fixture
def srun_on_path(tmp_path, monkeypatch):
    """A machine with SLURM installed (srun on the PATH), this process not started by srun."""
    (tmp_path / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    for key in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(key, raising=False)


def _trainer() -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)


def test_lightning_warns_about_an_unused_srun_unless_the_stage_runs_here_on_purpose(srun_on_path):
    with pytest.warns(UserWarning, match=SRUN_UNUSED):
        _trainer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with lightning_outside_srun():
            _trainer()


def test_inside_a_slurm_task_nothing_is_silenced_and_slurm_drives_lightning(srun_on_path, monkeypatch):
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    # There the warning would mean a misconfigured job: it is not silenced.
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with lightning_outside_srun():
            warnings.warn(
                "The `srun` command is available on your system but is not used.", UserWarning, stacklevel=1
            )
    assert len(seen) == 1
    (plugin,) = cluster_plugins()
    # submitit requeues the job: Lightning's own requeue on SIGUSR1 stays off.
    assert type(plugin).__name__ == "SLURMEnvironment" and plugin.auto_requeue is False


def test_outside_srun_lightning_picks_its_environment(monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert cluster_plugins() == []
    for key, value in {**SLURM_TASK, "SLURM_JOB_NAME": "interactive"}.items():
        monkeypatch.setenv(key, value)
    assert cluster_plugins() == []
