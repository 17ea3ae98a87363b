"""The cluster path against a running SLURM (``.ci/slurm-up.sh`` starts a single-node one): "Try it on one
machine" of docs/slurm.md, requeued and timed-out jobs, and a failing job, through the project's launchers.

Skipped where no SLURM answers, unless ``RC_REQUIRE_SLURM=1`` (``.ci/run`` sets it): then that is a failure.
Jobs ask for one CPU and 2 GB (the site settings below), so two run side by side on a 2-core machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml

from radio_curation.curation.clusters import Hierarchy
from radio_curation.features.matrix import FeatureFile
from radio_curation.runs.store import RunStore
from radio_curation.tasks import curate as curate_task
from radio_curation.tasks import cutouts as cutouts_task
from radio_curation.tasks import features as features_task
from radio_curation.tasks import merge as merge_task
from tests.conftest import CONFIG_DIR
from tests.curation.conftest import write_features_run
from tests.curation.planted import planted
from tests.ssl.conftest import tiny

pytestmark = pytest.mark.slurm

ROOT = CONFIG_DIR.parent
SITE = "partition: debug\ncpus_per_task: 1\nmem_gb: 2\n"
SKY = ["survey.mosaics=2", "survey.size=256", "cutouts.window_size=32"]


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "--noheader"], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="module", autouse=True)
def slurm() -> None:
    if _slurm_answers():
        return
    if os.environ.get("RC_REQUIRE_SLURM") == "1":
        pytest.fail("RC_REQUIRE_SLURM=1 but no SLURM answers (sinfo): .ci/slurm-up.sh starts one")
    pytest.skip("no SLURM answers here (sinfo); .ci/slurm-up.sh starts a single-node one")


def _env(**extra: str) -> dict[str, str]:
    """The test's Python and checkout for the jobs (sbatch passes the environment on), one thread each."""
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(path),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def _cancel_jobs_under(directory: Path) -> None:
    """scancel every job submitted from ``directory`` (submitit keeps a folder per job)."""
    ids = sorted(
        {p.name for folder in directory.rglob(".submitit") for p in folder.iterdir() if p.name.isdigit()}
    )
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


@pytest.fixture
def cleanup(tmp_path: Path) -> Iterator[None]:
    """No job of a test is left queued or running after it, whatever happened."""
    yield
    _cancel_jobs_under(tmp_path)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The documented configs/local/slurm.yaml for this machine, as an extra config dir."""
    (tmp_path / "site" / "local").mkdir(parents=True)
    (tmp_path / "site" / "local" / "slurm.yaml").write_text(SITE)
    return tmp_path / "site"


def _sweep(entry: str, overrides: list[str], site: Path, runs_dir: Path, data_dir: Path) -> list[str]:
    return [
        sys.executable, entry, "-m", "--config-dir", str(site), "hydra/launcher=slurm_cpu", *overrides,
        f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}", "logger=csv",
    ]  # fmt: skip


def _wait(
    condition: Callable[[], bool], seconds: float, what: str, proc: subprocess.Popen, log: Path
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the launcher ended while waiting for {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds:.0f} s for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _job_id(runs_dir: Path) -> str | None:
    """The one job a single-job sweep submitted, once submitit has made its folder."""
    # submitit writes into a folder named by a random hex id until sbatch has answered with the job ID.
    folders = [p for folder in runs_dir.rglob(".submitit") for p in folder.iterdir() if p.name.isdigit()]
    return folders[0].name if folders else None


def _job_state(job: str) -> str:
    done = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%T", "--jobs", job], capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip()


def _status(run_dir: Path) -> str | None:
    manifest = run_dir / "manifest.yaml"
    return yaml.safe_load(manifest.read_text())["status"] if manifest.is_file() else None


def _start_now(job: str) -> None:
    """Let a requeued job start at once: SLURM holds a requeued job for two minutes (its begin time)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = _job_state(job)
        if state == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)
        elif state not in ("", "REQUEUED", "COMPLETING", "REQUEUE_HOLD", "REQUEUE_FED"):
            return
        time.sleep(0.5)


