"""``train.py`` on the command line: killed mid-training, the same command resumes from last.ckpt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from radio_curation.runs.store import RunStore
from tests.conftest import CONFIG_DIR
from tests.ssl.conftest import tiny

REPO = CONFIG_DIR.parent


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "backbone.pt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "augment_on"), [(0, "workers"), (2, "workers"), (0, "device")])
def test_killed_training_resumes_when_the_same_command_is_run_again_and_ends_as_an_uninterrupted_run(
    workers, augment_on, merge_id, runs_dir, data_dir, tmp_path
):
    # The views are made by the loader (in its worker processes, or in the main one without) or by the model.
    command = [
        sys.executable,
        "train.py",
        f"paths.runs_dir={runs_dir}",
        f"paths.data_dir={data_dir}",
        "logger=csv",
        *tiny(
            "byol",
            f"source_id={merge_id}",
            "trainer.max_epochs=6",
            "callbacks.checkpoint.every_n_train_steps=5",
            f"data.num_workers={workers}",
            f"data.augment_on={augment_on}",
        ),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "first.log"
    with open(log, "w") as out, subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=out) as first:
        deadline = time.monotonic() + 240
        checkpoints = runs_dir / "train"
        while not list(checkpoints.glob("*/checkpoints/step00000010.ckpt")):
            assert first.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no step checkpoint appeared"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
    (run_dir,) = checkpoints.iterdir()
    assert RunStore(runs_dir).resolve(run_dir.name, require_complete=False).manifest["status"] == "running"

    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.strip().splitlines()[-1] == f"run_id={run_dir.name}"
    manifest = RunStore(runs_dir).resolve(run_dir.name, stage="train").manifest
    assert manifest["attempts"] == 2
    # Killed right after step 10's checkpoint appeared: last.ckpt holds step 5 or step 10.
    assert manifest["info"]["resumed_from_step"] in (5, 10)
    assert manifest["counts"]["epochs"] == 6
    steps_per_epoch = RunStore(runs_dir).resolve(merge_id).manifest["counts"]["windows"] // 16
    assert manifest["info"]["resumed_from_step"] % steps_per_epoch != 0  # resumed mid-epoch

    # The same training uninterrupted (force=true: a new run beside the first) ends with the same weights.
    reference = subprocess.run(
        [*command, "force=true"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    reference_dir = checkpoints / reference.stdout.strip().splitlines()[-1].removeprefix("run_id=")
    assert reference_dir != run_dir
    assert RunStore(runs_dir).resolve(reference_dir.name).manifest["attempts"] == 1
    got, want = _weights(run_dir), _weights(reference_dir)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.slow
@pytest.mark.parametrize("max_num_timeout", [0, 1])
def test_a_timed_out_job_is_requeued_up_to_max_num_timeout_and_resumes(
    max_num_timeout, merge_id, runs_dir, data_dir, tmp_path
):
    # Through Hydra's submitit plugin with its local executor: the job gets the time-limit signal at step 6;
    # the launcher's checkpoint resubmits the same overrides, which resume the same run from last.ckpt.
    marker = tmp_path / "signalled"
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        f"+hydra.launcher.max_num_timeout={max_num_timeout}",
        f"paths.runs_dir={runs_dir}",
        f"paths.data_dir={data_dir}",
        "logger=csv",
        *tiny(
            "byol",
            f"source_id={merge_id}",
            "trainer.max_epochs=3",
            "callbacks.checkpoint.every_n_train_steps=3",
            "+callbacks.timeout._target_=tests.ssl.callbacks.TimeOutOnce",
            "+callbacks.timeout.step=6",
            f"+callbacks.timeout.marker={marker}",
        ),
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert marker.exists(), done.stderr[-3000:]
    assert marker.read_text() == "6"
    (run_dir,) = (runs_dir / "train").iterdir()
    manifest = RunStore(runs_dir).resolve(run_dir.name, require_complete=False).manifest
    if max_num_timeout == 0:
        assert done.returncode != 0 and "timed-out too many times" in done.stdout + done.stderr
        assert manifest["status"] == "failed" and manifest["attempts"] == 1
    else:
        assert done.returncode == 0, done.stderr[-3000:]
        assert manifest["status"] == "complete" and manifest["attempts"] == 2
        assert manifest["info"]["resumed_from_step"] == 6  # the step checkpoint before the signal
        assert manifest["counts"]["epochs"] == 3
