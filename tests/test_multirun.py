"""Real Hydra multiruns: a sharded cutouts sweep whose shards merge into one index (submitit launcher), and
an interrupted sweep that the same command finishes (run IDs: finished jobs reused, the unfinished resumed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from radio_curation.cli import main as cli
from radio_curation.cutouts.index import read_index
from radio_curation.runs.store import RunStore
from radio_curation.tasks import merge
from tests.kill_after import run_killed

ROOT = Path(__file__).resolve().parents[1]


def test_sharded_cutouts_sweep_on_submitit_local_merges_into_one_index(
    tmp_path, compose, runs_dir, data_dir, capsys
):
    sky = ["survey.size=384", "survey.mosaics=2", "cutouts.window_size=64"]
    done = subprocess.run(
        [
            sys.executable, "extract.py", "-m", "hydra/launcher=submitit_local", "stage=cutouts", *sky,
            "survey.shard=range(0,2)", "survey.n_shards=2", f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    shards = RunStore(runs_dir).runs("cutouts")
    assert len(shards) == 2 and all(r.complete for r in shards)
    assert {r.manifest["config"]["survey"]["shard"] for r in shards} == {0, 1}
    # Each job's Hydra output directory is its run directory (the log lands beside the manifest).
    assert all((r.dir / "extract.log").is_file() for r in shards)
    # One tracker group (W&B group / MLflow experiment) per sweep: experiment_name plus the sweep's name.
    groups = {r.manifest["experiment"] for r in shards}
    assert len(groups) == 1 and groups.pop().startswith("default-")

    capsys.readouterr()
    assert (
        cli(["runs", "--runs-dir", str(runs_dir), "find", "--stage", "cutouts", "--all", "survey.size=384"])
        == 0
    )
    ids = capsys.readouterr().out.strip()
    result = merge.run(compose("extract", ["stage=merge", f"cutouts_ids=[{ids}]", "merge.dedup=false"]))
    shard_rows = 0
    for record in shards:
        shard_rows += len(read_index(record.artifact("cutouts.h5"), columns=["y0"]))
    assert result["counts"]["windows"] == shard_rows > 0
    assert set(RunStore(runs_dir).resolve(result["run_id"]).parents) == {r.run_id for r in shards}


@pytest.mark.slow
def test_an_interrupted_sweep_relaunched_reuses_its_finished_jobs_and_resumes_the_unfinished_one(
    runs_dir, data_dir, tmp_path
):
    # Three shards of two mosaics each, one job after the other (Hydra's basic launcher).
    sweep = [
        "-m", "stage=cutouts", "survey.mosaics=6", "survey.size=256", "cutouts.window_size=32",
        "survey.shard=0,1,2", "survey.n_shards=3", f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}",
    ]  # fmt: skip
    # Killed like a cancelled allocation: the first job done, the second with one of its two mosaics cut.
    run_killed("radio_curation.cutouts.cut:write_index", 4, "extract.py", sweep, tmp_path)
    store = RunStore(runs_dir)
    before = {r.manifest["config"]["survey"]["shard"]: r for r in store.runs("cutouts")}
    assert sorted(before) == [0, 1] and before[0].complete and before[1].manifest["status"] == "running"
    assert len(list((before[1].dir / "parts").glob("*.h5"))) == 1

    # The same command again.
    done = subprocess.run(
        [sys.executable, "extract.py", *sweep], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    after = {r.manifest["config"]["survey"]["shard"]: r for r in RunStore(runs_dir).runs("cutouts")}
    assert sorted(after) == [0, 1, 2] and all(r.complete for r in after.values())
    assert {s: r.run_id for s, r in after.items() if s < 2} == {s: r.run_id for s, r in before.items()}
    assert after[0].manifest == before[0].manifest  # reused as it was
    assert after[1].manifest["attempts"] == 2 and after[2].manifest["attempts"] == 1
    log = done.stdout
    assert f"reusing complete run {after[0].run_id}" in log
    assert f"resuming incomplete run {after[1].run_id} (status: running)" in log
    assert "resuming: 1 of 2 mosaics already cut" in log
    assert f"starting run {after[2].run_id}" in log
    assert [after[s].manifest["counts"]["mosaics"] for s in range(3)] == [2, 2, 2]
