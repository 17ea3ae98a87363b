"""``eval=neighbours``: are physically adjacent windows closer in feature space than random pairs?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from radio_curation.evaluation import plots
from radio_curation.evaluation.evals.base import Evaluation, Inputs
from radio_curation.evaluation.neighbours import adjacent_pairs, distance_test, gallery_neighbours
from radio_curation.evaluation.outputs import Outputs
from radio_curation.evaluation.pool import WindowFeatures


class Neighbours(Evaluation):
    """Cosine distances of adjacent windows vs random pairs (one-sided Mann–Whitney U), and galleries of
    nearest neighbours (image retrieval) of a features run's windows.

    Parameters
    ----------
    max_offset
        Adjacent: same mosaic and size, corners at most ``max_offset × size`` apart.
    max_pairs
        At most this many adjacent pairs (and as many random pairs).
    n_queries
        Gallery rows: random query windows, unless ``query_ids`` ...
    query_ids
        ... gives the cutout IDs of the queries.
    k
        Neighbours shown per query.
    seed, dpi
        See :class:`~radio_curation.evaluation.evals.base.Evaluation`.
    """

    name = "neighbours"
    headline = "neighbours/p_value"
    parents: ClassVar[Mapping[str, str]] = {"features_id": "features"}
    required = ("features_id",)

    def __init__(
        self,
        max_offset: float,
        max_pairs: int,
        n_queries: int,
        query_ids: list[int] | None,
        k: int,
        seed: int,
        dpi: int,
    ) -> None:
        super().__init__(seed, dpi)
        self.max_offset = max_offset
        self.max_pairs = max_pairs
        self.n_queries = n_queries
        self.query_ids = query_ids
        self.k = k

    def evaluate(self, out: Outputs, inputs: Inputs) -> None:
        pool = WindowFeatures(inputs.store, inputs.run("features_id"))
        table = pool.table
        pairs = adjacent_pairs(
            table["mosaic"],
            table["y0"],
            table["x0"],
            table["size"],
            self.max_offset,
            self.max_pairs,
            self.seed,
        )
        with out.timer("distance_test"):
            test = distance_test(pool.file, pairs, max_pairs=self.max_pairs, seed=self.seed)
        out.png(
            "neighbour_distances.png",
            plots.histogram_plot,
            {"adjacent windows": test.adjacent, "random pairs": test.random},
            title=f"Mann–Whitney U p = {test.p_value:.2g}",
            xlabel="cosine distance",
        )
        if self.query_ids:
            queries = pool.rows_of(np.asarray(self.query_ids, dtype=np.int64), "eval.query_ids")
        else:
            rng = np.random.default_rng(self.seed)
            queries = np.sort(rng.choice(pool.file.n, min(self.n_queries, pool.file.n), replace=False))
        with out.timer("galleries"):
            rows, sim = gallery_neighbours(pool.file, queries, self.k)
        gallery = []
        for q, neighbour_rows in zip(queries, rows, strict=True):
            ids = pool.cutout_ids[np.r_[q, neighbour_rows]]
            gallery.append((f"cutout {ids[0]}", pool.read_windows(ids)))
        out.png(
            "neighbour_gallery.png", plots.image_grid, gallery, title=f"query (left) and its {self.k} nearest"
        )
        details = {
            "gallery": {
                "query_cutout_id": pool.cutout_ids[queries],
                "neighbour_cutout_id": pool.cutout_ids[rows],
                "similarity": sim,
            }
        }
        out.finish(test.metrics(), {"n_rows": pool.file.n, "n_pairs": len(test.adjacent)}, details)
