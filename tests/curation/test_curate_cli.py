"""``curate.py`` on the command line, on features made by the real features stage from the synthetic sky."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from radio_curation.curation.clusters import read_subsample
from radio_curation.features.matrix import FeatureFile
from radio_curation.runs.store import RunStore
from radio_curation.tasks import cutouts as cutouts_task
from radio_curation.tasks import features as features_task
from radio_curation.tasks import merge as merge_task

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_curate_cli_on_real_features(compose, runs_dir, data_dir, tmp_path):
    cutouts = cutouts_task.run(
        compose("extract", ["stage=cutouts", "survey.mosaics=2", "survey.size=256", "cutouts.window_size=32"])
    )
    merge = merge_task.run(compose("extract", ["stage=merge", f"cutouts_ids=[{cutouts['run_id']}]"]))
    torch.manual_seed(0)
    weights = tmp_path / "test_vit.pth"
    torch.save(
        timm.create_model("test_vit", pretrained=False, num_classes=0, in_chans=1).state_dict(), weights
    )
    features = features_task.run(
        compose(
            "extract",
            [
                "stage=features",
                f"source_id={merge['run_id']}",
                "backbone=timm",
                "backbone.name=test_vit",
                f"backbone.checkpoint={weights}",
                "resize=32",
                "num_workers=0",
                "accelerator=cpu",
            ],
        )
    )
    store = RunStore(runs_dir)
    with FeatureFile(store.resolve(features["run_id"]).artifact("features.h5")) as ff:
        n, feature_ids = ff.n, ff.cutout_ids
    target = n // 3
    command = [
        sys.executable,
        str(ROOT / "curate.py"),
        f"features_id={features['run_id']}",
        "clustering.n_clusters=[40,8,3]",
        f"target_size={target}",
        f"paths.runs_dir={runs_dir}",
        f"paths.data_dir={data_dir}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    ids = [line.split("=", 1)[1] for line in done.stdout.splitlines() if line.startswith("run_id=")]
    assert ids[0].startswith("cluster-") and done.stdout.strip().splitlines()[-1] == f"run_id={ids[-1]}"
    sample = store.resolve(ids[-1], stage="sample")
    assert sample.parents == [ids[0]] and store.resolve(ids[0]).parents == [features["run_id"]]
    chosen, paths = read_subsample(sample.artifact("subsample.h5"))
    assert len(chosen) == target and np.isin(chosen, feature_ids).all() and paths.shape == (target, 3)

    reuse = [sys.executable, str(ROOT / "curate.py"), f"clusters_id={ids[0]}", *command[-2:]]
    wrong = subprocess.run(
        [*reuse, f"target_size={n + 1}"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert f"target_size={n + 1} is larger than the {n} rows" in wrong.stderr
