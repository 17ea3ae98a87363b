"""``eval=representation``: is a representation healthy (spectrum, RankMe, alignment, uniformity)?"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, ClassVar

import numpy as np

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation import plots
from radio_curation.evaluation.embed import dihedral
from radio_curation.evaluation.evals.base import Evaluation, Inputs
from radio_curation.evaluation.neighbours import adjacent_pairs
from radio_curation.evaluation.outputs import Outputs
from radio_curation.evaluation.pool import WindowFeatures
from radio_curation.evaluation.representation import (
    GramAccumulator,
    accumulate,
    alignment,
    frechet_distance,
    spectrum_metrics,
    uniformity,
)
from radio_curation.features.matrix import FeatureArray, FeatureFile, FeatureMatrix

#: Rows per chunk when streaming a features file.
CHUNK = 65_536


class Representation(Evaluation):
    """Singular-value spectrum (dimensional collapse), RankMe, effective rank, alignment and uniformity.

    Of a features run (``features_id``; positives: physically adjacent windows) or of a model on the
    labelled dataset (positives: each image and its rotated mirror image). With ``compare_id`` (a second
    features run), the same for it and the Fréchet distance between the two.

    Parameters
    ----------
    uniformity_sample
        Rows uniformity is computed from (all pairs among them).
    max_pairs
        Adjacent-window pairs alignment is computed from (a random choice when there are more).
    seed, dpi
        See :class:`~radio_curation.evaluation.evals.base.Evaluation`.
    """

    name = "representation"
    headline = "representation/effective_rank"
    parents: ClassVar[Mapping[str, str]] = {
        "model_id": "train",
        "features_id": "features",
        "compare_id": "features",
    }
    reads_images = True

    def __init__(self, uniformity_sample: int, max_pairs: int, seed: int, dpi: int) -> None:
        super().__init__(seed, dpi)
        self.uniformity_sample = uniformity_sample
        self.max_pairs = max_pairs

    @classmethod
    def check_inputs(cls, given: Collection[str]) -> None:
        super().check_inputs(given)
        if "compare_id" in given and "features_id" not in given:
            raise RadioCurationError(
                "compare_id compares two features runs: give features_id=<features run> too"
            )

    def evaluate(self, out: Outputs, inputs: Inputs) -> None:
        info: dict[str, Any] = {}
        rng = np.random.default_rng(self.seed)
        features_run = inputs.run("features_id")
        if features_run is not None:
            pool = WindowFeatures(inputs.store, features_run)
            source: FeatureMatrix = pool.file
            name = features_run.run_id
            info["source"] = f"features run {name}"
            with out.timer("spectrum"):
                acc = _accumulate(source)
            table = pool.table
            pairs = adjacent_pairs(table["mosaic"], table["y0"], table["x0"], table["size"])
            if len(pairs) > self.max_pairs:
                pairs = pairs[rng.choice(len(pairs), self.max_pairs, replace=False)]
            align = float("nan")
            if len(pairs):
                align = alignment(source.read(pairs[:, 0]), source.read(pairs[:, 1]))
            info["positives"] = f"{len(pairs)} pairs of physically adjacent windows"
        else:
            images = inputs.images
            data = images.load()
            x = images.embed(data.images)
            y = images.embed(data.images, transform=dihedral)
            info.update(images.model()[2], positives="each image and its 90°-rotated mirror image")
            source = FeatureArray(x)
            name = "model"
            acc = accumulate([x], x.shape[1])
            align = alignment(x, y)
        health, spectrum = spectrum_metrics(acc)
        metrics = {f"representation/{k}": v for k, v in health.items()}
        metrics["representation/uniformity"] = self._uniformity(source, rng)
        metrics["representation/alignment"] = align
        spectra = {name: spectrum}
        details: dict[str, Any] = {"spectrum": spectrum, "info": info}
        compare_run = inputs.run("compare_id")
        if compare_run is not None:
            other = FeatureFile(compare_run.artifact("features.h5"))
            with out.timer("compare"):
                other_acc = _accumulate(other)
            other_health, other_spectrum = spectrum_metrics(other_acc)
            metrics.update({f"representation/compare/{k}": v for k, v in other_health.items()})
            metrics["representation/compare/uniformity"] = self._uniformity(other, rng)
            metrics["representation/frechet_distance"] = frechet_distance(
                *acc.mean_covariance(), *other_acc.mean_covariance()
            )
            spectra[compare_run.run_id] = other_spectrum
            details["compare_spectrum"] = other_spectrum
        title = f"centred spectrum: RankMe {metrics['representation/rankme']:.1f}, n = {acc.n}"
        out.png("spectrum.png", plots.spectrum_plot, spectra, title=title)
        counts = {"n_rows": acc.n, "n_images": acc.n, "feature_dim": int(acc.total.shape[0])}
        out.finish(metrics, counts, details, info)

    def _uniformity(self, source: FeatureMatrix, rng: np.random.Generator) -> float:
        rows = np.sort(rng.choice(source.n, min(source.n, self.uniformity_sample), replace=False))
        return uniformity(source.read(rows))


def _accumulate(source: FeatureMatrix) -> GramAccumulator:
    return accumulate((chunk for _, chunk in source.iter_chunks(CHUNK)), source.dim)
