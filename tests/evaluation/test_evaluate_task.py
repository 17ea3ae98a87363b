"""evaluate.py on labelled images through a model: probes, representation, UMAP; outputs and reuse."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits
from hydra.utils import instantiate
from matplotlib.image import imread
from scipy.spatial.distance import pdist

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.embed import embed_images
from radio_curation.runs.stage import resolve_inputs
from radio_curation.tasks import evaluate

MODEL = ["backbone=resnet18", "normalization=minmax", "resize=32", "batch_size=16", "device=cpu"]


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory):
    """30 point sources and 30 double sources in noise, as a FITS folder with a split column."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]

    def blob(y, x):
        return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)

    rows = ["file,label,split"]
    for i in range(60):
        kind = "point" if i % 2 == 0 else "double"
        image = blob(16, 16) if kind == "point" else blob(16, 6) + blob(16, 26)
        image = (image + 0.05 * rng.normal(size=image.shape)).astype(np.float32)
        fits.PrimaryHDU(image).writeto(root / f"img{i:02d}.fits")
        rows.append(f"img{i:02d}.fits,{kind},{'test' if i >= 48 else 'train'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _folder(root: Path) -> list[str]:
    return ["dataset=fits_folder", f"dataset.root={root}", *MODEL]


def _entropy_rank(x: np.ndarray) -> float:
    """RankMe from its definition: exp entropy of the normalised singular values."""
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


def _metrics(result: dict) -> dict:
    return json.loads((Path(result["run_dir"]) / "metrics.json").read_text())


def test_linear_probe_run_writes_metrics_and_plots_and_is_reused(compose, labelled_folder):
    cfg = compose(
        "evaluate", ["eval=linear_probe", "eval.folds=3", "eval.cs=[0.1,10.0]", *_folder(labelled_folder)]
    )
    result = evaluate.run(cfg)
    assert result["run_id"].startswith("evaluate-") and not result["reused"]
    run_dir = Path(result["run_dir"])
    metrics = _metrics(result)
    assert metrics["eval"] == "linear_probe"
    assert metrics["n_images"] == 60 and metrics["n_classes"] == 2
    assert metrics["classes"] == {"double": 30, "point": 30}
    assert len(metrics["folds"]["accuracy"]) == 3
    assert metrics["metrics"]["linear_probe/accuracy_mean"] > 0.9  # points vs doubles are easy
    assert "linear_probe/split_accuracy" in metrics["metrics"]
    assert np.asarray(metrics["confusion"]).sum() == 60
    assert np.asarray(metrics["split_confusion"]).sum() == 12
    for png in ("confusion.png", "confusion_split.png"):
        assert imread(run_dir / png).ndim == 3
    assert result["metrics"]["linear_probe/accuracy_mean"] == metrics["metrics"]["linear_probe/accuracy_mean"]
    assert result["counts"]["n_images"] == 60
    with open(run_dir / "csv" / "files.csv") as f:  # mirrored to the (CSV) tracker
        logged = {row["key"] for row in csv.DictReader(f)}
    assert {"confusion", "confusion_split", "metrics.json"} <= logged
    again = evaluate.run(cfg)
    assert again["reused"] and again["run_id"] == result["run_id"]


def test_knn_on_official_mirabest_batches(compose, tmp_path):
    rng = np.random.default_rng(1)
    for name, n in (("data_batch_1", 24), ("test_batch", 8)):
        labels = np.tile([0, 5], n // 2)  # confident FRI / FRII
        data = np.zeros((n, 16 * 16), dtype=np.uint8)
        data[labels == 0, :128] = 200  # FRI: bright top half, FRII: bright bottom half
        data[labels == 5, 128:] = 200
        data += rng.integers(0, 20, size=data.shape, dtype=np.uint8)
        with open(tmp_path / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist()}, f)
    cfg = compose(
        "evaluate",
        ["eval=knn", "eval.k=5", "eval.folds=4", "dataset=mirabest", f"dataset.root={tmp_path}", *MODEL],
    )
    metrics = _metrics(evaluate.run(cfg))
    assert metrics["n_images"] == 32
    assert metrics["classes"] == {"FRI": 16, "FRII": 16}
    assert metrics["metrics"]["knn/accuracy_mean"] > 0.9
    assert np.asarray(metrics["split_confusion"]).sum() == 8


def test_representation_of_a_model_on_a_dataset(compose, labelled_folder):
    cfg = compose("evaluate", ["eval=representation", *_folder(labelled_folder)])
    result = evaluate.run(cfg)
    metrics = _metrics(result)
    m = metrics["metrics"]
    assert metrics["n_images"] == 60 and metrics["feature_dim"] == 512
    # The same seeded model on the same images, the metrics then computed from their definitions.
    read = resolve_inputs(cfg, evaluate.declaration(cfg))
    extractor, preprocess, _ = evaluate.inputs(read, evaluate.evaluation(read.cfg)).images.model()
    images = instantiate(cfg.dataset).load().images
    x = embed_images(extractor, preprocess, images).astype(np.float64)
    # Positives: each image rotated by 90° and mirrored, done here on the raw pixels.
    y = embed_images(extractor, preprocess, np.ascontiguousarray(np.rot90(images, 1, (-2, -1))[..., ::-1]))
    unit_x = x / np.linalg.norm(x, axis=1, keepdims=True)
    unit_y = y / np.linalg.norm(y, axis=1, keepdims=True)
    assert m["representation/rankme"] == pytest.approx(_entropy_rank(x), rel=2e-3)
    assert m["representation/effective_rank"] == pytest.approx(_entropy_rank(x - x.mean(0)), rel=2e-3)
    assert m["representation/alignment"] == pytest.approx(((unit_x - unit_y) ** 2).sum(1).mean(), rel=1e-3)
    assert m["representation/uniformity"] == pytest.approx(
        np.log(np.exp(-2.0 * pdist(unit_x, "sqeuclidean")).mean()), rel=1e-4
    )
    assert len(metrics["spectrum"]) == 512
    assert imread(Path(result["run_dir"]) / "spectrum.png").std() > 0


def test_umap_of_a_labelled_dataset(compose, labelled_folder):
    cfg_overrides = [
        "eval=umap",
        "eval.n_neighbors=10",
        "eval.backend=umap",
        "eval.metric=euclidean",
        *_folder(labelled_folder),
    ]
    cfg = compose("evaluate", cfg_overrides)
    result = evaluate.run(cfg)
    run_dir = Path(result["run_dir"])
    assert _metrics(result)["n_images"] == 60
    with h5py.File(run_dir / "umap.h5") as f:
        assert f["coords"].shape == (60, 2)
        assert sorted(set(f["colour/label"].asstr()[()])) == ["double", "point"]
    assert imread(run_dir / "umap_label.png").ndim == 3
    assert not (run_dir / "umap_mosaic.png").exists()
    sampled = evaluate.run(compose("evaluate", [*cfg_overrides, "eval.max_points=40"]))
    assert _metrics(sampled)["n_images"] == 40
    with h5py.File(Path(sampled["run_dir"]) / "umap.h5") as f:
        assert f["coords"].shape == (40, 2) and len(f["id"]) == len(f["colour/label"]) == 40


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval=neighbours"], "eval=neighbours needs features_id"),
        (["eval=curation_report"], "eval=curation_report needs subsample_id"),
        (["eval=neighbours", "features_id=features-1", "compare_id=features-2"], "not compare_id"),
        (["eval=linear_probe", "subsample_id=sample-1"], "reads model_id, features_id, not subsample_id"),
        (["eval=representation", "compare_id=features-2"], "give features_id"),
        (["eval=knn", "catalogue=lotss_dr2"], "eval=knn needs a value for catalogue.path"),
    ],
)
def test_evaluations_say_which_runs_they_read(compose, runs_dir, overrides, message):
    with pytest.raises(RadioCurationError, match=message):
        evaluate.run(compose("evaluate", overrides))
    assert not runs_dir.exists()  # refused before a run is made


