"""benchmarks/device_check.sh: refuses quickly without a GPU, lists every GPU figure, runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.sh"


def _run(*options: str, timeout: float) -> subprocess.CompletedProcess:
    # From PYTHONPATH alone: the script puts its own checkout on it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""})
    return subprocess.run(
        ["bash", str(SCRIPT), *options], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_without_a_cuda_device_it_says_so_and_fails():
    done = _run(timeout=120)
    assert done.returncode == 3
    assert "no CUDA device" in done.stderr and "--tiny" in done.stderr
    assert "RESULT" not in done.stdout


def test_dry_run_lists_every_gpu_figure_of_the_issue():
    done = _run("--dry-run", timeout=60)
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if line.startswith("+ ")]
    assert len(commands) == 5
    features_resnet, features_vit, train, curation, distributed = commands
    for line in (features_resnet, features_vit):
        assert "bench_features.py" in line and "--device cuda" in line and "--overlap 0.875" in line
    assert "--backbone resnet18" in features_resnet and "--backbone vit_small_dinov2" in features_vit
    assert "bench_train.py" in train and "--batch-size 256" in train and "--device cuda" in train
    assert "bench_curation.py" in curation and "--n 1000000" in curation and "--k 10000" in curation
    assert "--only kmeans hierarchical" in curation
    assert "bench_distributed.py" in distributed and "--device cuda" in distributed
    assert "--ranks 1" in distributed and "--n 1000000" in distributed
    # Each step's time limit: together within the 9 minutes.
    limits = [
        int(line.split("at most ")[1].split(" s")[0])
        for line in done.stdout.splitlines()
        if "at most" in line
    ]
    assert len(limits) == 5 and sum(limits) <= 9 * 60 - 20


def test_unknown_option_is_a_usage_error():
    done = _run("--fast", timeout=30)
    assert done.returncode == 2 and "usage" in done.stderr


@pytest.mark.slow
def test_tiny_mode_runs_every_step_on_the_cpu():
    done = _run("--tiny", timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:]
    steps, summary = done.stdout.split("== RESULT lines")
    results = [line.split()[1] for line in steps.splitlines() if line.startswith("RESULT")]
    kinds = (
        "datapath",
        "datapath_before",
        "loader",
        "train_data",
        "train",
        "kmeans",
        "hierarchical",
        "distributed",
    )
    for kind in kinds:
        assert kind in results, kind
    assert results.count("extraction") == 2  # ResNet-18 and ViT-S/14
    assert summary.count("RESULT") == len(results) and "full output:" in summary
