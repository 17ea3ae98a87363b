"""The SLURM launcher configs, through Hydra and the submitit plugin, write sbatch scripts whose resources
match the trainer and the site settings (no cluster needed: ``sbatch`` is a stand-in that keeps the script)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONFIG_DIR

ROOT = CONFIG_DIR.parent
SITE = """partition: gpu-long
account: radio42
qos: high
setup: ["module load cuda/12.4"]
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A config dir with the site file a user keeps in configs/local/slurm.yaml."""
    (tmp_path / "site" / "local").mkdir(parents=True)
    (tmp_path / "site" / "local" / "slurm.yaml").write_text(SITE)
    return tmp_path / "site"


def _sbatch_script(entry: str, overrides: list[str], site: Path, tmp_path: Path) -> str:
    """The script the launcher hands to sbatch for ``python <entry> -m <overrides>``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kept = tmp_path / "submitted.sh"
    # submitit runs `sbatch <script>`; this one keeps the script and refuses it, which ends the launch.
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {kept}\necho "sbatch: stand-in" >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit wants srun on the PATH
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    runs = [f"paths.runs_dir={tmp_path / 'runs'}", f"paths.data_dir={tmp_path / 'data'}"]
    done = subprocess.run(
        [sys.executable, entry, "-m", "--config-dir", str(site), *overrides, *runs],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert kept.is_file(), done.stderr[-3000:]
    return kept.read_text()


def test_gpu_launcher_matches_trainer_devices_and_nodes(site, tmp_path):
    text = _sbatch_script(
        "train.py", ["hydra/launcher=slurm_gpu", "trainer.devices=4", "trainer.num_nodes=2"], site, tmp_path
    )
    assert "#SBATCH --ntasks-per-node=4" in text
    assert "#SBATCH --gpus-per-node=4" in text
    assert "#SBATCH --nodes=2" in text
    assert "#SBATCH --partition=gpu-long" in text
    assert "#SBATCH --account=radio42" in text
    assert "#SBATCH --qos=high" in text
    assert "#SBATCH --time=720" in text
    assert "#SBATCH --signal=USR2@300" in text
    assert "module load cuda/12.4" in text
    # Every task is started by srun: Lightning's SLURM environment finds its ranks there.
    assert "srun --unbuffered" in text


def test_features_gpu_launcher_follows_the_top_level_devices(site, tmp_path):
    text = _sbatch_script(
        "extract.py",
        ["hydra/launcher=slurm_gpu", "stage=features", "devices=2", "num_nodes=3"],
        site,
        tmp_path,
    )
    assert "#SBATCH --ntasks-per-node=2" in text
    assert "#SBATCH --gpus-per-node=2" in text
    assert "#SBATCH --nodes=3" in text


def test_cpu_launcher_uses_site_settings_and_no_gpus(site, tmp_path):
    text = _sbatch_script("curate.py", ["hydra/launcher=slurm_cpu"], site, tmp_path)
    assert "#SBATCH --ntasks-per-node=1" in text
    assert "gpus" not in text
    assert "#SBATCH --cpus-per-task=16" in text
    assert "#SBATCH --mem=64GB" in text
    assert "#SBATCH --partition=gpu-long" in text
