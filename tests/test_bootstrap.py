"""experiment=bootstrap: the loop makes its own features, chains its runs by ID and reuses them on a rerun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from radio_curation.bootstrap import BootstrapLoop
from radio_curation.cutouts.reader import WindowReader
from radio_curation.errors import RadioCurationError
from radio_curation.runs.store import RunStore

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "experiment=bootstrap",
    "survey.mosaics=2",
    "survey.size=256",
    "cutouts.window_size=32",
    "bootstrap.pretrain_subset=48",
    "bootstrap.max_epochs=2",
    "bootstrap.min_peak_snr=4",
    "bootstrap.seeds=[0,1]",
    "target_size=24",
    "clustering.n_clusters=[8,4,2]",
    "clustering.sample_size=[2,1,1]",
    "augmentation.global_size=16",
    "resize=24",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "ssl.warmup_epochs=0",
]


@pytest.mark.slow
def test_bootstrap_loop_chains_its_runs_by_id_and_a_rerun_reuses_them(compose, runs_dir):
    loop = BootstrapLoop(compose, TINY)
    runs = loop.run()
    store = RunStore(runs_dir)
    parents = {r.run_id: r.parents for r in store.runs()}
    # The bootstrap model trains on the windows with a detection (the same cutouts merged with a peak S/N
    # cut); the whole pool's features come from that model.
    assert runs.detections != runs.merge
    assert parents[runs.detections] == parents[runs.merge]
    detections = WindowReader(store.resolve(runs.detections).artifact("merged.h5")).table()
    pool = WindowReader(store.resolve(runs.merge).artifact("merged.h5")).table()
    assert 48 <= len(detections["cutout_id"]) < len(pool["cutout_id"])
    assert detections["peak_snr"].min() >= 4 > pool["peak_snr"].min()
    assert parents[runs.bootstrap_model] == [runs.detections]
    assert set(parents[runs.features]) == {runs.merge, runs.bootstrap_model}
    assert parents[runs.clusters] == [runs.features]
    assert parents[runs.curated] == parents[runs.random] == [runs.clusters]
    assert store.resolve(runs.bootstrap_model).manifest["counts"]["images"] == 48
    # The bootstrap model trains for its own bootstrap.max_epochs, the subsamples' models for trainer.max_epochs.
    assert store.resolve(runs.bootstrap_model).manifest["counts"]["epochs"] == 2
    for subsample, models in ((runs.curated, runs.curated_models), (runs.random, runs.random_models)):
        assert sorted(models) == [0, 1] and len(set(models.values())) == 2
        for model in models.values():
            assert parents[model] == [subsample]
            assert store.resolve(model).manifest["counts"]["images"] == 24
            assert store.resolve(model).manifest["counts"]["epochs"] == 1
    before = {r.run_id: r.manifest["attempts"] for r in store.runs()}

    again = BootstrapLoop(compose, TINY).run()
    assert again == runs
    assert {r.run_id: r.manifest["attempts"] for r in store.runs()} == before  # nothing recomputed


def test_the_loop_needs_its_settings(compose):
    with pytest.raises(RadioCurationError, match="experiment=bootstrap"):
        BootstrapLoop(compose, ["experiment=demo"])
    with pytest.raises(RadioCurationError, match="at least 2 seeds"):
        BootstrapLoop(compose, ["experiment=bootstrap", "bootstrap.seeds=[0]"])


def test_batch_norm_from_windows_normalises_them_and_keeps_the_random_weights(compose):
    loop = BootstrapLoop(compose, TINY)
    rng = np.random.default_rng(0)
    windows = (1e-4 * rng.standard_normal((96, 1, 32, 32))).astype(np.float32)
    windows[::3, :, 12:20, 12:20] += 5e-3  # a bright source in a third of them
    plain, _ = loop.extractor(None, 32)
    fitted, preprocess = loop.extractor(None, 32, batch_norm_from=windows, batch=32)
    assert not fitted.training
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), fitted.parameters(), strict=True))
    first = next(m for m in fitted.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    first.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        fitted(preprocess(torch.from_numpy(windows)))
    # The first batch-norm layer's statistics are now its input's over these windows (3 equal batches).
    inputs = seen[0].transpose(0, 1).flatten(1)
    assert torch.allclose(first.running_mean, inputs.mean(1), rtol=1e-4, atol=1e-6)
    assert torch.allclose(first.running_var, inputs.var(1), rtol=0.05)
    plain_first = next(m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(plain_first.running_mean, torch.zeros_like(plain_first.running_mean))
    features = loop.embed(windows, None, batch=32, batch_norm_from_windows=True)
    with torch.no_grad():
        assert np.allclose(features, fitted(preprocess(torch.from_numpy(windows))).numpy(), atol=1e-5)
    assert not np.allclose(features, loop.embed(windows, None), atol=1e-3)


@pytest.mark.slow
def test_bench_science_quick_prints_the_three_result_lines(tmp_path, shared_data):
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_science.py",
            "--quick",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--data-dir",
            str(tmp_path / "data"),
            "--mirabest",
            str(shared_data / "mirabest"),
            "--json",
            str(tmp_path / "science.json"),
            "--plot",
            str(tmp_path / "recall.png"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line.split() for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    kinds = [(words[1], dict(w.split("=", 1) for w in words[2:])) for words in lines]
    features = [v for k, v in kinds if k == "features"]
    enrichment = [v for k, v in kinds if k == "enrichment"]
    pretraining = {v["probe"]: v for k, v in kinds if k == "pretraining"}
    assert len(features) == 1 and set(features[0]) == {
        "knn_ssl",
        "knn_random_init",
        "knn_stats",
        "knn_random_bn",
    }
    assert all(0.0 <= float(v) <= 1.0 for v in features[0].values())
    assert len(enrichment) == 1 and set(enrichment[0]) == {
        "rare_subsample",
        "rare_random",
        "ratio",
        "empty_ratio",
        "rare_pool",
        "ratio_pool",
    }
    assert set(pretraining) == {"synthetic", "mirabest_confident"}
    for row in pretraining.values():
        assert row["seeds"] == "3"
        assert float(row["ci_low"]) <= float(row["diff"]) <= float(row["ci_high"])
        assert float(row["diff"]) == pytest.approx(float(row["curated"]) - float(row["random"]), abs=2e-4)
    written = json.loads((tmp_path / "science.json").read_text())
    assert set(written["recall"]) == set(features[0])
    for name, per_class in written["recall"].items():  # the per-class recalls behind each balanced accuracy
        assert "compact" in per_class and all(0.0 <= r <= 1.0 for r in per_class.values())
        assert np.mean(list(per_class.values())) == pytest.approx(written["features"][name], abs=1e-9)
        assert float(features[0][name]) == pytest.approx(written["features"][name], abs=1e-4)
    assert (tmp_path / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
