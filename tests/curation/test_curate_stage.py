"""``curate.py``: the cluster and sample stages through the real configs and run store."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hydra.utils import instantiate
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from radio_curation.curation.clusters import Hierarchy, read_subsample
from radio_curation.curation.kmeans import HierarchicalKMeans
from radio_curation.errors import RadioCurationError
from radio_curation.runs.manifest import read_manifest
from radio_curation.tasks import curate
from tests.curation.conftest import write_features_run
from tests.curation.planted import planted
from tests.kill_after import run_killed

SIZES = [1200, 500, 100, 60, 40]
SMALL = [
    "clustering.n_clusters=[30,8,3]",
    "clustering.n_resampling_steps=[1,2,2]",
    "clustering.sample_size=[5,2,2]",
    "clustering.n_iters=10",
]


def _drawn_per_panel(path: Path, colour: str, panels: int) -> bool:
    """Whether each of ``panels`` side-by-side panels of a PNG has pixels of ``colour`` drawn in it."""
    image = imread(path)[..., :3]
    near = np.abs(image - np.asarray(to_rgb(colour))).max(axis=-1) < 0.02
    return all(strip.sum() > 20 for strip in np.array_split(near, panels, axis=1))


@pytest.fixture
def planted_run(features_run):
    x, labels = planted(SIZES, dim=12, separation=20.0, seed=0)
    return features_run(x), x, labels


def test_curate_clusters_then_samples(compose, planted_run, capsys):
    features_id, x, labels = planted_run
    cfg = compose("curate", [f"features_id={features_id}", "target_size=400", *SMALL])
    result = curate.run(cfg)
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("run_id=")]
    assert out == [f"run_id={result['clusters_id']}", f"run_id={result['run_id']}"]
    assert result["clusters_id"].startswith("cluster-") and result["run_id"].startswith("sample-")

    clusters_dir = Path(result["run_dir"]).parents[1] / "cluster" / result["clusters_id"]
    feature_ids = np.arange(len(x), dtype=np.int64) * 7 + 3
    with h5py.File(clusters_dir / "clusters.h5", "r") as f:
        np.testing.assert_array_equal(f["cutout_id"][()], feature_ids)
        for level, (k, n_in) in enumerate([(30, len(x)), (8, 30), (3, 8)], start=1):
            group = f[f"level_{level}"]
            assert group["centroids"].shape == (k, 12)
            assert group["assignment"].shape == group["distance"].shape == (n_in,)
            assert group["sizes"].shape == (k,) and group["sizes"][()].sum() == len(x)
            assert group["sizes"].dtype == np.int64
        # The default conditioning: centred, unit rows, spherical k-means (unit centroids).
        assert f.attrs["metric"] == "cosine" and f["conditioning"].attrs["normalize"]
        np.testing.assert_allclose(f["conditioning/mean"][()], x.astype(np.float64).mean(0), atol=1e-4)
        assert "projection" not in f["conditioning"]
        np.testing.assert_allclose(np.linalg.norm(f["level_1/centroids"][()], axis=1), 1.0, rtol=1e-5)
    clusters_manifest = read_manifest(clusters_dir)
    assert clusters_manifest["parents"] == [features_id]
    assert clusters_manifest["metrics"]["levels"]["level_1"]["k"] == 30
    assert {k: clusters_manifest["info"]["backend"][k] for k in ("backend", "device")} == {
        "backend": "faiss",
        "device": "cpu",
    }
    # One panel per level, each with its histogram; the objectives of the three levels in two panels.
    assert _drawn_per_panel(clusters_dir / "cluster_sizes.png", "tab:blue", 3)
    for colour in ("tab:blue", "tab:orange", "tab:green"):
        assert _drawn_per_panel(clusters_dir / "objective.png", colour, 2)

    sample_dir = Path(result["run_dir"])
    ids, paths = read_subsample(sample_dir / "subsample.h5")
    assert len(ids) == 400 and np.all(np.diff(ids) > 0) and np.isin(ids, feature_ids).all()
    hierarchy = Hierarchy.load(clusters_dir / "clusters.h5")
    np.testing.assert_array_equal(paths, hierarchy.paths(np.searchsorted(hierarchy.cutout_id, ids)))
    manifest = read_manifest(sample_dir)
    assert manifest["parents"] == [result["clusters_id"]]
    assert manifest["metrics"]["target_size"] == manifest["metrics"]["achieved_size"] == 400
    share = manifest["metrics"]["share_of_largest_clusters"]["level_3"]
    assert share["after"] < share["before"]
    # Per level, the pool's and the subsample's cluster sizes.
    assert _drawn_per_panel(sample_dir / "sampling.png", "tab:blue", 3)
    assert _drawn_per_panel(sample_dir / "sampling.png", "tab:orange", 3)
    # Balancing lifts the planted rare clusters (2-4) well above their 12% share of the pool.
    rare = labels[np.searchsorted(feature_ids, ids)] >= 2
    assert rare.mean() > 0.25


def test_clusters_id_reuses_a_clustering(compose, planted_run, monkeypatch, capsys):
    features_id, _, _ = planted_run
    first = curate.run(compose("curate", [f"features_id={features_id}", "target_size=300", *SMALL]))
    capsys.readouterr()
    monkeypatch.setattr(HierarchicalKMeans, "fit_level", lambda *a, **k: pytest.fail("clustered again"))
    again = curate.run(compose("curate", [f"features_id={features_id}", "target_size=300", *SMALL]))
    assert again["clusters_id"] == first["clusters_id"] and again["reused"]
    other = curate.run(
        compose("curate", [f"clusters_id={first['clusters_id']}", "sampler=random", "target_size=200"])
    )
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("run_id=")]
    assert out[-1] == f"run_id={other['run_id']}" and other["run_id"] != first["run_id"]
    assert read_manifest(Path(other["run_dir"]))["parents"] == [first["clusters_id"]]
    assert len(read_subsample(Path(other["run_dir"]) / "subsample.h5")[0]) == 200


def test_same_seed_same_subsample(compose, planted_run):
    features_id, _, _ = planted_run
    overrides = [f"features_id={features_id}", "target_size=300", *SMALL]
    one = curate.run(compose("curate", overrides))
    two = curate.run(compose("curate", [*overrides, "force=true"]))
    other = curate.run(compose("curate", [*overrides, "seed=1"]))
    assert two["run_id"] != one["run_id"]
    subsets = [read_subsample(Path(r["run_dir"]) / "subsample.h5")[0] for r in (one, two, other)]
    np.testing.assert_array_equal(subsets[0], subsets[1])
    assert not np.array_equal(subsets[0], subsets[2])


def test_killed_clustering_resumes_at_the_next_level(compose, planted_run, monkeypatch, tmp_path):
    features_id, x, _ = planted_run
    overrides = [f"features_id={features_id}", "target_size=300", *SMALL]
    calls = []
    real = HierarchicalKMeans.fit_level

    def killed_at_level_2(self, x, level, seed):
        calls.append(level)
        if level == 2 and calls.count(2) == 1:
            raise KeyboardInterrupt("killed")
        return real(self, x, level, seed)

    monkeypatch.setattr(HierarchicalKMeans, "fit_level", killed_at_level_2)
    with pytest.raises(KeyboardInterrupt):
        curate.run(compose("curate", overrides))
    cluster_dirs = list((tmp_path / "runs" / "cluster").iterdir())
    assert len(cluster_dirs) == 1
    assert read_manifest(cluster_dirs[0])["status"] != "complete"
    assert sorted(p.name for p in (cluster_dirs[0] / "levels").iterdir()) == ["conditioning.h5", "level_1.h5"]

    resumed = curate.run(compose("curate", overrides))
    assert calls == [1, 2, 2, 3]
    manifest = read_manifest(cluster_dirs[0])
    assert manifest["status"] == "complete" and manifest["info"]["resumed_after_level"] == 1

    monkeypatch.setattr(HierarchicalKMeans, "fit_level", real)
    assert write_features_run(tmp_path / "fresh", x) == features_id
    fresh = curate.run(compose("curate", [*overrides, f"paths.runs_dir={tmp_path / 'fresh'}"]))
    assert fresh["clusters_id"] == resumed["clusters_id"]
    a = Hierarchy.load(cluster_dirs[0] / "clusters.h5")
    b = Hierarchy.load(tmp_path / "fresh" / "cluster" / fresh["clusters_id"] / "clusters.h5")
    for la, lb in zip(a.levels, b.levels, strict=True):
        np.testing.assert_array_equal(la.assignment, lb.assignment)
        np.testing.assert_array_equal(la.centroids, lb.centroids)


def test_clear_errors(compose, planted_run):
    features_id, _, _ = planted_run
    with pytest.raises(RadioCurationError, match="larger than the 1900 rows"):
        curate.run(compose("curate", [f"features_id={features_id}", "target_size=5000", *SMALL]))
    with pytest.raises(RadioCurationError, match="only 1900 points"):
        curate.run(
            compose(
                "curate", [f"features_id={features_id}", "clustering=kmeans", "clustering.n_clusters=[5000]"]
            )
        )
    with pytest.raises(RadioCurationError, match="needs features_id"):
        curate.run(compose("curate", ["target_size=10"]))
    with pytest.raises(RadioCurationError, match="is a 'features' run"):
        curate.run(compose("curate", [f"clusters_id={features_id}", "target_size=10"]))
    with pytest.raises(RadioCurationError, match="needs target_size"):
        curate.run(compose("curate", [f"features_id={features_id}", *SMALL]))


def test_nonfinite_rows_are_counted_and_dropped_on_request(compose, features_run):
    x, _ = planted(SIZES, dim=12, separation=20.0, seed=1)
    x[[10, 20, 30]] = np.nan
    x[40, 0] = np.inf
    features_id = features_run(x, tag="with-nan")
    with pytest.raises(RadioCurationError, match=r"4 rows with NaN or Inf.*drop_nonfinite=true"):
        curate.run(compose("curate", [f"features_id={features_id}", "target_size=100", *SMALL]))
    result = curate.run(
        compose("curate", [f"features_id={features_id}", "target_size=100", "drop_nonfinite=true", *SMALL])
    )
    clusters_dir = Path(result["run_dir"]).parents[1] / "cluster" / result["clusters_id"]
    assert read_manifest(clusters_dir)["counts"]["nonfinite_rows_dropped"] == 4
    assert Hierarchy.load(clusters_dir / "clusters.h5").n == len(x) - 4


def test_conditioning_is_part_of_the_clustering_and_the_samplers_use_its_space(compose, planted_run):
    features_id, x, _ = planted_run
    overrides = [f"features_id={features_id}", "target_size=200", *SMALL]
    plain = curate.run(compose("curate", overrides))
    whitened = curate.run(
        compose(
            "curate",
            [*overrides, "conditioning=pca_whiten", "conditioning.whiten_dim=6", "sampler=prototypicality"],
        )
    )
    assert whitened["clusters_id"] != plain["clusters_id"]
    clusters_dir = Path(whitened["run_dir"]).parents[1] / "cluster" / whitened["clusters_id"]
    hierarchy = Hierarchy.load(clusters_dir / "clusters.h5")
    assert hierarchy.levels[0].centroids.shape == (30, 6)
    assert read_manifest(clusters_dir)["info"]["conditioning"]["whitened_dim"] == 6
    # Prototypicality ranks by the cosine distance to the centroid in the conditioned space.
    y = hierarchy.conditioning.transform(x)
    c = hierarchy.levels[0].centroids[hierarchy.levels[0].assignment]
    distance = 1 - (y * c).sum(1) / np.linalg.norm(c, axis=1)
    ids, _ = read_subsample(Path(whitened["run_dir"]) / "subsample.h5")
    chosen = np.isin(np.arange(len(x)) * 7 + 3, ids)
    assert chosen.sum() == 200 and distance[chosen].min() >= distance[~chosen].max() - 1e-5


def test_dedup_then_balanced_through_the_config(compose, features_run):
    rng = np.random.default_rng(0)
    base, _ = planted(SIZES, dim=12, separation=20.0, seed=2)
    copies = base[:300] + 1e-4 * rng.standard_normal((300, 12)).astype(np.float32)
    features_id = features_run(np.concatenate([base, copies]), tag="dups")
    cfg = compose(
        "curate",
        [
            f"features_id={features_id}",
            "sampler=dedup_then_balanced",
            "sampler.semdedup.eps=0.001",
            "target_size=800",
            *SMALL,
        ],
    )
    result = curate.run(cfg)
    assert result["info"]["samplers"]["semdedup"]["removed"] >= 300
    assert result["info"]["samplers"]["balanced"]["out"] == 800
    ids, _ = read_subsample(Path(result["run_dir"]) / "subsample.h5")
    assert len(ids) == 800


def test_changing_the_levels_is_one_override(compose, planted_run):
    features_id, _, _ = planted_run
    cfg = compose(
        "curate",
        [
            f"features_id={features_id}",
            "clustering=hierarchical_kmeans",
            "clustering.n_clusters=[64,8]",
            "target_size=300",
        ],
    )
    result = curate.run(cfg)
    clusters_dir = Path(result["run_dir"]).parents[1] / "cluster" / result["clusters_id"]
    hierarchy = Hierarchy.load(clusters_dir / "clusters.h5")
    assert [level.k for level in hierarchy.levels] == [64, 8]
    # The default's resampling steps [1, 10, 10] follow the two levels: one step, then ten.
    assert [len(level.resampling_objective) for level in hierarchy.levels] == [2, 11]
    # experiment=lotss_dr2's per-level settings follow too; k-means++ above the random first level.
    lotss = instantiate(
        compose("curate", ["experiment=lotss_dr2", "clustering.n_clusters=[6000,400]"]).clustering
    )
    assert lotss.init == ["random", "kmeans++"] and lotss.sample_size == [1, 7]
    assert instantiate(compose("curate", ["experiment=lotss_dr2"]).clustering).init == [
        "random",
        "kmeans++",
        "kmeans++",
    ]


def test_sample_killed_before_its_subsample_is_in_place_resumes(
    compose, planted_run, runs_dir, data_dir, tmp_path
):
    features_id, _, _ = planted_run
    overrides = [f"features_id={features_id}", "target_size=300", *SMALL]
    reference = curate.run(compose("curate", overrides))
    want_ids, want_paths = read_subsample(Path(reference["run_dir"]) / "subsample.h5")
    # From the command line, a forced new sample of the same clustering, killed once subsample.h5 is written
    # to its temporary name but before it is moved into place.
    forced = [f"clusters_id={reference['clusters_id']}", "target_size=300", "force=true"]
    store = [f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}", "logger=csv"]
    run_killed("radio_curation.tasks.curate:write_subsample", 1, "curate.py", [*forced, *store], tmp_path)
    run_dir = runs_dir / "sample" / f"{reference['run_id']}-2"
    assert read_manifest(run_dir)["status"] == "running"
    assert not (run_dir / "subsample.h5").exists() and list(run_dir.glob(".subsample.h5.tmp-*"))
    resumed = curate.run(compose("curate", forced))
    assert resumed["run_id"] == run_dir.name and not resumed["reused"]
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "complete" and manifest["attempts"] == 2
    got_ids, got_paths = read_subsample(run_dir / "subsample.h5")
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_paths, want_paths)
    assert manifest["metrics"] == read_manifest(Path(reference["run_dir"]))["metrics"]
    assert not list(run_dir.glob(".*.tmp-*"))
