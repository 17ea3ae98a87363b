"""A trained model carries its preprocessing: probes and features use it unless told otherwise."""

from __future__ import annotations

import torch

from radio_curation.backbones.export import read_preprocessing
from radio_curation.features.matrix import FeatureFile
from radio_curation.runs.stage import resolve_inputs
from radio_curation.runs.store import RunStore
from radio_curation.tasks import evaluate as evaluate_task
from radio_curation.tasks import features as features_task
from radio_curation.tasks import train as train_task
from tests.ssl.conftest import tiny


def _probe_model(cfg):
    """The model, preprocessing and record the configured evaluation probes the labelled dataset with."""
    read = resolve_inputs(cfg, evaluate_task.declaration(cfg))
    return evaluate_task.inputs(read, evaluate_task.evaluation(read.cfg)).images.model()


def test_a_model_trained_on_48_px_views_is_probed_and_used_at_48_px(compose, merge_id, runs_dir):
    # 48 px training views; the probes are configured at resize=64, which the model's own 48 px overrides.
    views = ["experiment=demo", "augmentation.global_size=48", "augmentation.local_size=24"]
    trained = train_task.run(
        compose("train", tiny("byol", f"source_id={merge_id}", *views, "++trainer.fast_dev_run=1"))
    )
    model_id = trained["run_id"]
    stored = read_preprocessing(RunStore(runs_dir).resolve(model_id).artifact("backbone.pt"))
    assert stored["input_size"] == 48 and stored["in_chans"] == 1
    assert stored["normalization"]["_target_"].endswith("IntervalStretch")  # minmax, the default

    probe = compose(
        "evaluate", ["experiment=demo", f"model_id={model_id}", "normalization=zscore", "resize=64"]
    )
    assert probe.resize == 64
    _, preprocess, info = _probe_model(probe)
    assert (preprocess.resize, info["resize"], info["preprocess_from"]) == (48, 48, f"train run {model_id}")
    assert info["normalization"] == stored["normalization"]
    # The user overrides it explicitly.
    _, preprocess, info = _probe_model(
        compose(
            "evaluate",
            ["experiment=demo", f"model_id={model_id}", "preprocess_from_model=false", "resize=64"],
        )
    )
    assert preprocess.resize == 64 and info["preprocess_from"] == "evaluate config"

    extract = [
        "stage=features",
        "resize=64",
        f"source_id={merge_id}",
        "backbone=run",
        f"backbone.model_id={model_id}",
        "normalization=zscore",
        "limit_batches=1",
        "batch_size=8",
        "accelerator=cpu",
    ]
    for overrides, size, normalisation in (
        (extract, 48, "IntervalStretch"),
        ([*extract, "preprocess_from_model=false"], 64, "Standardize"),
    ):
        result = features_task.run(compose("extract", overrides))
        path = RunStore(runs_dir).resolve(result["run_id"]).artifact("features.h5")
        with FeatureFile(path) as ff:
            assert ff.attrs["resize"] == size and normalisation in ff.attrs["normalization"]
            assert torch.isfinite(torch.from_numpy(ff.read())).all()
