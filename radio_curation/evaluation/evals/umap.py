"""``eval=umap``: a 2-D map of a features run, of a subsample in its pool's map, or of a labelled set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import h5py
import numpy as np

from radio_curation.curation.clusters import read_subsample
from radio_curation.errors import RadioCurationError
from radio_curation.evaluation import plots
from radio_curation.evaluation.evals.base import Evaluation, Inputs
from radio_curation.evaluation.inputs import require_ancestor
from radio_curation.evaluation.labels import WindowLabels
from radio_curation.evaluation.maps import umap_embedding
from radio_curation.evaluation.outputs import Outputs
from radio_curation.evaluation.pool import WindowFeatures, clustering_of
from radio_curation.features.matrix import FeatureArray, FeatureMatrix


class UmapMap(Evaluation):
    """UMAP coordinates (``umap.h5``) and one plot per colouring that applies.

    ``features_id``: all windows of a features run; ``subsample_id``: a subsample highlighted in its
    pool's map; neither: a model (``model_id`` / ``backbone``) on the labelled dataset. The map is fitted
    on at most ``fit_sample`` rows and the rest placed with ``transform``.

    Parameters
    ----------
    n_neighbors, min_dist, metric
        UMAP parameters.
    fit_sample
        Largest number of rows the map is fitted on.
    max_points
        Largest number of rows mapped (fitted or placed with ``transform``): a random choice of that many
        when there are more; ``None``: all (``transform`` of 16 M rows takes hours on one thread).
    backend
        ``auto`` (cuML on a GPU when installed, else umap-learn), ``umap`` or ``cuml``.
    colour_by
        Colourings to plot, of ``cluster``, ``label``, ``mosaic``, where they apply.
    level
        Cluster level to colour by (None: the top level).
    catalogue
        Labels the windows for ``colour_by=label``.
    seed, dpi
        See :class:`~radio_curation.evaluation.evals.base.Evaluation`.
    """

    name = "umap"
    headline = "umap/n_fit"
    parents: ClassVar[Mapping[str, str]] = {
        "model_id": "train",
        "features_id": "features",
        "subsample_id": "sample",
        "clusters_id": "cluster",
    }
    reads_images = True

    def __init__(
        self,
        n_neighbors: int,
        min_dist: float,
        metric: str,
        fit_sample: int,
        max_points: int | None,
        backend: str,
        colour_by: list[str],
        level: int | None,
        catalogue: WindowLabels,
        seed: int,
        dpi: int,
    ) -> None:
        super().__init__(seed, dpi)
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.fit_sample = fit_sample
        self.max_points = None if max_points is None else int(max_points)
        self.backend = backend
        self.colour_by = list(colour_by)
        self.level = level
        self.catalogue = catalogue

    def evaluate(self, out: Outputs, inputs: Inputs) -> None:
        info: dict[str, Any] = {}
        colours: dict[str, np.ndarray] = {}
        highlight = None
        sample_run = inputs.run("subsample_id")
        features_run = inputs.run("features_id")
        if features_run is not None or sample_run is not None:
            if features_run is None:
                features_run = require_ancestor(inputs.store, sample_run, "features", "the pool's map")
            pool = WindowFeatures(inputs.store, features_run)
            source: FeatureMatrix = pool.file
            ids = pool.cutout_ids
            clustering = clustering_of(inputs.store, sample_run or features_run, inputs.run("clusters_id"))
            if clustering is not None:
                hierarchy = clustering.hierarchy
                rows = pool.rows_of(hierarchy.cutout_id, "the clustering")
                level = hierarchy.n_levels if self.level is None else self.level
                if not 1 <= level <= hierarchy.n_levels:
                    raise RadioCurationError(
                        f"eval.level={level}; the clustering has levels 1..{hierarchy.n_levels}"
                    )
                cluster = np.full(len(ids), "unclustered", dtype=object)
                cluster[rows] = hierarchy.paths()[:, level - 1].astype(str)
                colours[f"cluster level {level}"] = cluster.astype(str)
            colours["mosaic"] = pool.table["mosaic"]
            if "label" in self.colour_by:
                matched = self.catalogue.labels_if_any(pool.merged, pool.table, info)
                if matched is not None:
                    colours["label"] = matched[0]
            if sample_run is not None:
                highlight = np.zeros(len(ids), bool)
                subsample = read_subsample(sample_run.artifact("subsample.h5"))[0]
                highlight[pool.rows_of(subsample, "subsample")] = True
            info["source"] = f"features run {features_run.run_id}"
        else:
            images = inputs.images
            data = images.load()
            source = FeatureArray(images.embed(data.images))
            info.update(images.model()[2], source="labelled dataset")
            ids = data.names
            colours["label"] = np.asarray(data.class_names)[data.labels]
        if self.max_points is not None and len(ids) > self.max_points:
            mapped = np.sort(
                np.random.default_rng(self.seed).choice(len(ids), self.max_points, replace=False)
            )
            info["mapped"] = f"{self.max_points} of {len(ids)} rows (eval.max_points)"
            source, ids = source.subset(mapped), np.asarray(ids)[mapped]
            colours = {name: values[mapped] for name, values in colours.items()}
            highlight = None if highlight is None else highlight[mapped]
        with out.timer("umap"):
            coords, map_info = umap_embedding(
                source,
                n_neighbors=self.n_neighbors,
                min_dist=self.min_dist,
                metric=self.metric,
                fit_sample=self.fit_sample,
                seed=self.seed,
                backend=self.backend,
            )
        info.update(map_info)
        with out.artifact("umap.h5", log=False) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("coords", data=coords)
            f.create_dataset("id", data=np.asarray(ids).astype(str).astype(object), dtype=h5py.string_dtype())
            for name, values in colours.items():
                f.create_dataset(f"colour/{name}", data=values.astype(object), dtype=h5py.string_dtype())
            if highlight is not None:
                f.create_dataset("in_subsample", data=highlight)
        for name in [name for name in colours if name.split()[0] in self.colour_by]:
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
        counts = {"n_rows": len(coords), "n_images": len(coords)}
        if highlight is not None:
            counts["n_subsample"] = int(highlight.sum())
        out.finish({"umap/n_fit": float(map_info["n_fit"])}, counts, {"info": info}, info)
