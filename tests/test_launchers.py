"""The SLURM launcher configs produce sbatch scripts whose resources match the trainer (no cluster needed)."""

from __future__ import annotations

import os
import shutil

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from tests.conftest import CONFIG_DIR

SITE = """partition: gpu-long
account: radio42
qos: high
setup: ["module load cuda/12.4"]
"""


@pytest.fixture(autouse=True)
def fake_srun(tmp_path, monkeypatch):
    """submitit looks for srun before it writes a script; a stand-in lets us inspect the script here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


@pytest.fixture
def site_configs(tmp_path):
    """The project's configs plus a site file in configs/local/, as a user would have them."""
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    (configs / "local").mkdir(exist_ok=True)
    (configs / "local" / "slurm.yaml").write_text(SITE)
    return configs


def _sbatch(configs, root, overrides, tmp_path) -> str:
    with initialize_config_dir(str(configs), version_base="1.3"):
        cfg = compose(root, overrides=overrides, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    params.pop("_target_")
    params.pop("submitit_folder")
    # Resolve the interpolations against the whole config, as Hydra does when it launches.
    params = {k: OmegaConf.select(cfg, f"hydra.launcher.{k}") for k in params}
    params = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in params.items()}
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params.pop("max_num_timeout")
    params["name"] = root
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("python train.py", "uid")


def test_gpu_launcher_matches_trainer_devices_and_nodes(site_configs, tmp_path):
    if not (CONFIG_DIR / "trainer").is_dir():
        pytest.skip("the trainer group is not there yet")
    text = _sbatch(
        site_configs,
        "train",
        ["hydra/launcher=slurm_gpu", "trainer.devices=4", "trainer.num_nodes=2"],
        tmp_path,
    )
    assert "#SBATCH --ntasks-per-node=4" in text
    assert "#SBATCH --gpus-per-node=4" in text
    assert "#SBATCH --nodes=2" in text
    assert "#SBATCH --partition=gpu-long" in text
    assert "#SBATCH --account=radio42" in text
    assert "#SBATCH --qos=high" in text
    assert "module load cuda/12.4" in text


def test_cpu_launcher_uses_site_settings_and_no_gpus(site_configs, tmp_path):
    text = _sbatch(site_configs, "curate", ["hydra/launcher=slurm_cpu"], tmp_path)
    assert "#SBATCH --ntasks-per-node=1" in text
    assert "gpus" not in text
    assert "#SBATCH --cpus-per-task=16" in text
    assert "#SBATCH --partition=gpu-long" in text
