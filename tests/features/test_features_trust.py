"""Features you can trust: seeded random weights, one network per run, identity, bf16 vs float32."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from radio_curation.errors import RadioCurationError
from radio_curation.features.io import BlockShards
from radio_curation.features.matrix import FeatureFile
from radio_curation.runs.stage import stage_identity
from radio_curation.runs.store import RunStore
from radio_curation.tasks import features as features_task

ROOT = Path(__file__).resolve().parents[2]
RANDOM_RESNET = ["backbone=timm", "backbone.name=resnet10t", "backbone.checkpoint=null", "resize=64"]


def _read(runs_dir: Path, run_id: str) -> np.ndarray:
    path = RunStore(runs_dir).resolve(run_id, stage="features").artifact("features.h5")
    with FeatureFile(path) as ff:
        return ff.read()


def _random_resnet(features_overrides: list[str], *extra: str) -> list[str]:
    kept = [o for o in features_overrides if not o.startswith(("backbone", "resize"))]
    return [*kept, *RANDOM_RESNET, *extra]


def test_a_random_weight_backbone_is_the_same_network_in_every_run(compose, features_overrides, runs_dir):
    overrides = _random_resnet(features_overrides, "limit_batches=1", "batch_size=8")
    first = features_task.run(compose("extract", overrides))
    again = features_task.run(compose("extract", [*overrides, "force=true"]))
    assert again["run_id"] == f"{first['run_id']}-2" and again["reused"] is False
    np.testing.assert_array_equal(_read(runs_dir, first["run_id"]), _read(runs_dir, again["run_id"]))
    other = features_task.run(compose("extract", [*overrides, "seed=1"]))
    assert other["run_id"] != first["run_id"]
    assert not np.allclose(_read(runs_dir, other["run_id"]), _read(runs_dir, first["run_id"]))
    assert (
        first["info"]["weights_sha256"] == again["info"]["weights_sha256"] != other["info"]["weights_sha256"]
    )


def test_batch_size_changes_the_identity_only_when_it_changes_the_rows(compose, features_overrides):
    def run_id(*extra: str) -> str:
        cfg = compose("extract", [*features_overrides, *extra])
        return stage_identity(cfg, features_task.FEATURES_STAGE).base_id

    assert run_id("batch_size=8") == run_id("batch_size=16")
    assert run_id("limit_batches=2", "batch_size=8") != run_id("limit_batches=2", "batch_size=16")


def test_limit_batches_extracts_limit_batches_times_batch_size_rows(compose, features_overrides, runs_dir):
    small = features_task.run(compose("extract", [*features_overrides, "limit_batches=2", "batch_size=8"]))
    large = features_task.run(compose("extract", [*features_overrides, "limit_batches=2", "batch_size=16"]))
    assert large["reused"] is False
    assert (small["counts"]["rows"], large["counts"]["rows"]) == (16, 32)
    assert len(_read(runs_dir, large["run_id"])) == 32


def _centred_row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(0), b - b.mean(0)
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


@pytest.mark.parametrize("normalization", ["imagenet", "minmax"])
def test_bf16_mixed_features_agree_with_float32(compose, features_overrides, runs_dir, normalization):
    # imagenet is experiment=lotss_dr2's normalisation; the windows are the synthetic LoTSS-like sky's.
    overrides = _random_resnet(features_overrides, f"normalization={normalization}", "limit_batches=2")
    full = features_task.run(compose("extract", [*overrides, "precision=32-true"]))
    half = features_task.run(compose("extract", [*overrides, "precision=bf16-mixed"]))
    assert half["info"]["precision"] == "bf16-mixed"
    assert _centred_row_cosine(_read(runs_dir, full["run_id"]), _read(runs_dir, half["run_id"])) >= 0.99


def test_a_normalisation_bf16_cannot_hold_stops_before_the_run_starts(compose, features_overrides, runs_dir):
    # The imagenet recipe of the per-cutout .npy scripts this project replaces: 0.45 subtracted from raw
    # Jy/beam pixels.
    overrides = [
        *features_overrides,
        "normalization=imagenet",
        "normalization.rescale=null",
        "precision=bf16-mixed",
    ]
    with pytest.raises(RadioCurationError, match=r"normalization .*Standardize.*precision=bf16-mixed"):
        features_task.run(compose("extract", overrides))
    assert not (runs_dir / "features").exists()
    float32 = [*overrides[:-1], "precision=32-true", "limit_batches=1"]
    assert features_task.run(compose("extract", float32))["counts"]["rows"] == 16


@pytest.mark.slow
def test_a_resumed_run_refuses_blocks_of_another_network(
    compose, features_overrides, runs_dir, data_dir, tmp_path, tiny_checkpoint
):
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(tiny_checkpoint.read_bytes())
    overrides = [
        *[o for o in features_overrides if not o.startswith("backbone.checkpoint")],
        f"backbone.checkpoint={checkpoint}",
        "batch_size=4",
    ]
    cfg = compose("extract", overrides)
    run_dir = runs_dir / "features" / stage_identity(cfg, features_task.FEATURES_STAGE).base_id
    command = [
        sys.executable,
        str(ROOT / "extract.py"),
        *overrides,
        f"paths.runs_dir={runs_dir}",
        f"paths.data_dir={data_dir}",
        "logger=csv",
    ]
    log = tmp_path / "killed.log"
    with open(log, "wb") as out, subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=out) as proc:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(BlockShards(run_dir / "shards").done()) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
    # The checkpoint file is replaced by other weights before the run is resumed.
    torch.manual_seed(1)
    torch.save(timm.create_model("test_vit", num_classes=0, in_chans=1).state_dict(), checkpoint)
    with pytest.raises(RadioCurationError, match="mix two networks"):
        features_task.run(compose("extract", overrides))
    checkpoint.write_bytes(tiny_checkpoint.read_bytes())
    resumed = features_task.run(compose("extract", overrides))
    assert resumed["run_id"] == run_dir.name and resumed["info"]["blocks_done_before"] >= 2
