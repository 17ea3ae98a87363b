"""A real Hydra multirun through the submitit launcher: a sharded cutouts sweep whose shards merge into one index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from radio_curation.cli import main as cli
from radio_curation.cutouts.index import read_index
from radio_curation.runs.store import RunStore
from radio_curation.tasks import merge

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
