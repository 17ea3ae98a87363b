"""The train stage end to end on the synthetic sky: methods, export, resume, baselines, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from radio_curation.cutouts.reader import WindowReader
from radio_curation.data.datasets import MiraBest
from radio_curation.data.preprocess import Preprocess
from radio_curation.errors import RadioCurationError
from radio_curation.runs.stage import resolve_inputs
from radio_curation.runs.store import RunStore
from radio_curation.ssl.monitor import OnlineKNN
from radio_curation.tasks import curate as curate_task
from radio_curation.tasks import features as features_task
from radio_curation.tasks import train as train_task
from tests.ssl.callbacks import KEPT, LOSSES
from tests.ssl.conftest import tiny


def _source(cfg) -> train_task.TrainingSource:
    return train_task.resolve_source(resolve_inputs(cfg, train_task.TRAIN))


def _manifest(runs_dir: Path, run_id: str) -> dict:
    return RunStore(runs_dir).resolve(run_id, stage="train").manifest


@pytest.mark.parametrize("method", ["byol", "simclr", "dino", "vicreg"])
def test_fast_dev_run_exports_a_backbone_that_matches_the_trained_one(method, compose, merge_id, runs_dir):
    cfg = compose(
        "train",
        tiny(
            method,
            f"source_id={merge_id}",
            "++trainer.fast_dev_run=2",
            "+callbacks.keep._target_=tests.ssl.callbacks.KeepModel",
            f"+callbacks.keep.key={method}",
        ),
    )
    result = train_task.run(cfg)
    manifest = _manifest(runs_dir, result["run_id"])
    assert manifest["counts"]["steps"] == 2
    assert {"backbone.pt", "checkpoints/last.ckpt"} <= set(manifest["artifacts"])
    trained = KEPT.pop(method).export_backbone().eval()
    exported = instantiate(
        compose("extract", ["backbone=run", f"backbone.model_id={result['run_id']}"]).backbone
    )
    exported.eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(exported(x), trained(x), atol=1e-6)
    assert exported.feature_dim == trained.feature_dim


def _losses(run_dir: Path) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["name"] == "train/loss"]
    return [float(r["value"]) for r in sorted(rows, key=lambda r: int(r["step"]))]


def test_loss_decreases_over_a_few_dozen_steps_on_the_synthetic_sky(compose, merge_id, shared_data):
    cfg = compose(
        "train",
        tiny(
            "simclr",
            f"source_id={merge_id}",
            "trainer.max_epochs=4",
            "ssl.optimizer.lr=0.5",
            "dataset@monitor.dataset=mirabest",
            f"monitor.dataset.root={shared_data / 'mirabest'}",
            "monitor.every_n_epochs=2",
            "+callbacks.keep._target_=tests.ssl.callbacks.KeepModel",
            "+callbacks.keep.key=knn",
            "+callbacks.first_batch._target_=tests.ssl.callbacks.FirstBatchLoss",
            "+callbacks.first_batch.key=simclr",
        ),
    )
    result = train_task.run(cfg)
    assert len(_losses(Path(result["run_dir"]))) >= 24
    # The same views before the first step and after the fit: per-step losses are of different random
    # views, too noisy over a few dozen steps to show the decrease at every seed.
    before, after = LOSSES.pop("simclr")
    assert after < before - 0.1
    metrics = result["metrics"]
    assert {"loss", "rankme", "embedding_std", "images_per_sec"} <= set(metrics)
    # Online kNN of the final model on MiraBest Confident: its official test batch queried against the
    # training batches, the images prepared as the training views are.
    trained = KEPT.pop("knn")
    labelled = MiraBest(shared_data / "mirabest", subset="confident").load()
    test = labelled.split == "test"
    preprocess = Preprocess(
        instantiate(cfg.normalization), trained.backbone.in_chans, resize=trained.augmentation.global_size
    )
    knn = OnlineKNN(
        torch.from_numpy(labelled.images),
        torch.from_numpy(labelled.labels),
        preprocess,
        train_mask=torch.from_numpy(~test),
    )
    expected = knn.accuracy(trained.export_backbone(), torch.device("cpu"))
    assert metrics["knn_top1"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["dataset@monitor.dataset=fits_folder", "monitor.dataset.root=/no/such/folder"], "label table"),
        (["data.augment_on=gpu"], "choose auto, device or workers"),
        (["callbacks.checkpoint.dirpath=/tmp/elsewhere"], r"dirpath=\$\{rc_run_dir:\}/checkpoints"),
    ],
)
def test_monitor_and_data_settings_are_checked(overrides, match, compose, merge_id):
    with pytest.raises(RadioCurationError, match=match):
        train_task.run(compose("train", tiny("byol", f"source_id={merge_id}", *overrides)))


def test_rerun_resumes_from_last_checkpoint_at_the_saved_step(compose, merge_id, runs_dir, tmp_path):
    common = [f"source_id={merge_id}", "trainer.max_epochs=3", "callbacks.checkpoint.every_n_train_steps=4"]
    crash = ["+callbacks.crash._target_=tests.ssl.callbacks.CrashAt", "+callbacks.crash.step=10"]
    with pytest.raises(RuntimeError, match="test crash at step 10"):
        train_task.run(compose("train", tiny("byol", *common, *crash)))
    record = [
        "+callbacks.record._target_=tests.ssl.callbacks.RecordFit",
        f"+callbacks.record.path={tmp_path}",
    ]
    result = train_task.run(compose("train", tiny("byol", *common, *record)))
    facts = json.loads((tmp_path / "rank0.json").read_text())
    assert facts["first_step"] == 8  # the last checkpoint before the crash, not 0
    manifest = _manifest(runs_dir, result["run_id"])
    assert manifest["attempts"] == 2
    assert manifest["info"]["resumed_from_step"] == 8
    assert manifest["counts"]["steps"] == facts["last_step"] == 3 * facts["batches"]


def test_random_subset_baseline_trains_on_n_windows_drawn_with_the_seed(compose, merge_id, runs_dir):
    overrides = tiny("byol", f"source_id={merge_id}", "random_subset=48", "++trainer.fast_dev_run=1")
    first = _source(compose("train", overrides))
    again = _source(compose("train", overrides))
    other = _source(compose("train", [*overrides, "seed=1"]))
    assert len(first.cutout_ids) == 48
    assert np.array_equal(first.cutout_ids, again.cutout_ids)
    assert not np.array_equal(first.cutout_ids, other.cutout_ids)
    assert set(first.cutout_ids) <= set(WindowReader(first.merged).cutout_ids)
    result = train_task.run(compose("train", overrides))
    assert _manifest(runs_dir, result["run_id"])["counts"]["images"] == 48
    everything = _source(compose("train", tiny("byol", f"source_id={merge_id}")))
    assert len(everything.cutout_ids) == len(WindowReader(first.merged).cutout_ids)


def test_pixel_cache_gives_the_reader_pixels(compose, merge_id, runs_dir):
    result = train_task.run(
        compose("train", tiny("byol", f"source_id={merge_id}", "data.cache=true", "++trainer.fast_dev_run=1"))
    )
    cache = Path(result["run_dir"]) / "cache" / "pixels.h5"
    source = _source(compose("train", tiny("byol", f"source_id={merge_id}")))
    from radio_curation.data.datamodule import CachedWindows

    cached = CachedWindows(cache)
    rows = [0, 5, len(cached) - 1]
    expected = WindowReader(source.merged).read(source.cutout_ids[rows])
    assert np.array_equal(cached.__getitems__(rows).numpy(), expected)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ([], "exactly one of subsample_id"),
        (["subsample_id={merge}", "source_id={merge}"], "exactly one of subsample_id"),
        (["subsample_id={merge}"], "'merge' run, but a 'sample' run is needed"),
        (["source_id={cutouts}"], "'cutouts' run, but a 'merge' run is needed"),
        (["source_id={merge}", "random_subset=100000"], "random_subset=100000"),
        (["source_id={merge}", "data.window_size=64"], "only \\[32\\] px windows"),
    ],
)
def test_wrong_sources_are_clear_errors(overrides, match, compose, merge_id, runs_dir):
    cutouts = _manifest_parents(runs_dir, merge_id)
    filled = [o.format(merge=merge_id, cutouts=cutouts) for o in overrides]
    with pytest.raises(RadioCurationError, match=match):
        train_task.run(compose("train", tiny("byol", *filled)))


def _manifest_parents(runs_dir: Path, merge_id: str) -> str:
    return RunStore(runs_dir).resolve(merge_id, stage="merge").parents[0]


def test_curated_subsample_trains_and_its_model_extracts_features(compose, merge_id, runs_dir):
    features = features_task.run(
        compose(
            "extract",
            [
                "stage=features",
                f"source_id={merge_id}",
                "backbone=timm",
                "backbone.name=test_resnet",
                "backbone.input_size=32",
                "resize=32",
                "num_workers=0",
                "accelerator=cpu",
            ],
        )
    )
    sample = curate_task.run(
        compose(
            "curate",
            [
                f"features_id={features['run_id']}",
                "clustering.n_clusters=[12,4]",
                "clustering.n_resampling_steps=[1,1]",
                "clustering.sample_size=[3,2]",
                "target_size=64",
            ],
        )
    )
    result = train_task.run(
        compose("train", tiny("byol", f"subsample_id={sample['run_id']}", "++trainer.fast_dev_run=1"))
    )
    manifest = _manifest(runs_dir, result["run_id"])
    assert manifest["parents"] == [sample["run_id"]]
    assert manifest["counts"]["images"] == 64
    assert manifest["info"]["source_stage"] == "sample"
    # The trained model is a backbone the features stage takes.
    again = features_task.run(
        compose(
            "extract",
            [
                "stage=features",
                f"source_id={merge_id}",
                "backbone=run",
                f"backbone.model_id={result['run_id']}",
                "resize=32",
                "num_workers=0",
                "accelerator=cpu",
            ],
        )
    )
    assert again["counts"]["rows"] == features["counts"]["rows"]


def test_training_in_a_precision_that_cannot_hold_the_normalised_windows_stops_before_it_starts(
    compose, merge_id, runs_dir
):
    # The imagenet recipe of the per-cutout .npy scripts this project replaces, on raw Jy/beam pixels,
    # trained in bf16.
    old = ["normalization=imagenet", "normalization.rescale=null", "trainer.precision=bf16-mixed"]
    with pytest.raises(RadioCurationError, match=r"normalization .*with trainer.precision=bf16-mixed"):
        train_task.run(compose("train", tiny("byol", f"source_id={merge_id}", *old)))
    assert not (runs_dir / "train").exists()
