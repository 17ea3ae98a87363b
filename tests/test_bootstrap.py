"""experiment=bootstrap: the loop makes its own features, draws every arm's subsample per seed, chains its
runs by ID, reuses them on a rerun, and probes every model on windows it cannot have seen."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy import units as u
from astropy.coordinates import SkyCoord
from hydra.utils import instantiate

from radio_curation.backbones import build_backbone
from radio_curation.bootstrap import BootstrapLoop, mirabest_groups, recalibrate_batch_norm
from radio_curation.cutouts.index import read_index
from radio_curation.cutouts.reader import WindowReader
from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.inputs import window_table
from radio_curation.evaluation.radio_stats import STATISTICS, radio_statistics
from radio_curation.runs.store import RunStore
from radio_curation.tasks import train as train_task

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
    "bootstrap.method_seeds=[0,1]",
    "bootstrap.clustering_seeds=[0,1]",
    "bootstrap.probe_sky=['survey.seed=5','survey.dec=60.0']",
    "bootstrap.arms.size_cut.merge=['merge.min_mask_fraction=0.005']",
    "target_size=24",
    "clustering.n_clusters=[8,4,2]",
    "clustering.sample_size=[2,1,1]",
    "augmentation.global_size=16",
    "augmentation.local_size=8",
    "resize=24",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "ssl.warmup_epochs=0",
]


@pytest.mark.slow
@pytest.mark.timeout(3600)
# submitit's debug executor (the launcher's check below) leaves its jobs' log files open
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_bootstrap_loop_draws_every_arm_per_seed_and_no_probe_source_is_trained_on(compose, runs_dir):
    loop = BootstrapLoop(compose, TINY)
    runs = loop.run()
    store = RunStore(runs_dir)
    parents = {r.run_id: r.parents for r in store.runs()}
    # The bootstrap model trains on the windows with a detection; the whole pool's features come from it.
    assert parents[runs.detections] == parents[runs.merge]
    detections = WindowReader(store.resolve(runs.detections).artifact("merged.h5")).table()
    pool = WindowReader(store.resolve(runs.merge).artifact("merged.h5")).table()
    assert 48 <= len(detections["cutout_id"]) < len(pool["cutout_id"])
    assert parents[runs.bootstrap_model] == [runs.detections]
    assert set(parents[runs.features]) == {runs.merge, runs.bootstrap_model}
    assert store.resolve(runs.bootstrap_model).manifest["counts"]["epochs"] == 2
    assert len(set(runs.clusterings.values())) == 2
    # Every arm of the recipe with every seed, balanced and random for every other method.
    plan = {(m.arm, m.method, m.seed) for m in runs.models}
    arms = {"random", "detections", "size_cut", "balanced_stats", "balanced"}
    methods = {"simclr", "byol", "dino", "vicreg"}
    assert plan == {(a, "simclr", s) for a in arms for s in (0, 1)} | {
        (a, m, s) for a in ("random", "balanced") for m in methods - {"simclr"} for s in (0, 1)
    }
    by = {(m.arm, m.method, m.seed): m for m in runs.models}
    for model in runs.models:
        record = store.resolve(model.run_id)
        assert record.manifest["counts"]["images"] == len(model.cutout_ids) == 24
        assert model.method in json.dumps(record.manifest["config"]["ssl"]["_target_"]).lower()
    for arm in arms:
        # Seed s redraws the subsample: two seeds, two different draws; every method trains on the same one.
        assert not np.array_equal(by[arm, "simclr", 0].cutout_ids, by[arm, "simclr", 1].cutout_ids)
    assert np.array_equal(by["balanced", "simclr", 1].cutout_ids, by["balanced", "dino", 1].cutout_ids)
    for arm, column, cut in (("detections", "peak_snr", 4.0), ("size_cut", "mask_fraction", 0.005)):
        merged = store.resolve(by[arm, "simclr", 0].merge).artifact("merged.h5")
        assert window_table(merged, by[arm, "simclr", 0].cutout_ids)[column].min() >= cut
    stats_sample = store.resolve(runs.subsamples["balanced_stats"][0])
    stats_features = store.resolve(store.resolve(stats_sample.parents[0]).parents[0])
    assert stats_features.manifest["config"]["backbone"]["_target_"].endswith("radio_statistics_backbone")
    # The held-out sky: its own mosaics, and no source of it within reach of any training window.
    probe_merged = store.resolve(runs.probe_merge).artifact("merged.h5")
    probe_paths = set(read_index(probe_merged, ["cutout_id"]).mosaics["path"])
    truth = instantiate(loop.cfg("evaluate").catalogue).catalogue(probe_merged)
    probe_sources = SkyCoord(truth.ra * u.deg, truth.dec * u.deg)
    for model in runs.models:
        merged = store.resolve(model.merge).artifact("merged.h5")
        assert not set(read_index(merged, ["cutout_id"]).mosaics["path"]) & probe_paths
        trained = window_table(merged, model.cutout_ids)
        windows = SkyCoord(trained["ra"] * u.deg, trained["dec"] * u.deg)
        assert windows.match_to_catalog_sky(probe_sources)[1].min() > 1 * u.deg
        assert len(loop.sources(model.merge, model.cutout_ids)) > 0
    before = {r.run_id: r.manifest["attempts"] for r in store.runs()}
    # Again, every model as a submitit job (debug: in this process): the same runs, all reused.
    launcher = f"bootstrap.launcher={{cluster:debug,folder:'{runs_dir / 'submitit'}'}}"
    again = BootstrapLoop(compose, [*TINY, launcher]).run()
    assert again.ids() == runs.ids()
    assert {r.run_id: r.manifest["attempts"] for r in store.runs()} == before  # nothing recomputed


def test_the_plan_is_every_arm_for_the_recipe_and_balanced_vs_random_for_every_method(compose):
    loop = BootstrapLoop(compose, ["experiment=bootstrap"])
    plan = [(method, seed, tuple(arms)) for method, seed, arms in loop.plan()]
    recipe = [p for p in plan if p[0] == "simclr"]
    assert [s for _, s, _ in recipe] == list(range(10))
    assert all(
        set(arms) == {"random", "detections", "size_cut", "balanced_stats", "balanced"} for *_, arms in recipe
    )
    for method in ("byol", "dino", "vicreg"):
        rows = [p for p in plan if p[0] == method]
        assert [s for _, s, _ in rows] == list(range(5))
        assert all(arms == ("random", "balanced") for *_, arms in rows)


@pytest.mark.parametrize("method", ["simclr", "byol", "dino", "vicreg"])
def test_every_method_builds_with_the_recipe(compose, method):
    loop = BootstrapLoop(compose, ["experiment=bootstrap"])
    cfg = loop.cfg("train", *loop.methods[method])
    module = train_task._build_model(cfg)
    assert type(module).__name__.lower() == method
    views = [torch.randn(4, 1, 32, 32) for _ in range(2)]
    assert module.backbone(views[0]).shape == (4, 256)


def test_the_loop_needs_its_settings(compose):
    with pytest.raises(RadioCurationError, match="experiment=bootstrap"):
        BootstrapLoop(compose, ["experiment=demo"])
    with pytest.raises(RadioCurationError, match="at least 2 seeds"):
        BootstrapLoop(compose, ["experiment=bootstrap", "bootstrap.seeds=[0]"])
    with pytest.raises(RadioCurationError, match=r"not among bootstrap\.arms"):
        BootstrapLoop(compose, ["experiment=bootstrap", "bootstrap.reference_arm=uniform"])


def test_batch_norm_recalibration_on_a_common_set_keeps_the_weights_and_takes_its_statistics(compose):
    loop = BootstrapLoop(compose, TINY)
    rng = np.random.default_rng(0)
    windows = (1e-4 * rng.standard_normal((96, 1, 32, 32))).astype(np.float32)
    windows[::3, :, 12:20, 12:20] += 5e-3  # a bright source in a third of them
    plain, _ = loop.extractor(None, 32)
    fitted, preprocess = loop.extractor(None, 32, batch_norm_from=windows, batch=96)
    assert not fitted.training
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), fitted.parameters(), strict=True))
    norms = [m for m in fitted.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    probe = copy.deepcopy(fitted)
    seen = {}
    for i, m in enumerate(m for m in probe.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        m.register_forward_pre_hook(lambda module, args, i=i: seen.setdefault(i, args[0]))
    # In train mode each layer normalises by the common set's own statistics (one batch of all of it):
    # those are what the running statistics now hold, layer by layer.
    probe.train()
    with torch.no_grad():
        probe(preprocess(torch.from_numpy(windows)))
    for i, m in enumerate(norms):
        inputs = seen[i].transpose(0, 1).flatten(1)
        assert torch.allclose(m.running_mean, inputs.mean(1), rtol=1e-4, atol=1e-5)
        assert torch.allclose(m.running_var, inputs.var(1), rtol=1e-3, atol=1e-6)
    plain_first = next(m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(plain_first.running_mean, torch.zeros_like(plain_first.running_mean))
    features = loop.embed(windows, None, batch_norm_from=windows, batch=96)
    with torch.no_grad():
        assert np.allclose(features, fitted(preprocess(torch.from_numpy(windows))).numpy(), atol=1e-5)
    assert not np.allclose(features, loop.embed(windows, None), atol=1e-3)
    # The same common set gives every network the same statistics whatever it saw before.
    again, _ = loop.extractor(None, 32, batch_norm_from=windows[::-1].copy(), batch=96)
    recalibrate_batch_norm(again, preprocess, windows, batch=96)
    assert all(
        torch.allclose(a.running_mean, b.running_mean, atol=1e-6)
        for a, b in zip(
            norms, [m for m in again.modules() if isinstance(m, torch.nn.BatchNorm2d)], strict=True
        )
    )


def test_radio_stats_backbone_gives_the_radio_statistics_of_raw_windows(compose):
    rng = np.random.default_rng(1)
    windows = (1e-4 * rng.standard_normal((5, 1, 32, 32))).astype(np.float32)
    windows[2, :, 10:20, 8:24] += 3e-3
    extractor = build_backbone(compose("extract", ["stage=features", "backbone=radio_stats"]).backbone)
    assert extractor.feature_dim == len(STATISTICS)
    with torch.no_grad():
        features = extractor(torch.from_numpy(windows)).numpy()
    np.testing.assert_allclose(features, radio_statistics(windows), rtol=1e-6)


def test_mirabest_groups_put_one_source_in_one_group(tmp_path):
    (tmp_path / "labels.csv").write_text(
        "file,ra_deg,dec_deg\na.fits,10.001,5.002\nb.fits,10.003,5.001\nc.fits,20.0,-5.0\n"
    )
    groups = mirabest_groups(tmp_path, np.array(["a.fits", "b.fits", "c.fits", "d.fits"]))
    assert groups[0] == groups[1] and len(set(groups.tolist())) == 3


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bench_science_quick_prints_every_result_line_for_every_arm_and_method(tmp_path, shared_data):
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
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line.split() for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    kinds = [(words[1], dict(w.split("=", 1) for w in words[2:])) for words in lines]
    features = [v for k, v in kinds if k == "features"]
    enrichment = [v for k, v in kinds if k == "enrichment"]
    assert len(features) == 1
    assert {"knn_ssl", "knn_random_bn", "knn_random_init", "knn_stats", "gap_bn", "ci_low", "ci_high"} <= set(
        features[0]
    )
    assert int(features[0]["seeds"]) == 3
    assert float(features[0]["ci_low"]) <= float(features[0]["gap_bn"]) <= float(features[0]["ci_high"])
    assert len(enrichment) == 1
    e = enrichment[0]
    assert int(e["clustering_seeds"]) == 3
    assert float(e["ratio_pool_min"]) <= float(e["ratio_pool"]) <= float(e["ratio_pool_max"])
    assert {"rare_sources_balanced", "rare_sources_random", "empty_ratio"} <= set(e)
    pretraining = {(v["arm"], v["ssl"], v["probe"], v["bn"]): v for k, v in kinds if k == "pretraining"}
    probes = ("heldout_sky", "pool_excluded", "mirabest_split", "mirabest_cv")
    expected = {
        (arm, "simclr", p, bn)
        for arm in ("detections", "size_cut", "balanced_stats", "balanced")
        for p in probes
        for bn in ("common", "own")
    } | {
        ("balanced", m, p, bn) for m in ("byol", "dino", "vicreg") for p in probes for bn in ("common", "own")
    }
    assert set(pretraining) == expected
    for (_, method, _, _), row in pretraining.items():
        assert row["vs"] == "random"
        assert row["seeds"] == ("3" if method == "simclr" else "2")
        assert float(row["ci_low"]) <= float(row["diff"]) <= float(row["ci_high"])
        assert float(row["diff"]) == pytest.approx(float(row["arm_mean"]) - float(row["vs_mean"]), abs=2e-4)
    mirabest = {(v["representation"], v["probe"]) for k, v in kinds if k == "mirabest"}
    assert mirabest == {
        (r, p)
        for r in ("ssl", "ssl_own", "random_bn", "random_init", "stats")
        for p in ("mirabest_split", "mirabest_cv")
    }
    written = json.loads((tmp_path / "science.json").read_text())
    assert len(written["features"]["knn_ssl"]) == 3
