"""The first README command's pipeline, end to end: `scripts/demo.sh` (experiment=demo) on a fresh store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from radio_curation.runs.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_every_stage_and_reports_where_results_are(tmp_path, shared_data):
    env = {
        **os.environ,
        "RC_RUNS_DIR": str(tmp_path / "runs"),
        "RC_DATA_DIR": str(tmp_path / "data"),
        "MIRABEST": str(shared_data / "mirabest"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stderr[-4000:]
    store = RunStore(tmp_path / "runs")
    stages = {r.stage for r in store.runs() if r.complete}
    assert stages == {"cutouts", "merge", "features", "cluster", "sample", "train", "evaluate"}

    lines = dict(
        line.strip().split(":", 1)
        for line in done.stdout.splitlines()
        if line.startswith("  ") and ":" in line
    )
    probe = json.loads(Path(lines["linear probe"].split()[0]).read_text())
    assert probe["n_images"] == 832  # MiraBest Confident
    assert 0.5 < probe["metrics"]["linear_probe/accuracy_mean"] <= 1.0
    report = Path(lines["curation report"].strip())
    assert report.name == "report.html" and "<img" in report.read_text()
    (train,) = store.runs("train")
    assert (train.dir / "backbone.pt").is_file()
    # The report's lineage reaches the mosaics through every stage.
    (sample,) = store.runs("sample")
    chain = [sample]
    while chain[-1].parents:
        chain.append(store.resolve(chain[-1].parents[0]))
    assert [r.stage for r in chain] == ["sample", "cluster", "features", "merge", "cutouts"]
    assert len(chain[-1].manifest["info"]["mosaics"]) == 4
