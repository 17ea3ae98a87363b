"""``eval=curation_report``: what curation did to the data, as ``report.html`` and ``metrics.json``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from radio_curation.curation.clusters import read_subsample
from radio_curation.errors import RadioCurationError
from radio_curation.evaluation import plots
from radio_curation.evaluation.curation_report import CurationFigures, curation_figures, top_level_exemplars
from radio_curation.evaluation.enrichment import Enrichment, enrichment, label_codes, rare_classes
from radio_curation.evaluation.evals.base import Evaluation, Inputs
from radio_curation.evaluation.html import Section, Table, render_html
from radio_curation.evaluation.labels import WindowLabels
from radio_curation.evaluation.outputs import Outputs
from radio_curation.evaluation.pool import WindowFeatures, clustering_of
from radio_curation.features.matrix import positions


class CurationReport(Evaluation):
    """A subsample vs its whole pool vs a random subsample of the same size.

    Cluster coverage per level, top-level balance, class shares and rare-class enrichment (when a
    catalogue labels the windows), redundancy (nearest-neighbour similarity, near-duplicates) and the
    exemplars of each top-level cluster.

    Parameters
    ----------
    duplicate_threshold
        Nearest-neighbour cosine similarity at or above which a point is a near-duplicate.
    max_queries
        Redundancy: nearest neighbours of at most this many points per set, a random sample (the figures'
        standard errors are in the metrics and the report).
    exemplars
        Windows shown per top-level cluster.
    clusters_per_page
        Clusters per exemplar image.
    catalogue
        Labels the windows for the class shares.
    seed, dpi
        See :class:`~radio_curation.evaluation.evals.base.Evaluation`.
    """

    name = "curation_report"
    headline = "curation/subsample/top_level_balance"
    parents: ClassVar[Mapping[str, str]] = {"subsample_id": "sample", "clusters_id": "cluster"}
    required = ("subsample_id",)

    def __init__(
        self,
        duplicate_threshold: float,
        max_queries: int,
        exemplars: int,
        clusters_per_page: int,
        catalogue: WindowLabels,
        seed: int,
        dpi: int,
    ) -> None:
        super().__init__(seed, dpi)
        self.duplicate_threshold = duplicate_threshold
        self.max_queries = max_queries
        self.exemplars = exemplars
        self.clusters_per_page = clusters_per_page
        self.catalogue = catalogue

    def evaluate(self, out: Outputs, inputs: Inputs) -> None:
        info: dict[str, Any] = {}
        sample_run = inputs.run("subsample_id")
        clustering = clustering_of(inputs.store, sample_run, inputs.run("clusters_id"))
        if clustering is None:
            raise RadioCurationError(
                f"subsample {sample_run.run_id} has no clustering in its lineage; give clusters_id=<cluster run>"
            )
        hierarchy, cluster_rows = clustering.hierarchy, clustering.rows
        pool_all = WindowFeatures(inputs.store, clustering.features_run)
        # The pool is what was clustered (rows with NaN features may have been left out).
        pool = pool_all.file.subset(cluster_rows)
        pool_ids = hierarchy.cutout_id.astype(np.int64)
        sub_ids = read_subsample(sample_run.artifact("subsample.h5"))[0]
        sub_rows = positions(pool_ids, np.sort(sub_ids), f"clustering of {sample_run.run_id}")
        rng = np.random.default_rng(self.seed)
        random_rows = np.sort(rng.choice(len(pool_ids), len(sub_rows), replace=False))
        sets = {"pool": np.arange(len(pool_ids)), "subsample": sub_rows, "random": random_rows}
        paths = hierarchy.paths()
        matched = self.catalogue.labels_if_any(pool_all.merged, pool_all.table, info)
        # Factorised once: the figures and each set's enrichment count the codes (a byte a window), and the
        # label strings and source groups are not kept.
        labels = None if matched is None else label_codes(matched[0][cluster_rows])
        del matched
        with out.timer("figures"):
            figures = curation_figures(
                pool,
                sets,
                paths=paths,
                labels=labels,
                duplicate_threshold=self.duplicate_threshold,
                max_queries=self.max_queries,
                seed=self.seed,
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
                # On a linear axis the rare classes (< 1 % each) would be invisible next to the common ones.
                title="class shares (log axis)",
                ylabel="share of the set",
                log=True,
            )
        with out.timer("exemplars"):
            exemplars = top_level_exemplars(
                hierarchy.conditioning.source(pool),
                paths,
                hierarchy.levels[-1].centroids,
                self.exemplars,
                metric=hierarchy.metric,
            )
        grid_pages = self._exemplar_pages(out, pool_all, pool_ids, paths, sets, exemplars)
        metrics = figures.metrics()
        enriched = None
        if labels is not None:
            # Each set's rare-class (< 1 % of the pool each) and empty-window shares against the random
            # subsample's.
            empty = self.catalogue.empty_label
            rare = rare_classes(labels, exclude=(empty,))
            enriched = {
                name: enrichment(labels, rows, random_rows, rare, empty) for name, rows in sets.items()
            }
            metrics.update(enriched["subsample"].metrics("curation/enrichment"))
            info["rare_classes"] = rare
        sections = _report_sections(figures, n_levels, coverage_plot, share_plot, grid_pages, info, enriched)
        page = render_html(
            f"Curation report: {sample_run.run_id}",
            sections,
            meta=f"run {out.run.run_id} · subsample {sample_run.run_id} · clustering {hierarchy.n_levels} "
            f"levels · pool {len(pool_ids)} windows",
        )
        with out.artifact("report.html") as tmp:
            tmp.write_text(page, encoding="utf-8")
        counts = {"n_rows": len(pool_ids), "n_subsample": len(sub_rows), "n_images": len(pool_ids)}
        exemplar_ids = {int(k): pool_ids[v] for k, v in exemplars.items()}
        out.finish(metrics, counts, {"info": info, "exemplars": exemplar_ids}, info)

    def _exemplar_pages(
        self,
        out: Outputs,
        pool_all: WindowFeatures,
        pool_ids: np.ndarray,
        paths: np.ndarray,
        sets: dict[str, np.ndarray],
        exemplars: dict[int, np.ndarray],
    ) -> list[Path]:
        top = paths[:, -1]
        pool_size = np.bincount(top)
        sub_size = np.bincount(top[sets["subsample"]], minlength=len(pool_size))
        order = sorted(exemplars, key=lambda c: -pool_size[c])
        per_page = self.clusters_per_page
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


def _redundancy_rows(figures: CurationFigures, names: list[str]) -> list[list[Any]]:
    """The redundancy figures as ``value ± standard error``, and the queries they come from."""
    figure = figures.redundancy

    def estimate(key: str, se: str) -> list[str]:
        return [f"{figure[n][key]:.4f} ± {figure[n][se]:.4f}" for n in names]

    return [
        [
            "mean nearest-neighbour cosine similarity (± standard error)",
            *estimate("nn_similarity_mean", "nn_similarity_se"),
        ],
        [
            "near-duplicate rate (± standard error)",
            *estimate("near_duplicate_rate", "near_duplicate_rate_se"),
        ],
        [
            "nearest-neighbour queries (random points of the set)",
            *[int(figure[n]["n_queries"]) for n in names],
        ],
    ]


def _report_sections(
    figures: CurationFigures,
    n_levels: int,
    coverage_plot: Path,
    share_plot: Path | None,
    grid_pages: list[Path],
    info: dict[str, Any],
    enriched: dict[str, Enrichment] | None = None,
) -> list[Section]:
    names = list(figures.sizes)
    rare_rows = []
    if enriched is not None:
        rare = ", ".join(info.get("rare_classes") or []) or "none"
        rare_rows = [
            [f"rare classes ({rare}; < 1 % of the pool each)", *[enriched[n].rare_subsample for n in names]],
            ["rare-class share / the random subsample's", *[enriched[n].ratio for n in names]],
            ["rare-class share / the pool's", *[enriched[n].ratio_pool for n in names]],
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
            *_redundancy_rows(figures, names),
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