def test_a_probe_of_a_model_is_identified_by_its_model_and_dataset_settings(compose, labelled_folder):
    base = ["eval=knn", "eval.folds=3", *_folder(labelled_folder)]
    first = evaluate.run(compose("evaluate", base))
    again = evaluate.run(compose("evaluate", [*base, "batch_size=7", "device=cpu"]))
    assert again["reused"] and again["run_id"] == first["run_id"]
    ids = {first["run_id"]}
    for changed in (
        ["resize=24"],
        ["normalization=zscore"],
        ["backbone=resnet10t"],
        ["dataset.nan_fill=1.0"],
    ):
        other = evaluate.run(compose("evaluate", [*base, *changed]))
        assert not other["reused"] and other["run_id"] not in ids, changed
        ids.add(other["run_id"])


def _train_run(runs_dir: Path, global_size: int) -> str:
    """A complete train run holding a tiny exported backbone, made through the run store."""
    from omegaconf import OmegaConf

    from radio_curation.backbones.export import save_backbone
    from radio_curation.backbones.factory import timm_backbone
    from radio_curation.runs.stage import Stage, run_stage

    cfg = OmegaConf.create(
        {
            "paths": {"runs_dir": str(runs_dir)},
            "force": False,
            "experiment_name": "tests",
            "logger": None,
            "normalization": {
                "_target_": "radio_curation.data.normalization.Standardize",
                "mean": None,
                "std": None,
            },
            "augmentation": {"global_size": global_size},
        }
    )

    def work(run):
        with run.artifact("backbone.pt") as tmp:
            save_backbone(timm_backbone("test_vit", in_chans=1, input_size=32), {"name": "test_vit"}, tmp)

    stage = Stage(name="train", work=work, settings={"augmentation": dict}, headline="counts.images")
    return run_stage(cfg, stage)["run_id"]


def test_model_id_uses_the_train_runs_backbone_and_preprocessing(compose, labelled_folder, runs_dir):
    model_id = _train_run(runs_dir, global_size=48)
    overrides = ["eval=knn", "eval.folds=3", f"model_id={model_id}", *_folder(labelled_folder)]
    metrics = _metrics(evaluate.run(compose("evaluate", overrides)))
    info = metrics["info"]
    assert metrics["parents"] == [model_id]
    assert info["model"] == model_id and info["preprocess_from"] == f"train run {model_id}"
    assert info["resize"] == 48  # the train run's view size, not resize=32
    assert info["normalization"]["_target_"].endswith("Standardize")
    own = _metrics(evaluate.run(compose("evaluate", [*overrides, "preprocess_from_model=false"])))
    assert own["info"]["resize"] == 32 and own["info"]["preprocess_from"] == "evaluate config"
