"""``evaluate.py``: is a representation good, and what did curation do to the data.

One evaluation per run (``eval=<name>``; a Hydra multirun does several). Every evaluation writes
``metrics.json`` (with the number of images or rows used) and PNG plots into its run directory and logs
them to the enabled trackers; the curation report also writes ``report.html``.

- ``linear_probe``, ``knn``: labelled images (``dataset``) through a model (``model_id`` or ``backbone``),
  or the windows of a features run (``features_id``) labelled by a catalogue.
- ``representation``: spectrum, RankMe, effective rank, alignment/uniformity of a features run or a model.
- ``umap``: a 2-D map of a features run, of a subsample in its pool's frame, or of a labelled set.
- ``neighbours``: adjacent windows vs random pairs (Mann–Whitney U) and nearest-neighbour galleries.
- ``curation_report``: a subsample vs its pool vs a random subsample of the same size.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from radio_curation.curation.clusters import Hierarchy, read_subsample
from radio_curation.cutouts.reader import WindowReader
from radio_curation.data.datasets import LabelledImages
from radio_curation.errors import RadioCurationError
from radio_curation.evaluation import plots
from radio_curation.evaluation.curation_report import curation_figures, top_level_exemplars
from radio_curation.evaluation.embed import dihedral, embed_images, resolve_device
from radio_curation.evaluation.enrichment import enrichment, rare_classes
from radio_curation.evaluation.html import Section, Table, render_html
from radio_curation.evaluation.inputs import (
    ancestor,
    build_model,
    positions,
    require_ancestor,
    window_labels,
    window_table,
)
from radio_curation.evaluation.maps import umap_embedding
from radio_curation.evaluation.neighbours import adjacent_pairs, distance_test, gallery_neighbours
from radio_curation.evaluation.probes import evaluate_probe, knn_classifier, logistic_classifier
from radio_curation.evaluation.representation import (
    accumulate,
    alignment,
    frechet_distance,
    spectrum_metrics,
    uniformity,
)
from radio_curation.features.matrix import FeatureArray, FeatureFile, FeatureMatrix
from radio_curation.runs.store import RunRecord, RunStore
from radio_curation.tasks.stage import Run, run_stage

#: What the ``*_std`` of a probe's metrics is, written beside them in ``metrics.json``.
SPREAD_OVER_FOLDS = (
    "*_std is the standard deviation over the cross-validation folds of this one model: it says how "
    "stable the probe is, not how much another training seed would change the result (for that, compare "
    "runs of several seeds with `radio-curation runs compare --group NAME=ID,ID,...`)"
)

#: Rows per chunk when streaming a features file.
CHUNK = 65_536


class Outputs:
    """Writes an evaluation's PNGs and ``metrics.json`` as artifacts and mirrors them to the trackers."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.images: list[Path] = []

    def png(self, name: str, plot: Callable[..., Path], *args: Any, **kwargs: Any) -> Path:
        """Draw ``plot(*args, path=<tmp>, **kwargs)`` into artifact ``name``."""
        with self.run.artifact(name) as tmp:
            plot(*args, path=tmp, dpi=int(self.run.cfg.eval.dpi), **kwargs)
        path = self.run.dir / name
        self.run.tracker.log_image(path)
        self.images.append(path)
        return path

    def finish(self, metrics: dict[str, float], counts: dict[str, int], details: dict[str, Any]) -> None:
        """Record metrics and counts in the manifest and write ``metrics.json``."""
        self.run.metrics.update(metrics)
        self.run.counts.update(counts)
        payload = {
            "eval": self.run.cfg.eval.name,
            "run_id": self.run.run_id,
            "parents": [p.run_id for p in self.run.parents],
            **counts,
            "metrics": metrics,
            **details,
        }
        with self.run.artifact("metrics.json") as tmp:
            tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
        self.run.tracker.log_artifact(self.run.dir / "metrics.json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to metrics.json")


def _store(cfg: DictConfig) -> RunStore:
    return RunStore.of(cfg)


def _parent(run: Run, key: str, stage: str) -> RunRecord:
    return _store(run.cfg).resolve(str(run.cfg[key]), stage=stage)


