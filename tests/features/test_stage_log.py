"""A stage's log tells its story (what it read, what it wrote, how long it took) without third-party chatter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What faiss' loader, Lightning's rank-zero notices and torch's pytree deprecation would print.
CHATTER = (
    "Could not load library",
    "Loading faiss",
    "litlogger",
    "💡",
    "GPU available",
    "LeafSpec",
    "_pytree",
)


def _story(script: str, overrides: list[str], runs_dir: Path, data_dir: Path) -> list[str]:
    """Run ``script``; check that nothing third-party is in its output; return its log's messages."""
    store = [f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}"]
    done = subprocess.run(
        [sys.executable, script, *overrides, *store], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert [line for line in output.splitlines() if any(c in line for c in CHATTER)] == []
    assert done.stdout.splitlines()[-1].startswith("run_id=")
    return [line.split("] - ", 1)[1] for line in done.stdout.splitlines() if "] - " in line]


@pytest.mark.slow
def test_stage_logs_tell_what_was_read_done_and_written_without_third_party_chatter(
    features_overrides, runs_dir, data_dir
):
    # Lightning's predict loop (its notices, torch's pytree deprecation inside it).
    story = _story("extract.py", [*features_overrides, "limit_batches=2"], runs_dir, data_dir)
    source_id = next(o for o in features_overrides if o.startswith("source_id=")).split("=")[1]
    assert story[0].startswith("starting run features-")
    assert any(line.startswith(f"reading source_id: {source_id} (") and "windows" in line for line in story)
    assert any(line.startswith("features on cpu (1 process(es), precision 32-true)") for line in story)
    (done,) = [line for line in story if " complete in " in line]
    assert done.endswith("32 rows, 64 dim; counts.rows = 32")
    assert story[-1].startswith("wrote features.h5 (") and story[-1].endswith(" kB)")
    features_id = done.split()[1]

    # faiss' k-means (its loader's notices).
    story = _story(
        "curate.py",
        [f"features_id={features_id}", "clustering.n_clusters=[4,2]", "clustering.n_resampling_steps=[1,1]",
         "target_size=8"],
        runs_dir,
        data_dir,
    )  # fmt: skip
    assert any(line.startswith(f"reading features_id: {features_id} (32 rows, 64 dim)") for line in story)
    assert sum(" complete in " in line for line in story) == 2  # the cluster run, then the sample run
    assert story[-1].startswith("wrote subsample.h5 (")
