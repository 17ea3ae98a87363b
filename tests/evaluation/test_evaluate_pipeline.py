"""evaluate.py on real stage runs of a tiny synthetic sky: features, clusters and a subsample."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import timm
import torch
from astropy.table import Table
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from matplotlib.image import imread
from scipy.linalg import sqrtm
from scipy.spatial.distance import pdist
from scipy.stats import mannwhitneyu

from radio_curation.curation.clusters import Hierarchy, read_subsample
from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.neighbours import adjacent_pairs, random_pairs
from radio_curation.evaluation.pool import WindowFeatures
from radio_curation.features.matrix import FeatureFile
from radio_curation.runs.manifest import read_manifest
from radio_curation.runs.store import RunStore
from radio_curation.tasks import curate, evaluate, extract
from tests.browser import rendered
from tests.conftest import CONFIG_DIR
from tests.kill_after import run_killed

TARGET = 30


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, data_dir):
    """cutouts → merge → features (timm test_vit) → cluster → sample, in one store for the module."""
    runs_dir = tmp_path_factory.mktemp("pipeline") / "runs"

    def compose(root: str, overrides: list[str]):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            common = [f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}", "logger=csv"]
            return hydra_compose(root, overrides=[*common, *overrides])

    torch.manual_seed(0)
    weights = runs_dir.parent / "test_vit.pth"
    torch.save(
        timm.create_model("test_vit", pretrained=False, num_classes=0, in_chans=1).state_dict(), weights
    )
    sky = ["survey.mosaics=2", "survey.size=256", "cutouts.window_size=32"]
    cutouts = extract.run(compose("extract", ["stage=cutouts", *sky]))["run_id"]
    merge = extract.run(compose("extract", ["stage=merge", f"cutouts_ids=[{cutouts}]"]))["run_id"]
    model = ["backbone=timm", "backbone.name=test_vit", f"backbone.checkpoint={weights}", "resize=32"]
    features = extract.run(
        compose(
            "extract", ["stage=features", f"source_id={merge}", *model, "num_workers=0", "accelerator=cpu"]
        )
    )["run_id"]
    clustering = [
        "clustering.n_clusters=[8,3]",
        "clustering.n_resampling_steps=[1,2]",
        "clustering.sample_size=[2,2]",
    ]
    sample = curate.run(compose("curate", [f"features_id={features}", *clustering, f"target_size={TARGET}"]))
    # The same windows through another randomly initialised model: what compare_id compares against.
    torch.manual_seed(1)
    other_weights = runs_dir.parent / "test_vit_other.pth"
    torch.save(
        timm.create_model("test_vit", pretrained=False, num_classes=0, in_chans=1).state_dict(), other_weights
    )
    other_model = [*model[:2], f"backbone.checkpoint={other_weights}", *model[3:]]
    other = extract.run(
        compose(
            "extract",
            ["stage=features", f"source_id={merge}", *other_model, "num_workers=0", "accelerator=cpu"],
        )
    )["run_id"]
    return {
        "compose": compose,
        "runs": RunStore(runs_dir),
        "features": features,
        "other_features": other,
        "sample": sample["run_id"],
    }


def _evaluate(pipeline, overrides: list[str]) -> tuple[dict, Path]:
    result = evaluate.run(pipeline["compose"]("evaluate", overrides))
    run_dir = Path(result["run_dir"])
    return json.loads((run_dir / "metrics.json").read_text()), run_dir


def _n_features(pipeline) -> int:
    with FeatureFile(pipeline["runs"].resolve(pipeline["features"]).artifact("features.h5")) as f:
        return f.n


def _features_and_windows(pipeline, key: str = "features") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """All feature rows (float64) of a features run and their window table, read directly."""
    pool = WindowFeatures(pipeline["runs"], pipeline["runs"].resolve(pipeline[key]))
    return pool.file.read(np.arange(pool.file.n)).astype(np.float64), pool.table


def _rankme(x: np.ndarray) -> float:
    """RankMe straight from the definition: exp entropy of the normalised singular values."""
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _adjacent(table: dict[str, np.ndarray]) -> np.ndarray:
    return adjacent_pairs(table["mosaic"], table["y0"], table["x0"], table["size"])


def test_representation_of_a_features_run(pipeline):
    metrics, run_dir = _evaluate(pipeline, ["eval=representation", f"features_id={pipeline['features']}"])
    m = metrics["metrics"]
    assert metrics["n_rows"] == _n_features(pipeline)
    assert metrics["parents"] == [pipeline["features"]]
    assert "adjacent windows" in metrics["info"]["positives"]
    x, table = _features_and_windows(pipeline)
    pairs = _adjacent(table)
    assert 0 < len(pairs) <= 100_000  # all of them are used: no sampling
    u = _unit(x)
    assert m["representation/alignment"] == pytest.approx(
        ((u[pairs[:, 0]] - u[pairs[:, 1]]) ** 2).sum(axis=1).mean(), rel=1e-5
    )
    assert m["representation/rankme"] == pytest.approx(_rankme(x), rel=1e-5)
    assert m["representation/effective_rank"] == pytest.approx(_rankme(x - x.mean(axis=0)), rel=1e-5)
    assert len(x) <= 5000  # uniformity over all pairs of all rows
    assert m["representation/uniformity"] == pytest.approx(
        np.log(np.exp(-2.0 * pdist(u, "sqeuclidean")).mean()), rel=1e-5
    )
    centred = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(metrics["spectrum"], centred, rtol=1e-4, atol=1e-6 * centred[0])
    assert imread(run_dir / "spectrum.png").std() > 0  # a drawn figure, not a blank canvas


def test_neighbours_statistics_and_gallery(pipeline):
    metrics, run_dir = _evaluate(
        pipeline, ["eval=neighbours", f"features_id={pipeline['features']}", "eval.n_queries=3", "eval.k=4"]
    )
    m = metrics["metrics"]
    assert m["neighbours/n_adjacent_pairs"] == m["neighbours/n_random_pairs"] > 0
    # The test recomputed from the definition: all adjacent pairs against as many random pairs (seed 0).
    x, table = _features_and_windows(pipeline)
    u = _unit(x)
    adjacent = _adjacent(table)
    far = random_pairs(len(x), len(adjacent), np.random.default_rng(0))
    near_d = 1.0 - (u[adjacent[:, 0]] * u[adjacent[:, 1]]).sum(axis=1)
    far_d = 1.0 - (u[far[:, 0]] * u[far[:, 1]]).sum(axis=1)
    expected = mannwhitneyu(near_d, far_d, alternative="less")
    assert m["neighbours/n_adjacent_pairs"] == len(adjacent)
    assert m["neighbours/adjacent_distance_mean"] == pytest.approx(near_d.mean(), rel=1e-4)
    assert m["neighbours/random_distance_mean"] == pytest.approx(far_d.mean(), rel=1e-4)
    assert m["neighbours/p_value"] == pytest.approx(expected.pvalue, rel=1e-3, abs=1e-12)
    gallery = metrics["gallery"]
    queries, neighbours = np.array(gallery["query_cutout_id"]), np.array(gallery["neighbour_cutout_id"])
    assert neighbours.shape == (3, 4)
    assert not (neighbours == queries[:, None]).any()
    for png in ("neighbour_distances.png", "neighbour_gallery.png"):
        assert imread(run_dir / png).ndim == 3
    chosen = [int(queries[1]), int(queries[0])]
    retrieval, _ = _evaluate(
        pipeline,
        [
            "eval=neighbours",
            f"features_id={pipeline['features']}",
            f"eval.query_ids=[{chosen[0]},{chosen[1]}]",
            "eval.k=4",
        ],
    )
    assert retrieval["gallery"]["query_cutout_id"] == chosen
    assert retrieval["gallery"]["neighbour_cutout_id"][0] == neighbours[1].tolist()


def test_curation_report_matches_the_clustering(pipeline):
    metrics, run_dir = _evaluate(pipeline, ["eval=curation_report", f"subsample_id={pipeline['sample']}"])
    m = metrics["metrics"]
    sample = pipeline["runs"].resolve(pipeline["sample"])
    cluster_run = pipeline["runs"].resolve(sample.parents[0])
    hierarchy = Hierarchy.load(cluster_run.artifact("clusters.h5"))
    _, sub_paths = read_subsample(sample.artifact("subsample.h5"))
    paths = hierarchy.paths()
    assert m["curation/subsample/n_points"] == TARGET == m["curation/random/n_points"]
    assert m["curation/pool/n_points"] == hierarchy.n
    for level in range(paths.shape[1]):
        expected = len(np.unique(sub_paths[:, level])) / len(np.unique(paths[:, level]))
        assert m[f"curation/subsample/coverage_level_{level + 1}"] == pytest.approx(expected)
        assert m[f"curation/pool/coverage_level_{level + 1}"] == 1.0
    shares = {k: v for k, v in m.items() if k.startswith("curation/subsample/share/")}
    assert shares and sum(shares.values()) == pytest.approx(1.0)  # labelled by the synthetic truth catalogue
    # Enrichment: the subsample's rare-class and empty shares over the random subsample's, from the same shares.
    rare = metrics["info"]["rare_classes"]
    pool = {k.rsplit("/", 1)[1]: v for k, v in m.items() if k.startswith("curation/pool/share/")}
    assert rare == sorted(c for c, v in pool.items() if v < 0.01 and c != "empty")
    in_sub = sum(m[f"curation/subsample/share/{c}"] for c in rare)
    in_random = sum(m[f"curation/random/share/{c}"] for c in rare)
    assert m["curation/enrichment/rare_subsample"] == pytest.approx(in_sub)
    assert m["curation/enrichment/rare_random"] == pytest.approx(in_random)
    assert m["curation/enrichment/empty_ratio"] == pytest.approx(
        m["curation/subsample/share/empty"] / m["curation/random/share/empty"]
    )
    page = (run_dir / "report.html").read_text()
    assert "rare-class share / the random subsample" in page
    assert page.count("data:image/png;base64,") >= 3 and "<table>" in page
    assert (run_dir / "exemplars_001.png").is_file() and (run_dir / "coverage.png").is_file()


def test_umap_of_a_subsample_in_its_pool(pipeline):
    metrics, run_dir = _evaluate(
        pipeline,
        [
            "eval=umap",
            f"subsample_id={pipeline['sample']}",
            "eval.n_neighbors=10",
            "eval.backend=umap",
            "eval.metric=euclidean",
            "eval.dpi=60",
        ],
    )
    n = _n_features(pipeline)
    assert metrics["n_rows"] == n and metrics["n_subsample"] == TARGET
    with h5py.File(run_dir / "umap.h5") as f:
        assert f["coords"].shape == (n, 2)
        assert int(f["in_subsample"][()].sum()) == TARGET
        assert set(f["colour"]) == {"cluster level 2", "label", "mosaic"}
    for name in ("cluster_level_2", "label", "mosaic"):
        assert imread(run_dir / f"umap_{name}.png").ndim == 3
        assert imread(run_dir / f"umap_subsample_{name}.png").ndim == 3


def test_knn_on_windows_labelled_by_the_truth_catalogue(pipeline):
    rare = "[fri,frii,resolved,wat,ht,halo,relic]"
    metrics, _ = _evaluate(
        pipeline,
        ["eval=knn", f"features_id={pipeline['features']}", "eval.folds=2", f"eval.exclude_labels={rare}"],
    )
    assert set(metrics["classes"]) == {"compact", "empty"}
    assert metrics["n_images"] == sum(metrics["classes"].values())
    assert metrics["info"]["labels"].endswith("truth.fits")
    assert 0.0 <= metrics["metrics"]["knn/accuracy_mean"] <= 1.0


def test_the_catalogue_group_decides_what_labels_the_windows(pipeline):
    probe = ["eval=knn", f"features_id={pipeline['features']}", "eval.folds=2"]
    with pytest.raises(RadioCurationError, match="has no window labels"):
        _evaluate(pipeline, [*probe, "catalogue=none"])
    with pytest.raises(RadioCurationError, match=r"no_such\.fits not found; set catalogue\.path"):
        _evaluate(pipeline, [*probe, "catalogue.path=/no_such.fits"])
    assert all(r.manifest["status"] == "complete" for r in pipeline["runs"].runs("evaluate"))  # none left


def test_labels_by_peak_give_an_older_cached_sky_its_peaks(pipeline, data_dir):
    rare = "[fri,frii,resolved,wat,ht,halo,relic]"
    probe = ["eval=knn", f"features_id={pipeline['features']}", "eval.folds=2", f"eval.exclude_labels={rare}"]
    (truth,) = data_dir.glob("synthetic/sky-n2-px256-*/truth.fits")
    fresh = Table.read(truth)
    older = fresh.copy()
    older.remove_column("peak")
    older.write(truth, overwrite=True)  # as a sky cached before truth catalogues had a peak column
    plain = read_manifest(_evaluate(pipeline, probe)[1])["counts"]["n_images"]
    assert "peak" not in Table.read(truth).colnames  # labels by total flux do not need it
    by_peak = _evaluate(pipeline, [*probe, "catalogue.peak_column=peak", "catalogue.min_peak=2.0e-3"])[1]
    np.testing.assert_array_equal(Table.read(truth)["peak"], fresh["peak"])
    # Other windows are scored: sources faint per beam no longer label them (some fall empty, others now
    # take the class of a compact source instead of an excluded extended one).
    assert read_manifest(by_peak)["counts"]["n_images"] != plain


def test_settings_that_change_the_result_change_the_run_id(pipeline):
    rare = "[fri,frii,resolved,wat,ht,halo,relic]"
    base = ["eval=knn", f"features_id={pipeline['features']}", "eval.folds=2", f"eval.exclude_labels={rare}"]

    def run(overrides: list[str]) -> dict:
        return evaluate.run(pipeline["compose"]("evaluate", [*base, *overrides]))

    first = run([])
    again = run(["batch_size=7", "device=cpu"])  # execution-only: how fast and where it is computed
    assert again["reused"] and again["run_id"] == first["run_id"]
    # Each of these changes the result (the catalogue's min_flux or min_peak relabels faint windows as empty).
    ids = {first["run_id"]}
    by_peak = ["catalogue.peak_column=peak", "catalogue.min_peak=1.0e-3"]
    for changed in (["eval.k=5"], ["seed=1"], ["catalogue.min_flux=1.0e-3"], by_peak, ["eval.dpi=60"]):
        other = run(changed)
        assert not other["reused"] and other["run_id"] not in ids, changed
        ids.add(other["run_id"])


def test_representation_compares_two_feature_sets(pipeline):
    ours, theirs = pipeline["features"], pipeline["other_features"]
    metrics, run_dir = _evaluate(
        pipeline, ["eval=representation", f"features_id={ours}", f"compare_id={theirs}"]
    )
    m = metrics["metrics"]
    x, _ = _features_and_windows(pipeline)
    y, _ = _features_and_windows(pipeline, "other_features")
    assert m["representation/rankme"] == pytest.approx(_rankme(x), rel=1e-5)
    assert m["representation/compare/rankme"] == pytest.approx(_rankme(y), rel=1e-5)
    assert _rankme(x) != pytest.approx(_rankme(y), rel=1e-3)  # two models, two spectra
    centred = np.linalg.svd(y - y.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(metrics["compare_spectrum"], centred, rtol=1e-4, atol=1e-6 * centred[0])
    # Fréchet distance of the two fitted Gaussians, from the definition with scipy's matrix square root.
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = sqrtm(cx @ cy).real
    expected = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(cx + cy - 2 * root)
    assert expected > 0
    assert m["representation/frechet_distance"] == pytest.approx(expected, rel=1e-3)
    same, _ = _evaluate(pipeline, ["eval=representation", f"features_id={ours}", f"compare_id={ours}"])
    assert same["metrics"]["representation/frechet_distance"] == pytest.approx(0.0, abs=1e-6 * expected)
    assert imread(run_dir / "spectrum.png").std() > 0


@pytest.mark.slow  # a command-line evaluate (imports torch, timm) and two in-process ones: ~30 s on 2 cores
def test_evaluation_killed_mid_way_resumes_to_the_uninterrupted_metrics(pipeline, data_dir, tmp_path):
    overrides = ["eval=representation", f"features_id={pipeline['features']}"]
    reference, reference_dir = _evaluate(pipeline, overrides)
    # From the command line, forced anew and killed once spectrum.png is drawn to its temporary name: before
    # it is in place and before metrics.json is written.
    forced = [*overrides, "force=true"]
    store = [f"paths.runs_dir={pipeline['runs'].root}", f"paths.data_dir={data_dir}", "logger=csv"]
    run_killed("radio_curation.evaluation.plots:spectrum_plot", 1, "evaluate.py", [*forced, *store], tmp_path)
    run_dir = reference_dir.with_name(f"{reference_dir.name}-2")
    assert read_manifest(run_dir)["status"] == "running"
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "spectrum.png").exists()
    assert list(run_dir.glob(".spectrum.png.tmp-*"))
    resumed, resumed_dir = _evaluate(pipeline, forced)
    assert resumed_dir == run_dir
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "complete" and manifest["attempts"] == 2
    assert resumed["run_id"] == run_dir.name
    assert {**resumed, "run_id": reference["run_id"]} == reference
    assert imread(run_dir / "spectrum.png").shape == imread(reference_dir / "spectrum.png").shape
    assert not list(run_dir.glob(".*.tmp-*"))


def test_the_curation_report_reads_as_a_page_in_a_browser(pipeline, tmp_path):
    _, run_dir = _evaluate(pipeline, ["eval=curation_report", f"subsample_id={pipeline['sample']}"])
    seen = rendered(run_dir / "report.html")
    assert len(seen["images"]) >= 3 and all(image["width"] > 0 for image in seen["images"])
    assert "the subsample vs the whole pool vs a random subsample of the same size" in seen["tables"]
    # The check sees a broken image: the same page with one image's data cut short.
    page = (run_dir / "report.html").read_text()
    broken = tmp_path / "report.html"
    start = page.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken.write_text(page[:start] + page[start + 100 :])
    assert [image["width"] for image in rendered(broken)["images"]].count(0) == 1