class WindowFeatures:
    """A features run's feature matrix with the windows its rows describe (their table and pixels): what
    the map, neighbour and report evaluations use."""

    def __init__(self, store: RunStore, features_run: RunRecord) -> None:
        self.features_run = features_run
        self.file = FeatureFile(features_run.artifact("features.h5"))
        self.merge_run = require_ancestor(store, features_run, "merge", "reading window positions and pixels")
        self.merged = self.merge_run.artifact("merged.h5")
        self.cutout_ids = np.asarray(self.file.cutout_ids, dtype=np.int64)
        self._table: dict[str, np.ndarray] | None = None

    @property
    def table(self) -> dict[str, np.ndarray]:
        """Window columns aligned with the feature rows."""
        if self._table is None:
            self._table = window_table(self.merged, self.cutout_ids)
        return self._table

    def rows_of(self, ids: np.ndarray, what: str) -> np.ndarray:
        """Feature rows of cutout ``ids``."""
        return positions(self.cutout_ids, ids, f"features run {self.features_run.run_id} ({what})")

    def read_windows(self, ids: np.ndarray) -> list[np.ndarray]:
        """Pixels of windows ``ids`` (sizes may differ), in order, as ``[1, S, S]`` arrays."""
        reader = WindowReader(self.merged)
        ids = np.asarray(ids, dtype=np.int64)
        sizes = self.table["size"][self.rows_of(ids, "windows to show")]
        out: list[np.ndarray] = [np.empty(0)] * len(ids)
        for size in np.unique(sizes):
            where = np.flatnonzero(sizes == size)
            for i, pixels in zip(where, reader.read(ids[where]), strict=True):
                out[i] = pixels
        reader.close()
        return out


