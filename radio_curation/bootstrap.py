"""The self-bootstrapping curation loop (``experiment=bootstrap``) and its measurement.

Without downloaded weights the loop makes its own features: it pretrains a small SSL model on the pool's
windows that hold a detected source (peak S/N at least ``bootstrap.min_peak_snr``; a random
``bootstrap.pretrain_subset`` of them, for ``bootstrap.max_epochs``), extracts the pool's features with it,
clusters them, draws a balanced and a random subsample of the same size, and pretrains the same recipe on
each with several seeds. Every step is an ordinary run of the store, chained by run IDs, so running the
loop again reuses every finished run and resumes an interrupted one.

:meth:`BootstrapLoop.measure` then scores what the issue of "does curation help?" asks: kNN on the truth
classes for the bootstrap features, a random-weights network and hand-made radio statistics; rare-class
enrichment of the balanced subsample over the random one; and the curated-vs-random pretraining on the
sky's truth classes and on MiraBest, as paired differences over seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.optim.swa_utils import update_bn

from radio_curation.curation.clusters import read_subsample
from radio_curation.cutouts.reader import WindowReader
from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.enrichment import Enrichment, enrichment
from radio_curation.evaluation.inputs import window_table
from radio_curation.evaluation.radio_stats import radio_statistics
from radio_curation.evaluation.seeds import (
    PairedDifference,
    paired_difference,
    seed_spread,
)
from radio_curation.evaluation.truth_probe import (
    balanced_accuracy,
    grouped_knn_balanced_accuracy,
    grouped_knn_recall,
)
from radio_curation.features.matrix import FeatureFile, positions
from radio_curation.runs.stage import resolve_inputs
from radio_curation.runs.store import RunStore
from radio_curation.tasks import curate as curate_task
from radio_curation.tasks import cutouts as cutouts_task
from radio_curation.tasks import evaluate as evaluate_task
from radio_curation.tasks import features as features_task
from radio_curation.tasks import merge as merge_task
from radio_curation.tasks import train as train_task

log = logging.getLogger(__name__)

#: ``compose(config_name, overrides)``: a root config (``extract``, ``curate``, ``train``, ``evaluate``).
Composer = Callable[[str, Sequence[str]], DictConfig]


@dataclass
class BootstrapRuns:
    """The run IDs of one pass of the loop."""

    merge: str
    detections: str
    bootstrap_model: str
    features: str
    clusters: str
    curated: str
    random: str
    curated_models: dict[int, str] = field(default_factory=dict)
    random_models: dict[int, str] = field(default_factory=dict)


@dataclass
class Measurement:
    """What :meth:`BootstrapLoop.measure` finds.

    Attributes
    ----------
    features : dict
        ``knn_ssl``, ``knn_random_init``, ``knn_stats``: balanced kNN accuracy on the truth classes;
        ``knn_random_bn``: the random-weights network with batch-norm statistics taken from the windows it
        embeds, the stronger baseline: what the SSL model learns beyond its inputs' statistics.
    recall : dict
        The same keys → class → the kNN's recall of that class (``features`` is their mean): where
        each representation wins or loses.
    enrichment : Enrichment
        The balanced subsample against the random one.
    pretraining : dict
        Probe name → paired difference (curated − random) over seeds.
    per_seed : dict
        Probe name → ``{"curated": [...], "random": [...]}``.
    """

    features: dict[str, float]
    recall: dict[str, dict[str, float]]
    enrichment: Enrichment
    pretraining: dict[str, PairedDifference]
    per_seed: dict[str, dict[str, list[float]]]


class BootstrapLoop:
    """Run and measure the loop with the configs ``compose`` builds (``overrides`` added to each).

    Parameters
    ----------
    compose : Composer
        Builds a root config from overrides (Hydra's compose API with the project's config directory).
    overrides : sequence of str
        Overrides for every step, e.g. ``["experiment=bootstrap"]`` plus a smaller sky.
    """

    def __init__(self, compose: Composer, overrides: Sequence[str] = ("experiment=bootstrap",)) -> None:
        self.compose = compose
        self.overrides = list(overrides)
        settings = OmegaConf.select(self.cfg("train"), "bootstrap")
        if settings is None:
            raise RadioCurationError(
                "the bootstrap loop reads its settings from `bootstrap:` (pretrain_subset, seeds); "
                "use experiment=bootstrap or an experiment that defines them"
            )
        self.pretrain_subset = None if settings.pretrain_subset is None else int(settings.pretrain_subset)
        self.max_epochs = None if settings.max_epochs is None else int(settings.max_epochs)
        self.min_peak_snr = settings.min_peak_snr
        self.seeds = [int(s) for s in settings.seeds]
        if len(self.seeds) < 2:
            raise RadioCurationError(
                f"bootstrap.seeds={self.seeds}: a paired comparison needs at least 2 seeds"
            )

    def cfg(self, config_name: str, *extra: str) -> DictConfig:
        """The root config ``config_name`` with the loop's overrides and ``extra``."""
        return self.compose(config_name, [*self.overrides, *extra])

    def run(self) -> BootstrapRuns:
        """Every run of the loop, computed or reused; returns their IDs."""
        cutouts = cutouts_task.run(self.cfg("extract", "stage=cutouts"))["run_id"]
        merge = merge_task.run(self.cfg("extract", "stage=merge", f"cutouts_ids=[{cutouts}]"))["run_id"]
        # Two thirds of a sky's windows hold only noise: a contrastive model trained on them learns to tell
        # noise patterns apart, not morphologies. The bootstrap model trains on windows with a detection
        # (the same cutouts merged with a peak S/N cut); the features, the curation and the subsamples'
        # models use the whole pool.
        detections = merge_task.run(
            self.cfg(
                "extract",
                "stage=merge",
                f"cutouts_ids=[{cutouts}]",
                f"merge.min_peak_snr={'null' if self.min_peak_snr is None else self.min_peak_snr}",
            )
        )["run_id"]
        bootstrap_model = train_task.run(
            self.cfg(
                "train",
                f"source_id={detections}",
                f"random_subset={'null' if self.pretrain_subset is None else self.pretrain_subset}",
                *([] if self.max_epochs is None else [f"trainer.max_epochs={self.max_epochs}"]),
            )
        )["run_id"]
        features = self.features_of(merge, bootstrap_model)
        curated = curate_task.run(self.cfg("curate", f"features_id={features}"))
        random = curate_task.run(
            self.cfg("curate", f"clusters_id={curated['clusters_id']}", "sampler=random")
        )
        runs = BootstrapRuns(
            merge=merge,
            detections=detections,
            bootstrap_model=bootstrap_model,
            features=features,
            clusters=curated["clusters_id"],
            curated=curated["run_id"],
            random=random["run_id"],
        )
        for seed in self.seeds:
            for subsample, models in ((runs.curated, runs.curated_models), (runs.random, runs.random_models)):
                models[seed] = train_task.run(self.cfg("train", f"subsample_id={subsample}", f"seed={seed}"))[
                    "run_id"
                ]
        return runs

    def features_of(self, merge: str, model: str) -> str:
        """A features run of the merge run's windows with the backbone of train run ``model``."""
        return features_task.run(
            self.cfg(
                "extract",
                "stage=features",
                f"source_id={merge}",
                "backbone=run",
                f"backbone.model_id={model}",
            )
        )["run_id"]

    def extractor(
        self, model: str | None, size: int, batch_norm_from: np.ndarray | None = None, batch: int = 512
    ) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        """The backbone and preprocessing the features stage uses for ``size``-px windows (in eval mode):
        train run ``model``'s, or (None) the loop's backbone with random weights drawn from ``seed``.

        ``batch_norm_from`` (raw windows) first replaces its batch-norm statistics by theirs, weights
        untouched: a random network otherwise keeps its initial statistics (mean 0, variance 1), which
        suit no real input, so its activations sit off the ReLUs' knees.
        """
        run = [] if model is None else ["backbone=run", f"backbone.model_id={model}"]
        inputs = resolve_inputs(self.cfg("extract", "stage=features", *run), features_task.FEATURES_STAGE)
        extractor, preprocess = features_task._models(inputs, np.array([size]))
        if batch_norm_from is not None:
            x = torch.from_numpy(np.asarray(batch_norm_from, dtype=np.float32))
            update_bn((preprocess(x[i : i + batch]) for i in range(0, len(x), batch)), extractor)
        return extractor, preprocess

    def embed(
        self, windows: np.ndarray, model: str | None, batch: int = 512, batch_norm_from_windows: bool = False
    ) -> np.ndarray:
        """Features of raw ``windows`` as the features stage computes them, with :meth:`extractor`'s
        network (``batch_norm_from_windows``: its batch-norm statistics from ``windows``)."""
        extractor, preprocess = self.extractor(
            model, windows.shape[-1], windows if batch_norm_from_windows else None, batch
        )
        x = torch.from_numpy(np.asarray(windows, dtype=np.float32))
        with torch.no_grad():
            return torch.cat(
                [extractor(preprocess(x[i : i + batch])) for i in range(0, len(x), batch)]
            ).numpy()

    def truth(self, merge: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cutout IDs of the merge run's windows, their truth class and the source that labels them."""
        store = RunStore.of(self.cfg("extract"))
        merged = store.resolve(merge, stage="merge").artifact("merged.h5")
        ids = np.asarray(WindowReader(merged).cutout_ids, dtype=np.int64)
        table = window_table(merged, ids)
        labels, _, groups = instantiate(self.cfg("evaluate").catalogue).labels(merged, table)
        return ids, labels, groups

    def _mirabest(self, model: str, root: Path) -> float:
        result = evaluate_task.run(
            self.cfg(
                "evaluate",
                "eval=linear_probe",
                f"model_id={model}",
                "dataset=mirabest",
                f"dataset.root={root}",
            )
        )
        return float(result["metrics"]["linear_probe/accuracy_mean"])

    def measure(self, runs: BootstrapRuns, mirabest: Path | None = None) -> Measurement:
        """Score the loop's runs (see the module docstring); ``mirabest`` adds the MiraBest probe."""
        store = RunStore.of(self.cfg("extract"))
        empty = str(self.cfg("evaluate").catalogue.empty_label)
        ids, labels, groups = self.truth(runs.merge)
        labelled = labels != empty
        with WindowReader(store.resolve(runs.merge, stage="merge").artifact("merged.h5")) as reader:
            windows = reader.read(ids[labelled])

        def knn(x: np.ndarray) -> float:
            return grouped_knn_balanced_accuracy(x, labels[labelled], groups[labelled], seed=0)

        features_file = FeatureFile(store.resolve(runs.features, stage="features").artifact("features.h5"))
        bootstrap_features = features_file.read(
            positions(features_file.cutout_ids, ids[labelled], runs.features)
        )
        recall = {
            name: grouped_knn_recall(x, labels[labelled], groups[labelled], seed=0)
            for name, x in (
                ("knn_ssl", bootstrap_features),
                ("knn_random_init", self.embed(windows, None)),
                ("knn_random_bn", self.embed(windows, None, batch_norm_from_windows=True)),
                ("knn_stats", radio_statistics(windows)),
            )
        }
        features = {name: balanced_accuracy(per_class) for name, per_class in recall.items()}
        curated_ids, _ = read_subsample(store.resolve(runs.curated, stage="sample").artifact("subsample.h5"))
        random_ids, _ = read_subsample(store.resolve(runs.random, stage="sample").artifact("subsample.h5"))
        where = f"merge run {runs.merge}"
        enriched = enrichment(
            labels, positions(ids, curated_ids, where), positions(ids, random_ids, where), empty_label=empty
        )
        per_seed: dict[str, dict[str, list[float]]] = {"synthetic": {"curated": [], "random": []}}
        if mirabest is not None:
            per_seed["mirabest_confident"] = {"curated": [], "random": []}
        for arm, models in (("curated", runs.curated_models), ("random", runs.random_models)):
            for seed in self.seeds:
                per_seed["synthetic"][arm].append(knn(self.embed(windows, models[seed])))
                if mirabest is not None:
                    per_seed["mirabest_confident"][arm].append(self._mirabest(models[seed], mirabest))
        pretraining = {
            probe: paired_difference(scores["curated"], scores["random"])
            for probe, scores in per_seed.items()
        }
        return Measurement(features, recall, enriched, pretraining, per_seed)


def result_lines(measurement: Measurement) -> list[str]:
    """The ``RESULT`` lines of ``benchmarks/bench_science.py``."""
    f, e = measurement.features, measurement.enrichment
    lines = [
        f"RESULT features knn_ssl={f['knn_ssl']:.4f} knn_random_init={f['knn_random_init']:.4f} "
        f"knn_stats={f['knn_stats']:.4f} knn_random_bn={f['knn_random_bn']:.4f}",
        f"RESULT enrichment rare_subsample={e.rare_subsample:.4f} rare_random={e.rare_random:.4f} "
        f"ratio={e.ratio:.3f} empty_ratio={e.empty_ratio:.3f} rare_pool={e.rare_pool:.4f} "
        f"ratio_pool={e.ratio_pool:.3f}",
    ]
    for probe, d in measurement.pretraining.items():
        scores = measurement.per_seed[probe]
        curated, random = seed_spread(scores["curated"]), seed_spread(scores["random"])
        lines.append(
            f"RESULT pretraining curated={curated.mean:.4f} random={random.mean:.4f} diff={d.mean:+.4f} "
            f"ci_low={d.low:+.4f} ci_high={d.high:+.4f} seeds={d.n} probe={probe}"
        )
    return lines


def summary(measurement: Measurement) -> dict[str, Any]:
    """Everything measured, JSON-ready (per-seed scores, spreads, the rare classes)."""
    e = measurement.enrichment
    return {
        "features": measurement.features,
        "recall": measurement.recall,
        "enrichment": {**e.metrics(), "rare_classes": list(e.rare)},
        "pretraining": {
            probe: {**vars(d), "per_seed": measurement.per_seed[probe]}
            for probe, d in measurement.pretraining.items()
        },
    }