def _requeue_when_interrupted(job: str, run_dir: Path, proc: subprocess.Popen, log: Path) -> None:
    """``scontrol requeue``: the job stops, its run says ``interrupted`` (not failed) while it waits."""
    subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
    _wait(lambda: _status(run_dir) == "interrupted", 120, "the requeued run to say interrupted", proc, log)
    _start_now(job)


@pytest.fixture
def merge_id(compose) -> str:
    cutouts = cutouts_task.run(compose("extract", ["stage=cutouts", *SKY]))["run_id"]
    return merge_task.run(compose("extract", ["stage=merge", f"cutouts_ids=[{cutouts}]"]))["run_id"]


def test_a_failing_job_reports_its_one_line_error_in_the_launching_terminal(
    site, runs_dir, data_dir, cleanup
):
    command = _sweep(
        "extract.py", ["stage=cutouts", *SKY, "survey.on_error=ignore"], site, runs_dir, data_dir
    )
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: job #0 (stage=cutouts survey.mosaics=2 survey.size=256 cutouts.window_size=32 "
        f"survey.on_error=ignore paths.runs_dir={runs_dir} paths.data_dir={data_dir} logger=csv): "
        "survey.on_error=ignore: expected one of fail, skip (did you mean skip?)"
    ]
    assert "Traceback" not in done.stderr
    # Without SLURM accounting the launcher says once that it follows jobs with squeue; sacct's own
    # complaint and submitit's per-poll warning never reach the terminal.
    output = done.stdout + done.stderr
    assert output.count("sacct cannot report job states") <= 1
    assert "Bypassing sacct error" not in output
    assert "Slurm accounting storage is disabled" not in [line.strip() for line in output.splitlines()]