def _labels_or_none(
    cfg: DictConfig, pool: WindowFeatures, info: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Catalogue labels of the pool's windows and the source that labels each (see ``window_labels``),
    or None when no catalogue applies (noted in ``info``)."""
    if cfg.eval.catalogue.path is None:
        return None
    try:
        labels, source, groups = window_labels(cfg.eval.catalogue, pool.merged, pool.table)
    except RadioCurationError as err:
        if cfg.eval.catalogue.path != "auto":
            raise
        info["labels"] = f"none ({err})"
        return None
    info["labels"] = source
    return labels, groups


# ---------------------------------------------------------------------------------------------- probes


def _labelled_set(run: Run, info: dict[str, Any]) -> tuple[np.ndarray, LabelledImages, np.ndarray | None]:
    """Features and labels for a probe: a features run with catalogue labels, or an embedded dataset.

    The third item groups the rows for cross-validation: overlapping windows labelled by one catalogue
    source share a group, so they never sit on both sides of a fold (None: every image is its own).
    """
    cfg = run.cfg
    if cfg.features_id:
        pool = WindowFeatures(_store(cfg), _parent(run, "features_id", "features"))
        matched = _labels_or_none(cfg, pool, info)
        if matched is None:
            raise RadioCurationError(
                f"features run {cfg.features_id} has no window labels: set eval.catalogue.path to a source "
                "catalogue (auto works for the synthetic sky), or probe a labelled dataset without features_id"
            )
        labels, groups = matched
        keep = np.flatnonzero(~np.isin(labels, list(cfg.eval.exclude_labels)))
        if cfg.eval.max_images is not None and len(keep) > cfg.eval.max_images:
            rng = np.random.default_rng(cfg.seed)
            keep = np.sort(rng.choice(keep, int(cfg.eval.max_images), replace=False))
        class_names, codes = np.unique(labels[keep], return_inverse=True)
        data = LabelledImages(
            images=np.zeros((len(keep), 1, 0, 0), dtype=np.float32),
            labels=codes.astype(np.int64),
            class_names=tuple(str(c) for c in class_names),
            names=pool.cutout_ids[keep].astype(str),
        )
        info["source"] = f"features run {cfg.features_id}"
        info["folds_grouped_by"] = "catalogue source labelling the window"
        return pool.file.read(keep), data, groups[keep]
    data = instantiate(cfg.dataset).load()
    extractor, preprocess, model_info = build_model(cfg)
    info.update(model_info, source=f"dataset {cfg.dataset._target_.rsplit('.', 1)[-1]}")
    features = embed_images(
        extractor, preprocess, data.images, int(cfg.batch_size), resolve_device(cfg.device)
    )
    return features, data, None


def _probe(run: Run) -> None:
    cfg, ev = run.cfg, run.cfg.eval
    out, info = Outputs(run), {}
    features, data, groups = _labelled_set(run, info)
    record: dict[str, Any] = {}
    if ev.name == "linear_probe":
        classify = logistic_classifier(
            cs=list(ev.cs),
            inner_folds=int(ev.inner_folds),
            max_iter=int(ev.max_iter),
            seed=cfg.seed,
            record=record,
        )
    else:
        classify = knn_classifier(k=int(ev.k), temperature=float(ev.temperature))
    with run.timer("probe"):
        result = evaluate_probe(
            features,
            data.labels,
            classify,
            folds=int(ev.folds),
            split=data.split if ev.use_split else None,
            seed=cfg.seed,
            groups=groups,
        )
    names = list(data.class_names)
    out.png(
        "confusion.png", plots.confusion_plot, result.confusion, names, title=f"{ev.name}: {ev.folds}-fold"
    )
    if result.split_confusion is not None:
        out.png(
            "confusion_split.png", plots.confusion_plot, result.split_confusion, names, title="fixed split"
        )
    counts = {"n_images": len(data), "n_classes": len(names), "feature_dim": int(features.shape[1])}
    details = {
        "classes": data.class_counts(),
        "folds": {"accuracy": result.accuracy, "macro_f1": result.macro_f1},
        "spread": SPREAD_OVER_FOLDS,
        "confusion": result.confusion,
        "split_confusion": result.split_confusion,
        "info": {**info, **record},
    }
    run.info.update(info)
    out.finish(result.metrics(ev.name), counts, details)


# -------------------------------------------------------------------------------------- representation


def _representation(run: Run) -> None:
    cfg, ev = run.cfg, run.cfg.eval
    out, info = Outputs(run), {}
    rng = np.random.default_rng(cfg.seed)
    if cfg.compare_id and not cfg.features_id:
        raise RadioCurationError("compare_id compares two features runs: give features_id=<features run> too")
    if cfg.features_id:
        pool = WindowFeatures(_store(cfg), _parent(run, "features_id", "features"))
        source: FeatureMatrix = pool.file
        name = str(cfg.features_id)
        info["source"] = f"features run {cfg.features_id}"
        with run.timer("spectrum"):
            acc = accumulate((chunk for _, chunk in source.iter_chunks(CHUNK)), source.dim)
        pairs = adjacent_pairs(pool.table["mosaic"], pool.table["y0"], pool.table["x0"], pool.table["size"])
        if len(pairs) > ev.max_pairs:
            pairs = pairs[rng.choice(len(pairs), int(ev.max_pairs), replace=False)]
        align = float("nan")
        if len(pairs):
            align = alignment(source.read(pairs[:, 0]), source.read(pairs[:, 1]))
        info["positives"] = f"{len(pairs)} pairs of physically adjacent windows"
    else:
        data = instantiate(cfg.dataset).load()
        extractor, preprocess, model_info = build_model(cfg)
        info.update(model_info, positives="each image and its 90°-rotated mirror image")
        device = resolve_device(cfg.device)
        x = embed_images(extractor, preprocess, data.images, int(cfg.batch_size), device)
        y = embed_images(extractor, preprocess, data.images, int(cfg.batch_size), device, transform=dihedral)
        source = FeatureArray(x)
        name = "model"
        acc = accumulate([x], x.shape[1])
        align = alignment(x, y)
    health, spectrum = spectrum_metrics(acc)
    metrics = {f"representation/{k}": v for k, v in health.items()}
    metrics["representation/uniformity"] = _uniformity(source, int(ev.uniformity_sample), rng)
    metrics["representation/alignment"] = align
    spectra = {name: spectrum}
    details: dict[str, Any] = {"spectrum": spectrum, "info": info}
    if cfg.compare_id:
        other = FeatureFile(_parent(run, "compare_id", "features").artifact("features.h5"))
        with run.timer("compare"):
            other_acc = accumulate((chunk for _, chunk in other.iter_chunks(CHUNK)), other.dim)
        other_health, other_spectrum = spectrum_metrics(other_acc)
        metrics.update({f"representation/compare/{k}": v for k, v in other_health.items()})
        metrics["representation/compare/uniformity"] = _uniformity(other, int(ev.uniformity_sample), rng)
        metrics["representation/frechet_distance"] = frechet_distance(
            *acc.mean_covariance(), *other_acc.mean_covariance()
        )
        spectra[str(cfg.compare_id)] = other_spectrum
        details["compare_spectrum"] = other_spectrum
    title = f"centred spectrum: RankMe {metrics['representation/rankme']:.1f}, n = {acc.n}"
    out.png("spectrum.png", plots.spectrum_plot, spectra, title=title)
    run.info.update(info)
    out.finish(metrics, {"n_rows": acc.n, "n_images": acc.n, "feature_dim": int(acc.total.shape[0])}, details)


def _uniformity(source: FeatureMatrix, sample: int, rng: np.random.Generator) -> float:
    rows = np.sort(rng.choice(source.n, min(source.n, sample), replace=False))
    return uniformity(source.read(rows))


# ------------------------------------------------------------------------------------------------ umap


def _umap(run: Run) -> None:
    cfg, ev = run.cfg, run.cfg.eval
    out, info = Outputs(run), {}
    store = _store(cfg)
    colours: dict[str, np.ndarray] = {}
    highlight = None
    if cfg.features_id or cfg.subsample_id:
        sample_run = _parent(run, "subsample_id", "sample") if cfg.subsample_id else None
        if cfg.features_id:
            features_run = _parent(run, "features_id", "features")
        else:
            features_run = require_ancestor(store, sample_run, "features", "the pool's map")
        pool = WindowFeatures(store, features_run)
        source: FeatureMatrix = pool.file
        ids = pool.cutout_ids
        clusters = _clusters_for(run, store, sample_run or features_run)
        if clusters is not None:
            hierarchy = clusters[0]
            rows = pool.rows_of(hierarchy.cutout_id, "the clustering")
            level = hierarchy.n_levels if ev.level is None else int(ev.level)
            if not 1 <= level <= hierarchy.n_levels:
                raise RadioCurationError(
                    f"eval.level={level}; the clustering has levels 1..{hierarchy.n_levels}"
                )
            cluster = np.full(len(ids), "unclustered", dtype=object)
            cluster[rows] = hierarchy.paths()[:, level - 1].astype(str)
            colours[f"cluster level {level}"] = cluster.astype(str)
        colours["mosaic"] = pool.table["mosaic"]
        matched = _labels_or_none(cfg, pool, info) if "label" in ev.colour_by else None
        if matched is not None:
            colours["label"] = matched[0]
        if sample_run is not None:
            highlight = np.zeros(len(ids), bool)
            highlight[pool.rows_of(read_subsample(sample_run.artifact("subsample.h5"))[0], "subsample")] = (
                True
            )
        info["source"] = f"features run {features_run.run_id}"
    else:
        data = instantiate(cfg.dataset).load()
        extractor, preprocess, model_info = build_model(cfg)
        info.update(model_info, source="labelled dataset")
        x = embed_images(extractor, preprocess, data.images, int(cfg.batch_size), resolve_device(cfg.device))
        source = FeatureArray(x)
        ids = data.names
        colours["label"] = np.asarray(data.class_names)[data.labels]
    with run.timer("umap"):
        coords, map_info = umap_embedding(
            source,
            n_neighbors=int(ev.n_neighbors),
            min_dist=float(ev.min_dist),
            metric=str(ev.metric),
            fit_sample=int(ev.fit_sample),
            seed=cfg.seed,
            backend=str(ev.backend),
        )
    info.update(map_info)
    with run.artifact("umap.h5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("coords", data=coords)
        f.create_dataset("id", data=np.asarray(ids).astype(str).astype(object), dtype=h5py.string_dtype())
        for name, values in colours.items():
            f.create_dataset(f"colour/{name}", data=values.astype(object), dtype=h5py.string_dtype())
        if highlight is not None:
            f.create_dataset("in_subsample", data=highlight)
    wanted = [name for name in colours if name.split()[0] in ev.colour_by]
    for name in wanted:
        slug = name.replace(" ", "_")
        out.png(f"umap_{slug}.png", plots.map_plot, coords, colours[name], title=f"UMAP by {name}")
        if highlight is not None:
            out.png(
                f"umap_subsample_{slug}.png",
                plots.map_plot,
                coords,
                colours[name],
                title=f"subsample ({int(highlight.sum())}) by {name}, pool in grey",
                highlight=highlight,
            )
    run.info.update(info)
    counts = {"n_rows": len(coords), "n_images": len(coords)}
    if highlight is not None:
        counts["n_subsample"] = int(highlight.sum())
    out.finish({"umap/n_fit": float(map_info["n_fit"])}, counts, {"info": info})


def _clusters_for(
    run: Run, store: RunStore, record: RunRecord
) -> tuple[Hierarchy, np.ndarray, RunRecord] | None:
    """The clustering to colour or report by (``clusters_id``, else the one up ``record``'s lineage).

    Returns
    -------
    tuple or None
        The hierarchy, the features-file row of each clustered point, and the clustered features run.
    """
    cfg = run.cfg
    cluster_run = (
        _parent(run, "clusters_id", "cluster") if cfg.clusters_id else ancestor(store, record, "cluster")
    )
    if cluster_run is None:
        return None
    hierarchy = Hierarchy.load(cluster_run.artifact("clusters.h5"))
    features_run = require_ancestor(store, cluster_run, "features", "the clustering")
    ids = FeatureFile(features_run.artifact("features.h5")).cutout_ids
    rows = positions(ids, hierarchy.cutout_id, f"features run {features_run.run_id}")
    return hierarchy, rows, features_run


# ------------------------------------------------------------------------------------------ neighbours


def _neighbours(run: Run) -> None:
    cfg, ev = run.cfg, run.cfg.eval
    out = Outputs(run)
    pool = WindowFeatures(_store(cfg), _parent(run, "features_id", "features"))
    table = pool.table
    pairs = adjacent_pairs(table["mosaic"], table["y0"], table["x0"], table["size"], float(ev.max_offset))
    with run.timer("distance_test"):
        test = distance_test(pool.file, pairs, max_pairs=int(ev.max_pairs), seed=cfg.seed)
    out.png(
        "neighbour_distances.png",
        plots.histogram_plot,
        {"adjacent windows": test.adjacent, "random pairs": test.random},
        title=f"Mann–Whitney U p = {test.p_value:.2g}",
        xlabel="cosine distance",
    )
    if ev.query_ids:
        queries = pool.rows_of(np.asarray(list(ev.query_ids), dtype=np.int64), "eval.query_ids")
    else:
        rng = np.random.default_rng(cfg.seed)
        queries = np.sort(rng.choice(pool.file.n, min(int(ev.n_queries), pool.file.n), replace=False))
    with run.timer("galleries"):
        rows, sim = gallery_neighbours(pool.file, queries, int(ev.k))
    gallery = []
    for q, neighbour_rows in zip(queries, rows, strict=True):
        ids = pool.cutout_ids[np.r_[q, neighbour_rows]]
        gallery.append((f"cutout {ids[0]}", pool.read_windows(ids)))
    out.png("neighbour_gallery.png", plots.image_grid, gallery, title=f"query (left) and its {ev.k} nearest")
    details = {
        "gallery": {
            "query_cutout_id": pool.cutout_ids[queries],
            "neighbour_cutout_id": pool.cutout_ids[rows],
            "similarity": sim,
        }
    }
    out.finish(test.metrics(), {"n_rows": pool.file.n, "n_pairs": len(test.adjacent)}, details)


# ------------------------------------------------------------------------------------- curation report


def _curation_report(run: Run) -> None:
    cfg, ev = run.cfg, run.cfg.eval
    out, info = Outputs(run), {}
    store = _store(cfg)
    sample_run = _parent(run, "subsample_id", "sample")
    clusters = _clusters_for(run, store, sample_run)
    if clusters is None:
        raise RadioCurationError(
            f"subsample {cfg.subsample_id} has no clustering in its lineage; give clusters_id=<cluster run>"
        )
    hierarchy, cluster_rows, features_run = clusters
    pool_all = WindowFeatures(store, features_run)
    # The pool is what was clustered (rows with NaN features may have been left out).
    pool = pool_all.file.subset(cluster_rows)
    pool_ids = hierarchy.cutout_id.astype(np.int64)
    sub_ids = read_subsample(sample_run.artifact("subsample.h5"))[0]
    sub_rows = positions(pool_ids, np.sort(sub_ids), f"clustering of {sample_run.run_id}")
    rng = np.random.default_rng(cfg.seed)
    random_rows = np.sort(rng.choice(len(pool_ids), len(sub_rows), replace=False))
    sets = {"pool": np.arange(len(pool_ids)), "subsample": sub_rows, "random": random_rows}
    paths = hierarchy.paths()
    matched = _labels_or_none(cfg, pool_all, info)
    labels = None if matched is None else matched[0][cluster_rows]
    with run.timer("figures"):
        figures = curation_figures(
            pool,
            sets,
            paths=paths,
            labels=labels,
            duplicate_threshold=float(ev.duplicate_threshold),
            max_queries=int(ev.max_queries),
            seed=cfg.seed,
        )
    n_levels = paths.shape[1]
    coverage_plot = out.png(
        "coverage.png",
        plots.bar_plot,
        {
            name: {f"level {lvl + 1}": v[lvl] for lvl in range(n_levels)}
            for name, v in figures.coverage.items()
        },
        title="clusters hit at each level",
        ylabel="fraction of the pool's clusters",
    )
    share_plot = None
    if figures.shares:
        share_plot = out.png(
            "class_shares.png",
            plots.bar_plot,
            figures.shares,
            title="class shares",
            ylabel="share of the set",
        )
    with run.timer("exemplars"):
        exemplars = top_level_exemplars(
            hierarchy.conditioning.source(pool),
            paths,
            hierarchy.levels[-1].centroids,
            int(ev.exemplars),
            metric=hierarchy.metric,
        )
    grid_pages = _exemplar_pages(out, pool_all, pool_ids, paths, sets, exemplars, int(ev.clusters_per_page))
    metrics = figures.metrics()
    enriched = None
    if labels is not None:
        # Each set's rare-class (< 1 % of the pool each) and empty-window shares against the random subsample's.
        empty = str(ev.catalogue.empty_label)
        rare = rare_classes(labels, exclude=(empty,))
        enriched = {name: enrichment(labels, rows, random_rows, rare, empty) for name, rows in sets.items()}
        metrics.update(enriched["subsample"].metrics("curation/enrichment"))
        info["rare_classes"] = rare
    sections = _report_sections(figures, n_levels, coverage_plot, share_plot, grid_pages, info, enriched)
    page = render_html(
        f"Curation report: {sample_run.run_id}",
        sections,
        meta=f"run {run.run_id} · subsample {sample_run.run_id} · clustering {hierarchy.n_levels} levels · "
        f"pool {len(pool_ids)} windows",
    )
    with run.artifact("report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    run.tracker.log_artifact(run.dir / "report.html")
    run.info.update(info)
    counts = {"n_rows": len(pool_ids), "n_subsample": len(sub_rows), "n_images": len(pool_ids)}
    out.finish(
        metrics, counts, {"info": info, "exemplars": {int(k): pool_ids[v] for k, v in exemplars.items()}}
    )


def _exemplar_pages(
    out: Outputs,
    pool_all: WindowFeatures,
    pool_ids: np.ndarray,
    paths: np.ndarray,
    sets: dict[str, np.ndarray],
    exemplars: dict[int, np.ndarray],
    per_page: int,
) -> list[Path]:
    top = paths[:, -1]
    pool_size = np.bincount(top)
    sub_size = np.bincount(top[sets["subsample"]], minlength=len(pool_size))
    order = sorted(exemplars, key=lambda c: -pool_size[c])
    pages = []
    for page, start in enumerate(range(0, len(order), per_page), start=1):
        rows = []
        for c in order[start : start + per_page]:
            label = (
                f"cluster {c}\npool {pool_size[c]} ({pool_size[c] / len(top):.1%})\n"
                f"subsample {sub_size[c]} ({sub_size[c] / max(len(sets['subsample']), 1):.1%})"
            )
            rows.append((label, pool_all.read_windows(pool_ids[exemplars[c]])))
        pages.append(
            out.png(
                f"exemplars_{page:03d}.png", plots.image_grid, rows, title="top-level clusters: exemplars"
            )
        )
    return pages


def _report_sections(
    figures, n_levels, coverage_plot, share_plot, grid_pages, info, enriched=None
) -> list[Section]:
    names = list(figures.sizes)
    rare_rows = []
    if enriched is not None:
        rare = ", ".join(info.get("rare_classes") or []) or "none"
        rare_rows = [
            [f"rare classes ({rare}; < 1 % of the pool each)", *[enriched[n].rare_subsample for n in names]],
            ["rare-class share / the random subsample's", *[enriched[n].ratio for n in names]],
            ["empty windows", *[enriched[n].empty_subsample for n in names]],
            ["empty share / the random subsample's", *[enriched[n].empty_ratio for n in names]],
        ]
    summary = Table(
        "the subsample vs the whole pool vs a random subsample of the same size",
        ["figure", *names],
        [
            ["points", *[figures.sizes[n] for n in names]],
            *[
                [f"clusters hit, level {lvl + 1}", *[figures.coverage[n][lvl] for n in names]]
                for lvl in range(n_levels)
            ],
            ["top-level balance (normalised entropy)", *[figures.balance[n] for n in names]],
            [
                "mean nearest-neighbour cosine similarity",
                *[figures.redundancy[n]["nn_similarity_mean"] for n in names],
            ],
            ["near-duplicate rate", *[figures.redundancy[n]["near_duplicate_rate"] for n in names]],
            *rare_rows,
        ],
    )
    sections = [Section("Summary", tables=[summary]), Section("Cluster coverage", images=[coverage_plot])]
    if figures.shares:
        classes = list(next(iter(figures.shares.values())))
        shares = Table(
            f"class shares (labels: {info.get('labels')})",
            ["class", *names],
            [[c, *[figures.shares[n][c] for n in names]] for c in classes],
        )
        sections.append(Section("Class shares", tables=[shares], images=[share_plot]))
    else:
        sections.append(
            Section("Class shares", text=f"No window labels: {info.get('labels', 'not requested')}.")
        )
    sections.append(
        Section(
            "Top-level clusters",
            text="Each row: the windows closest to a top-level centroid, largest clusters first.",
            images=grid_pages,
        )
    )
    return sections


EVALS: dict[str, Callable[[Run], None]] = {
    "linear_probe": _probe,
    "knn": _probe,
    "representation": _representation,
    "umap": _umap,
    "neighbours": _neighbours,
    "curation_report": _curation_report,
}

#: Which of ``model_id``/``features_id``/``subsample_id`` each evaluation needs (None: a dataset + model).
_NEEDS = {"neighbours": "features_id", "curation_report": "subsample_id"}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation ``cfg.eval`` as an ``evaluate`` stage run (reused when it already exists).

    Returns
    -------
    dict
        :func:`~radio_curation.tasks.stage.run_stage`'s result.
    """
    name = cfg.eval.name
    if name not in EVALS:
        raise RadioCurationError(f"eval.name={name!r} is not one of {sorted(EVALS)}")
    needed = _NEEDS.get(name)
    if needed and not cfg[needed]:
        raise RadioCurationError(f"eval={name} needs {needed}=<run ID>")
    return run_stage(cfg, cfg.stage, EVALS[name])
