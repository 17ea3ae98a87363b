"""The four entry points are thin, answer --help and --cfg job, and turn user errors into one message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ["extract", "curate", "train", "evaluate"]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_point_is_thin(name):
    source = (ROOT / f"{name}.py").read_text()
    assert len(source.splitlines()) <= 25
    assert f"from radio_curation.tasks import {name} as task" in source


# Libraries only a running stage needs: --help and --cfg job must answer without importing them.
HEAVY = ("torch", "faiss", "pytorch_lightning", "lightning_fabric", "timm", "h5py", "astropy", "pydantic")
# Runs an entry point as __main__ and prints the heavy modules it imported, on stderr, as its last line.
LOADED = (
    "import runpy, sys; sys.argv = sys.argv[1:]\n"
    "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    f"finally:\n    print(sorted(m for m in {HEAVY} if m in sys.modules), file=sys.stderr)"
)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_and_cfg_job(name, tmp_path):
    helped = _run("-c", LOADED, f"{name}.py", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "== Configuration groups ==" in helped.stdout and "logger:" in helped.stdout
    assert helped.stderr.strip().splitlines()[-1] == "[]", helped.stderr
    shown = _run("-c", LOADED, f"{name}.py", "--cfg", "job", f"paths.runs_dir={tmp_path}")
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.strip().splitlines()[-1] == "[]", shown.stderr
    cfg = yaml.safe_load(shown.stdout)
    assert cfg["paths"]["runs_dir"] == str(tmp_path) and "hydra" not in cfg


def test_wrong_run_id_is_one_message_exit_2_and_leaves_no_run(tmp_path):
    done = _run("extract.py", "stage=merge", "cutouts_ids=[cutouts-0123456789]", f"paths.runs_dir={tmp_path}")
    assert done.returncode == 2
    # The config key that named the run, then why it cannot be used.
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cutouts_ids=cutouts-0123456789: no run 'cutouts-0123456789'")
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("merge/*"))