@pytest.mark.slow
def test_features_job_requeued_after_its_first_block_finishes_as_an_uninterrupted_run(
    compose, merge_id, site, runs_dir, data_dir, tmp_path, cleanup
):
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", num_classes=0, in_chans=1).state_dict(), weights)
    overrides = [
        "stage=features", f"source_id={merge_id}", "backbone=timm", "backbone.name=resnet18",
        f"backbone.checkpoint={weights}", "resize=96", "batch_size=4", "num_workers=0", "accelerator=cpu",
    ]  # fmt: skip
    reference = features_task.run(compose("extract", overrides))
    run_dir = runs_dir / "features" / f"{reference['run_id']}-2"
    log = tmp_path / "launcher.log"
    command = _sweep("extract.py", [*overrides, "force=true"], site, runs_dir, data_dir)
    with (
        open(log, "w") as out,
        subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=out, stderr=out) as proc,
    ):
        _wait(lambda: any((run_dir / "shards").glob("block-*.h5")), 300, "the first block", proc, log)
        _requeue_when_interrupted(_job_id(runs_dir), run_dir, proc, log)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    manifest = yaml.safe_load((run_dir / "manifest.yaml").read_text())
    assert manifest["status"] == "complete" and manifest["attempts"] == 2
    assert manifest["info"]["blocks_done_before"] >= 1
    assert sorted(p.name for p in (runs_dir / "features").iterdir()) == [reference["run_id"], run_dir.name]
    with (
        FeatureFile(run_dir / "features.h5") as got,
        FeatureFile(Path(reference["run_dir"]) / "features.h5") as want,
    ):
        np.testing.assert_array_equal(got.cutout_ids, want.cutout_ids)
        np.testing.assert_allclose(got.read(), want.read(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_distributed_clustering_on_two_slurm_tasks_gives_the_single_process_clustering(
    compose, site, runs_dir, data_dir, tmp_path, cleanup
):
    x, _ = planted([1200, 500, 100, 60, 40], dim=12, separation=20.0, seed=0)
    features_id = write_features_run(runs_dir, x.astype(np.float16))
    small = ["clustering.n_clusters=[30,8,3]", "clustering.n_resampling_steps=[1,2,2]", "target_size=300"]
    reference = curate_task.run(compose("curate", [f"features_id={features_id}", *small]))
    # One job of two tasks (one CPU each): the tasks are the ranks of a gloo process group.
    tasks = ["clustering/backend=distributed", "hydra.launcher.tasks_per_node=2", "hydra.launcher.mem_gb=4"]
    command = _sweep("curate.py", [f"features_id={features_id}", *small, *tasks], site, runs_dir, data_dir)
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (p for p in (runs_dir / "cluster").iterdir() if p.name != reference["clusters_id"])
    manifest = yaml.safe_load((run_dir / "manifest.yaml").read_text())
    assert manifest["status"] == "complete" and manifest["info"]["backend"]["ranks"] == 2
    assert manifest["info"]["backend"]["process_group"] == "gloo"
    want = Hierarchy.load(runs_dir / "cluster" / reference["clusters_id"] / "clusters.h5")
    got = Hierarchy.load(run_dir / "clusters.h5")
    np.testing.assert_array_equal(got.cutout_id, want.cutout_id)
    for level_got, level_want in zip(got.levels, want.levels, strict=True):
        np.testing.assert_array_equal(level_got.assignment, level_want.assignment)
        np.testing.assert_allclose(level_got.resampling_objective, level_want.resampling_objective, rtol=1e-3)
    # Only rank 0 sampled: one sample run.
    assert len(list((runs_dir / "sample").iterdir())) == 2


def _train_overrides(merge_id: str, *extra: str) -> list[str]:
    return tiny("byol", f"source_id={merge_id}", "data.batch_size=8", *extra)


def _steps_per_epoch(runs_dir: Path, merge_id: str, batch_size: int = 8) -> int:
    return RunStore(runs_dir).resolve(merge_id).manifest["counts"]["windows"] // batch_size


@pytest.mark.slow
def test_training_job_requeued_after_its_first_checkpoint_resumes_in_the_same_run_as_an_uninterrupted_one(
    merge_id, site, runs_dir, data_dir, tmp_path, cleanup
):
    overrides = _train_overrides(
        merge_id, "trainer.max_epochs=3", "callbacks.checkpoint.every_n_train_steps=5"
    )
    log = tmp_path / "launcher.log"
    command = _sweep("train.py", overrides, site, runs_dir, data_dir)
    with (
        open(log, "w") as out,
        subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=out, stderr=out) as proc,
    ):
        checkpoints = runs_dir / "train"
        _wait(
            lambda: any(checkpoints.glob("*/checkpoints/step*.ckpt")), 300, "the first checkpoint", proc, log
        )
        (run_dir,) = checkpoints.iterdir()
        _requeue_when_interrupted(_job_id(runs_dir), run_dir, proc, log)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert [p.name for p in checkpoints.iterdir()] == [run_dir.name]
    manifest = yaml.safe_load((run_dir / "manifest.yaml").read_text())
    assert manifest["status"] == "complete" and manifest["attempts"] == 2
    assert manifest["info"]["resumed_from_step"] >= 5
    # The schedule of an uninterrupted run: every epoch, every step, once.
    assert manifest["counts"]["epochs"] == 3
    assert manifest["counts"]["steps"] == 3 * _steps_per_epoch(runs_dir, merge_id)
    assert manifest["info"]["resumed_from_step"] % _steps_per_epoch(runs_dir, merge_id) != 0  # mid-epoch
    # The same job uninterrupted (force=true: a new run beside it) trains to the same weights, bitwise.
    reference = subprocess.run(
        _sweep("train.py", [*overrides, "force=true"], site, runs_dir, data_dir),
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert reference.returncode == 0, reference.stderr[-3000:]
    (reference_dir,) = (p for p in checkpoints.iterdir() if p != run_dir)
    assert yaml.safe_load((reference_dir / "manifest.yaml").read_text())["attempts"] == 1
    got, want = (
        torch.load(d / "backbone.pt", map_location="cpu", weights_only=False)["state_dict"]
        for d in (run_dir, reference_dir)
    )
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_job_reaching_its_time_limit_is_requeued_by_submitit_and_resumes(
    merge_id, site, runs_dir, data_dir, tmp_path, cleanup
):
    # A two-minute limit; SLURM signals the job (USR2) 60 s before it, submitit requeues the job and exits.
    # SLURM checks limits every ~30 s, so with a one-minute limit the signal could come while the job is
    # still importing torch, before submitit handles it. Steps sleep 0.5 s: 108 steps outlast one
    # attempt on any machine, and a loaded one still gets through in a few attempts.
    limit = ["hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=60"]
    slow = ["+callbacks.slow._target_=tests.ssl.callbacks.SlowSteps", "+callbacks.slow.seconds=0.5"]
    overrides = _train_overrides(
        merge_id, "trainer.max_epochs=3", "callbacks.checkpoint.every_n_train_steps=10", *slow
    )
    log = tmp_path / "launcher.log"
    command = _sweep("train.py", [*overrides, *limit], site, runs_dir, data_dir)
    with (
        open(log, "w") as out,
        subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=out, stderr=out) as proc,
    ):
        _wait(lambda: _job_id(runs_dir) is not None, 120, "the job", proc, log)
        job = _job_id(runs_dir)
        while proc.poll() is None:
            if _job_state(job) == "PENDING" and _status(next((runs_dir / "train").glob("*"), runs_dir)):
                _start_now(job)
            time.sleep(1)
    assert proc.returncode == 0, log.read_text()[-3000:]
    (run_dir,) = (runs_dir / "train").iterdir()
    manifest = yaml.safe_load((run_dir / "manifest.yaml").read_text())
    assert manifest["status"] == "complete" and manifest["attempts"] >= 2
    assert manifest["info"]["resumed_from_step"] >= 10
    assert manifest["counts"]["steps"] == 3 * _steps_per_epoch(runs_dir, merge_id)
    job_log = "".join(p.read_text() for p in (runs_dir / "_sweeps").rglob("*_log.err"))
    assert re.search(r"Caught signal SIGUSR2 .*: this job is timed-out", job_log), job_log[-3000:]


def _docs_block(page: str, heading: str) -> str:
    text = (ROOT / "docs" / page).read_text()
    section = text[text.index(heading) :]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_documented_try_it_on_one_machine_runs_the_whole_loop_on_slurm(tmp_path, cleanup):
    """The commands of docs/slurm.md, verbatim, in a scratch checkout (configs, entry points, .ci/slurm-up.sh)."""
    checkout = tmp_path / "checkout"
    shutil.copytree(CONFIG_DIR, checkout / "configs", ignore=shutil.ignore_patterns("local"))
    for entry in ("extract.py", "curate.py", "train.py", "evaluate.py"):
        shutil.copy(ROOT / entry, checkout)
    (checkout / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "slurm-up.sh", checkout / ".ci")
    block = _docs_block("slurm.md", "## Try it on one machine")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=checkout, env=_env(), capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    store = RunStore(checkout / "rehearsal" / "runs")

    def complete(stage: str) -> list:
        runs = store.runs(stage)
        assert all(r.complete for r in runs), [(r.run_id, r.manifest["status"]) for r in runs]
        return runs

    cutouts = complete("cutouts")
    assert sorted(
        (r.manifest["config"]["survey"]["shard"], r.manifest["config"]["survey"]["n_shards"]) for r in cutouts
    ) == [(0, 2), (1, 2)]
    (merge,) = complete("merge")
    assert sorted(merge.parents) == sorted(r.run_id for r in cutouts)
    (features,) = complete("features")
    assert features.parents == [merge.run_id]
    samples = complete("sample")
    assert len(samples) == 3 and len({repr(r.manifest["config"]["sampler"]) for r in samples}) == 3
    trained = complete("train")
    assert len(trained) == 2 and {r.parents[0] for r in trained} < {r.run_id for r in samples}
    evaluations = complete("evaluate")
    assert sorted(r.parents[0] for r in evaluations) == sorted(r.run_id for r in trained)
    # runs compare: the two evaluations side by side, the model that differs, the probe's metrics.
    for evaluation in evaluations:
        assert evaluation.run_id in done.stdout
    assert "model_id" in done.stdout and "linear_probe/accuracy_mean" in done.stdout
    assert "Bypassing sacct error" not in output
    assert "`srun` command is available" not in output
