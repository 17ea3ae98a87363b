"""``eval=linear_probe`` and ``eval=knn``: how well frozen features separate labelled classes.

The labelled set is either a labelled dataset through a model (``model_id`` or ``backbone``), or the
windows of a features run (``features_id``) labelled by the catalogue; then the folds are grouped by the
catalogue source labelling each window, so overlapping windows of one source never sit on both sides.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from radio_curation.data.datasets import LabelledImages
from radio_curation.errors import RadioCurationError
from radio_curation.evaluation import plots
from radio_curation.evaluation.evals.base import Evaluation, Inputs
from radio_curation.evaluation.labels import WindowLabels
from radio_curation.evaluation.outputs import Outputs
from radio_curation.evaluation.pool import WindowFeatures
from radio_curation.evaluation.probes import Classifier, evaluate_probe, knn_classifier, logistic_classifier

#: What the ``*_std`` of a probe's metrics is, written beside them in ``metrics.json``.
SPREAD_OVER_FOLDS = (
    "*_std is the standard deviation over the cross-validation folds of this one model: it says how "
    "stable the probe is, not how much another training seed would change the result (for that, compare "
    "runs of several seeds with `radio-curation runs compare --group NAME=ID,ID,...`)"
)


def probe_rows(
    labels: np.ndarray, exclude_labels: Sequence[str], max_images: int | None, seed: int
) -> np.ndarray:
    """Sorted rows of a features run that a probe scores: the windows whose label is not excluded, at most
    ``max_images`` of them (a random choice; None: all)."""
    keep = np.flatnonzero(~np.isin(labels, exclude_labels))
    if max_images is not None and len(keep) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_images, replace=False))
    return keep


class Probe(Evaluation):
    """A classifier on frozen features, scored by k-fold cross-validation and the dataset's fixed split.

    Parameters
    ----------
    folds
        Cross-validation folds.
    use_split
        Also score the dataset's fixed train/test split when it has one.
    max_images
        ``features_id``: probe at most this many labelled windows (a random choice); None: all.
    exclude_labels
        ``features_id``: window labels left out of the probe.
    catalogue
        ``features_id``: the catalogue that labels the windows.
    seed, dpi
        See :class:`~radio_curation.evaluation.evals.base.Evaluation`.
    """

    parents: ClassVar[Mapping[str, str]] = {"model_id": "train", "features_id": "features"}
    reads_images = True

    def __init__(
        self,
        folds: int,
        use_split: bool,
        max_images: int | None,
        exclude_labels: list[str],
        catalogue: WindowLabels,
        seed: int,
        dpi: int,
    ) -> None:
        super().__init__(seed, dpi)
        self.folds = folds
        self.use_split = use_split
        self.max_images = max_images
        self.exclude_labels = list(exclude_labels)
        self.catalogue = catalogue

    @abstractmethod
    def classifier(self, record: dict[str, Any]) -> Classifier:
        """The classifier to score; it may note what it chose (e.g. its C) in ``record``."""

    def evaluate(self, out: Outputs, inputs: Inputs) -> None:
        info: dict[str, Any] = {}
        features, data, groups = self._labelled_set(inputs, info)
        record: dict[str, Any] = {}
        classify = self.classifier(record)
        with out.timer("probe"):
            result = evaluate_probe(
                features,
                data.labels,
                classify,
                folds=self.folds,
                split=data.split if self.use_split else None,
                seed=self.seed,
                groups=groups,
            )
        names = list(data.class_names)
        title = f"{self.name}: {self.folds}-fold"
        out.png("confusion.png", plots.confusion_plot, result.confusion, names, title=title)
        if result.split_confusion is not None:
            out.png(
                "confusion_split.png",
                plots.confusion_plot,
                result.split_confusion,
                names,
                title="fixed split",
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
        out.finish(result.metrics(self.name), counts, details, info)

    def _labelled_set(
        self, inputs: Inputs, info: dict[str, Any]
    ) -> tuple[np.ndarray, LabelledImages, np.ndarray | None]:
        """Features, labels and fold groups (None: every image is its own group)."""
        features_run = inputs.run("features_id")
        if features_run is None:
            images = inputs.images
            data = images.load()
            features = images.embed(data.images)
            info.update(images.model()[2], source=f"dataset {images.name}")
            return features, data, None
        pool = WindowFeatures(inputs.store, features_run)
        matched = self.catalogue.labels_if_any(pool.merged, pool.table, info)
        if matched is None:
            raise RadioCurationError(
                f"features run {features_run.run_id} has no window labels: set catalogue.path to a source "
                "catalogue (catalogue=auto works for the synthetic sky), or probe a labelled dataset without "
                "features_id"
            )
        labels, groups = matched
        keep = probe_rows(labels, self.exclude_labels, self.max_images, self.seed)
        class_names, codes = np.unique(labels[keep], return_inverse=True)
        data = LabelledImages(
            images=np.zeros((len(keep), 1, 0, 0), dtype=np.float32),
            labels=codes.astype(np.int64),
            class_names=tuple(str(c) for c in class_names),
            names=pool.cutout_ids[keep].astype(str),
        )
        info["source"] = f"features run {features_run.run_id}"
        info["folds_grouped_by"] = "catalogue source labelling the window"
        return pool.file.read(keep), data, groups[keep]


class LinearProbe(Probe):
    """Logistic regression on standardised features, its C chosen by inner cross-validation.

    Parameters
    ----------
    inner_folds
        Folds of the inner cross-validation that picks C.
    cs
        The inverse regularisation strengths tried.
    max_iter
        Solver iterations.
    **probe
        See :class:`Probe`.
    """

    name = "linear_probe"
    headline = "linear_probe/accuracy_mean"

    def __init__(self, inner_folds: int, cs: list[float], max_iter: int, **probe: Any) -> None:
        super().__init__(**probe)
        self.inner_folds = inner_folds
        self.cs = list(cs)
        self.max_iter = max_iter

    def classifier(self, record: dict[str, Any]) -> Classifier:
        return logistic_classifier(
            cs=self.cs, inner_folds=self.inner_folds, max_iter=self.max_iter, seed=self.seed, record=record
        )


class KnnProbe(Probe):
    """Cosine kNN with temperature-weighted votes.

    Parameters
    ----------
    k
        Neighbours that vote.
    temperature
        Votes weigh ``exp(similarity / temperature)``.
    **probe
        See :class:`Probe`.
    """

    name = "knn"
    headline = "knn/accuracy_mean"

    def __init__(self, k: int, temperature: float, **probe: Any) -> None:
        super().__init__(**probe)
        self.k = k
        self.temperature = temperature

    def classifier(self, record: dict[str, Any]) -> Classifier:
        return knn_classifier(k=self.k, temperature=self.temperature)
