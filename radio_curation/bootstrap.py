"""The self-bootstrapping curation loop (``experiment=bootstrap``) and its measurement: does curation help?

Without downloaded weights the loop makes its own features: it pretrains a small SSL model on the pool's
windows that hold a detected source (peak S/N at least ``bootstrap.min_peak_snr``, for
``bootstrap.max_epochs``), extracts the pool's features with it and clusters them. Then, for every seed
``s``, each arm of ``bootstrap.arms`` draws its subsample anew with ``s`` and the SSL recipe pretrains on it
with ``s``; the arms are ordinary runs: a sample run (``curate.py`` with the arm's sampler, on the bootstrap
features or on the arm's own features run) or a filtered merge run (``extract.py stage=merge`` with the
arm's filter) of which ``train.py random_subset=<target_size>`` draws the windows. Every step is an ordinary
run of the store, chained by run IDs, so running the loop again reuses every finished run.

:meth:`BootstrapLoop.measure` scores every model on windows it cannot have seen: a held-out probe sky (own
seed, own mosaics elsewhere on the sky, never part of any pool; ``heldout_sky``), the pool without every
source that has a window in either compared subsample (``pool_excluded``) and MiraBest at the pixel scale
the models trained at (the published split and grouped cross-validation). Each model is probed with the
batch-norm statistics it gathered in training (``bn=own``) and with those of one common unlabelled set of
the probe's domain (``bn=common``), the same for every arm and for random weights.
"""

from __future__ import annotations

import copy
import csv
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import submitit
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.optim.swa_utils import update_bn

from radio_curation.curation.clusters import read_subsample
from radio_curation.cutouts.index import read_index
from radio_curation.cutouts.reader import WindowReader
from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.enrichment import enrichment, label_codes, rare_classes
from radio_curation.evaluation.inputs import window_table
from radio_curation.evaluation.probes import evaluate_probe, logistic_classifier
from radio_curation.evaluation.radio_stats import radio_statistics
from radio_curation.evaluation.seeds import PairedDifference, paired_difference, seed_spread
from radio_curation.evaluation.truth_probe import grouped_knn_balanced_accuracy
from radio_curation.features.matrix import positions
from radio_curation.runs.stage import resolve_inputs
from radio_curation.runs.store import RunStore
from radio_curation.tasks import curate as curate_task
from radio_curation.tasks import cutouts as cutouts_task
from radio_curation.tasks import features as features_task
from radio_curation.tasks import merge as merge_task
from radio_curation.tasks import train as train_task
from radio_curation.tasks.resolvers import register_resolvers

log = logging.getLogger(__name__)

#: ``compose(config_name, overrides)``: a root config (``extract``, ``curate``, ``train``, ``evaluate``).
Composer = Callable[[str, Sequence[str]], DictConfig]

#: The probes, in the order the ``RESULT`` lines list them.
PROBES = ("heldout_sky", "pool_excluded", "mirabest_split", "mirabest_cv")
#: Batch-norm statistics a model is probed with: its own (from training) or the probe domain's common set.
BN_MODES = ("common", "own")


@dataclass(frozen=True)
class Arm:
    """How one arm draws its subsample: a filtered merge (``merge`` overrides; ``random_subset`` draws
    from it) or a sample run (``curate`` overrides, on ``features`` overrides' features run, or on the
    bootstrap features when there are none)."""

    name: str
    merge: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    curate: tuple[str, ...] = ()


@dataclass(frozen=True)
class Model:
    """One pretraining: its arm, SSL method, seed, train run and the windows it trained on."""

    arm: str
    method: str
    seed: int
    run_id: str
    merge: str
    cutout_ids: np.ndarray = field(repr=False)


@dataclass
class BootstrapRuns:
    """The run IDs of one pass of the loop."""

    merge: str
    detections: str
    bootstrap_model: str
    features: str
    probe_merge: str
    clusterings: dict[int, str]
    subsamples: dict[str, dict[int, str]]
    models: list[Model]

    def ids(self) -> dict[str, Any]:
        """The run IDs, JSON-ready."""
        return {
            "merge": self.merge,
            "detections": self.detections,
            "bootstrap_model": self.bootstrap_model,
            "features": self.features,
            "probe_merge": self.probe_merge,
            "clusterings": self.clusterings,
            "subsamples": self.subsamples,
            "models": [(m.arm, m.method, m.seed, m.run_id) for m in self.models],
        }


@dataclass
class Labelled:
    """Labelled windows (or images) of a probe and the common unlabelled set its batch norms see."""

    windows: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    groups: np.ndarray = field(repr=False)
    common: np.ndarray = field(repr=False)
    resize: int | None = None
    split: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Measurement:
    """What :meth:`BootstrapLoop.measure` finds.

    Attributes
    ----------
    features : dict
        Per representation (``knn_ssl``, ``knn_random_bn``, ``knn_random_init``, ``knn_stats``) the
        per-seed balanced kNN accuracies on the held-out sky's truth classes (``seed``: fold assignment and
        random weights), and ``gap_bn`` (ssl − random_bn) paired over those seeds.
    enrichment : dict
        ``ratio_pool`` per clustering seed, distinct rare sources per subsample and seed, empty ratio.
    scores : dict
        ``(arm, method, probe, bn)`` → ``(arm's per-seed scores, reference arm's on the same windows)``.
    mirabest : dict
        ``(representation, probe)`` → per-seed scores of the bootstrap model and the baselines on MiraBest.
    """

    features: dict[str, list[float]]
    gap_bn: PairedDifference
    enrichment: dict[str, Any]
    scores: dict[tuple[str, str, str, str], tuple[list[float], list[float]]]
    mirabest: dict[tuple[str, str], list[float]]
    reference: str

    def pretraining(self) -> dict[tuple[str, str, str, str], PairedDifference]:
        """``(arm, method, probe, bn)`` → paired difference arm − reference over seeds."""
        return {key: paired_difference(a, r) for key, (a, r) in self.scores.items()}


def _strings(node: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (node or ()))


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
        s = OmegaConf.select(self.cfg("train"), "bootstrap")
        if s is None:
            raise RadioCurationError(
                "the bootstrap loop reads its settings from `bootstrap:` (arms, methods, seeds); "
                "use experiment=bootstrap or an experiment that defines them"
            )
        self.pretrain_subset = None if s.pretrain_subset is None else int(s.pretrain_subset)
        self.max_epochs = None if s.max_epochs is None else int(s.max_epochs)
        self.min_peak_snr = s.min_peak_snr
        self.seeds = [int(v) for v in s.seeds]
        self.method_seeds = [int(v) for v in s.method_seeds]
        self.clustering_seeds = [int(v) for v in s.clustering_seeds]
        self.recluster = bool(s.recluster)
        self.probe_sky = _strings(s.probe_sky)
        self.common_windows = int(s.common_windows)
        self.probe_grid = bool(s.probe_grid)
        self.mirabest_arcsec = float(s.mirabest_pixel_arcsec)
        self.mirabest_crop = None if s.mirabest_crop is None else int(s.mirabest_crop)
        self.launcher = None if s.launcher is None else OmegaConf.to_container(s.launcher, resolve=True)
        self.arms = {
            str(name): Arm(
                str(name), _strings(a.get("merge")), _strings(a.get("features")), _strings(a.get("curate"))
            )
            for name, a in s.arms.items()
        }
        self.reference = str(s.reference_arm)
        self.recipe = str(s.recipe)
        self.methods = {str(name): _strings(o) for name, o in s.methods.items()}
        self.method_arms = [str(a) for a in s.method_arms]
        unknown = sorted({self.reference, *self.method_arms} - set(self.arms))
        if unknown:
            raise RadioCurationError(
                f"bootstrap arms {unknown} are not among bootstrap.arms {sorted(self.arms)}"
            )
        if self.recipe not in self.methods:
            raise RadioCurationError(f"bootstrap.recipe={self.recipe} is not among bootstrap.methods")
        if min(len(self.seeds), len(self.method_seeds)) < 2:
            raise RadioCurationError(
                f"bootstrap.seeds={self.seeds}, method_seeds={self.method_seeds}: a paired comparison needs "
                "at least 2 seeds"
            )
        if not self.clustering_seeds:
            raise RadioCurationError("bootstrap.clustering_seeds is empty: give at least one seed")

    def cfg(self, config_name: str, *extra: str) -> DictConfig:
        """The root config ``config_name`` with the loop's overrides and ``extra``."""
        return self.compose(config_name, [*self.overrides, *extra])

    @cached_property
    def store(self) -> RunStore:
        return RunStore.of(self.cfg("extract"))

    @cached_property
    def catalogue(self) -> Any:
        """The ``catalogue`` config's window labels (truth classes of the synthetic skies)."""
        return instantiate(self.cfg("evaluate").catalogue)

    @cached_property
    def linear_probe(self) -> DictConfig:
        """``eval=linear_probe``'s settings: the MiraBest probe's."""
        return self.cfg("evaluate", "eval=linear_probe").eval

    def plan(self) -> Iterator[tuple[str, int, list[str]]]:
        """``(method, seed, arms)``: every arm with the recipe's seeds, and the reference and
        ``method_arms`` with ``method_seeds`` for each other method."""
        for method in self.methods:
            recipe = method == self.recipe
            arms = list(self.arms) if recipe else list(dict.fromkeys([self.reference, *self.method_arms]))
            for seed in self.seeds if recipe else self.method_seeds:
                yield method, seed, arms

    def run(self) -> BootstrapRuns:
        """Every run of the loop, computed or reused; returns their IDs."""
        cutouts = cutouts_task.run(self.cfg("extract", "stage=cutouts"))["run_id"]
        merge = self.merge(cutouts)
        # Two thirds of a sky's windows hold only noise: a contrastive model trained on them learns to tell
        # noise patterns apart, not morphologies. The bootstrap model trains on windows with a detection;
        # the features, the curation and the subsamples' models use the whole pool.
        cut = "null" if self.min_peak_snr is None else self.min_peak_snr
        detections = self.merge(cutouts, f"merge.min_peak_snr={cut}")
        bootstrap_model = train_task.run(
            self.cfg(
                "train",
                f"source_id={detections}",
                f"random_subset={'null' if self.pretrain_subset is None else self.pretrain_subset}",
                *([] if self.max_epochs is None else [f"trainer.max_epochs={self.max_epochs}"]),
            )
        )["run_id"]
        features = self.features_of(merge, bootstrap_model)
        probe_cutouts = cutouts_task.run(self.cfg("extract", "stage=cutouts", *self.probe_sky))["run_id"]
        probe_merge = self.merge(probe_cutouts, *self.probe_sky)
        clusterings = {
            seed: self.sample(
                features, self.arms["balanced"].curate if "balanced" in self.arms else (), seed
            )["clusters_id"]
            for seed in self.clustering_seeds
        }
        subsamples: dict[str, dict[int, str]] = {}
        jobs = []
        for method, seed, arms in self.plan():
            for name in arms:
                source = self.subsample(self.arms[name], seed, cutouts, merge, features, subsamples)
                jobs.append(
                    (name, method, seed, self.cfg("train", *self.methods[method], *source, f"seed={seed}"))
                )
        models = []
        for (name, method, seed, train_cfg), run_id in zip(
            jobs, self.train_all([j[3] for j in jobs]), strict=True
        ):
            trained = train_task.resolve_source(resolve_inputs(train_cfg, train_task.TRAIN))
            # The run directory of merged.h5 is named by its merge run's ID.
            models.append(
                Model(name, method, seed, run_id, Path(trained.merged).parent.name, trained.cutout_ids)
            )
        return BootstrapRuns(
            merge, detections, bootstrap_model, features, probe_merge, clusterings, subsamples, models
        )

    def train_all(self, configs: Sequence[DictConfig]) -> list[str]:
        """Train runs of ``configs`` (reused when finished): in this process, or with
        ``bootstrap.launcher`` as one submitit job array (one job per model; e.g. on SLURM)."""
        if self.launcher is None:
            return [train_task.run(c)["run_id"] for c in configs]
        settings = dict(self.launcher)
        executor = submitit.AutoExecutor(folder=settings.pop("folder"), cluster=settings.pop("cluster"))
        executor.update_parameters(**settings)
        jobs = executor.map_array(_train, configs)
        log.info("submitted %d training jobs (%s)", len(jobs), jobs[0].job_id if jobs else "none")
        return [job.result() for job in jobs]

    def merge(self, cutouts: str, *extra: str) -> str:
        """A merge run of cutouts run ``cutouts`` with ``extra`` (filters, the sky)."""
        return merge_task.run(self.cfg("extract", "stage=merge", f"cutouts_ids=[{cutouts}]", *extra))[
            "run_id"
        ]

    def sample(self, features: str, curate: Sequence[str], seed: int, clusters: str | None = None) -> dict:
        """A sample run: ``curate`` overrides with ``seed``, on ``clusters`` or a clustering of ``features``."""
        parent = f"clusters_id={clusters}" if clusters else f"features_id={features}"
        return curate_task.run(self.cfg("curate", parent, *curate, f"seed={seed}"))

    def subsample(
        self,
        arm: Arm,
        seed: int,
        cutouts: str,
        merge: str,
        features: str,
        subsamples: dict[str, dict[int, str]],
    ) -> list[str]:
        """The ``train.py`` overrides that make ``arm``'s subsample of ``seed`` (its runs made on the way)."""
        if arm.merge:
            filtered = self.merge(cutouts, *arm.merge)
            subsamples.setdefault(arm.name, {})[seed] = filtered
            return [f"source_id={filtered}", f"random_subset={int(self.cfg('train').target_size)}"]
        if arm.features:
            features = self.features_task_run(merge, arm.features)
        # Seed s redraws the subsample; with bootstrap.recluster it also reclusters with s.
        clusters = None if self.recluster else self.sample(features, arm.curate, self.clustering_seeds[0])
        sample = self.sample(
            features, arm.curate, seed, None if clusters is None else clusters["clusters_id"]
        )
        subsamples.setdefault(arm.name, {})[seed] = sample["run_id"]
        return [f"subsample_id={sample['run_id']}"]

    def features_task_run(self, merge: str, overrides: Sequence[str]) -> str:
        """A features run of the merge run's windows with ``overrides`` (the backbone and preprocessing)."""
        return features_task.run(self.cfg("extract", "stage=features", f"source_id={merge}", *overrides))[
            "run_id"
        ]

    def features_of(self, merge: str, model: str) -> str:
        """A features run of the merge run's windows with the backbone of train run ``model``."""
        return self.features_task_run(merge, ["backbone=run", f"backbone.model_id={model}"])

    # ---- measuring -------------------------------------------------------------------------------------

    def extractor(
        self,
        model: str | None,
        size: int,
        batch_norm_from: np.ndarray | None = None,
        batch: int = 512,
        seed: int = 0,
        resize: int | None = None,
    ) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        """The backbone and preprocessing the features stage uses for ``size``-px windows (in eval mode):
        train run ``model``'s, or (None) the loop's backbone with random weights drawn from ``seed``;
        ``resize`` replaces the configured input side.

        ``batch_norm_from`` (raw windows) first replaces its batch-norm statistics by theirs (cumulative
        averages over the set's batches), weights untouched: a random network otherwise keeps its initial
        statistics (mean 0, variance 1), which suit no real input, and a trained one those of its subsample.
        """
        extractor, preprocess = self._network(model, size, seed, resize)
        extractor = copy.deepcopy(extractor)
        if batch_norm_from is not None:
            recalibrate_batch_norm(extractor, preprocess, batch_norm_from, batch)
        return extractor, preprocess

    @lru_cache(maxsize=16)  # noqa: B019 (the loop lives as long as its measurement; a model is probed 4-6 times)
    def _network(
        self, model: str | None, size: int, seed: int, resize: int | None
    ) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        run = [] if model is None else ["backbone=run", f"backbone.model_id={model}"]
        extra = [f"seed={seed}", *([] if resize is None else [f"resize={resize}"])]
        inputs = resolve_inputs(
            self.cfg("extract", "stage=features", *run, *extra), features_task.FEATURES_STAGE
        )
        return features_task._models(inputs, np.array([size]))

    def embed(
        self,
        windows: np.ndarray,
        model: str | None,
        batch_norm_from: np.ndarray | None = None,
        batch: int = 512,
        seed: int = 0,
        resize: int | None = None,
    ) -> np.ndarray:
        """Features of raw ``windows`` as the features stage computes them, with :meth:`extractor`'s network."""
        extractor, preprocess = self.extractor(model, windows.shape[-1], batch_norm_from, batch, seed, resize)
        x = torch.from_numpy(np.asarray(windows, dtype=np.float32))
        with torch.no_grad():
            return torch.cat(
                [extractor(preprocess(x[i : i + batch])) for i in range(0, len(x), batch)]
            ).numpy()

    def truth(self, merge: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cutout IDs of the merge run's windows, their truth class and the source that labels them."""
        merged = self.store.resolve(merge, stage="merge").artifact("merged.h5")
        ids = np.asarray(WindowReader(merged).cutout_ids, dtype=np.int64)
        table = window_table(merged, ids)
        labels, _, groups = self.catalogue.labels(merged, table)
        return ids, labels, groups

    def sources(self, merge: str, cutout_ids: np.ndarray) -> np.ndarray:
        """Catalogue rows of every truth source within half a window side of a window ``cutout_ids`` of
        merge run ``merge`` (the sources a model trained on these windows has seen)."""
        merged = self.store.resolve(merge, stage="merge").artifact("merged.h5")
        return self.catalogue.sources(merged, window_table(merged, cutout_ids))

    def labelled_sky(self, merge: str) -> Labelled:
        """The labelled windows of a merge run (with ``bootstrap.probe_grid``, only those on the
        non-overlapping grid of each mosaic), and ``bootstrap.common_windows`` of its windows at random."""
        empty = str(self.cfg("evaluate").catalogue.empty_label)
        ids, labels, groups = self.truth(merge)
        merged = self.store.resolve(merge, stage="merge").artifact("merged.h5")
        probed = labels != empty
        if self.probe_grid:
            col = window_table(merged, ids)
            probed &= (col["y0"] % col["size"] == 0) & (col["x0"] % col["size"] == 0)
        common = np.sort(
            np.random.default_rng(0).choice(ids, size=min(self.common_windows, len(ids)), replace=False)
        )
        with WindowReader(merged) as reader:
            return Labelled(reader.read(ids[probed]), labels[probed], groups[probed], reader.read(common))

    def mirabest_set(self, root: Path, merge: str) -> Labelled:
        """MiraBest (the ``dataset`` config's subset, the central ``bootstrap.mirabest_crop`` pixels), resized
        so that a pixel spans the arcseconds of a pixel of the models' probe inputs (``pixel_scale ×
        window_size / resize`` of the pool's windows); grouped by sky position (36″ cells) where ``labels.csv`` gives one. Its common set:
        ``bootstrap.common_windows`` of its images at random (all of them when there are fewer)."""
        crop = "null" if self.mirabest_crop is None else self.mirabest_crop
        cfg = self.cfg("evaluate", "dataset=mirabest", f"dataset.root={root}", f"dataset.center_crop={crop}")
        images = instantiate(cfg.dataset).load()
        merged = self.store.resolve(merge, stage="merge").artifact("merged.h5")
        index = read_index(merged, ["cutout_id", "size", "mosaic"])
        window = int(np.median(index.columns["size"]))
        arcsec = (
            float(np.median(index.mosaics["pixel_scale"]))
            * window
            / int(self.cfg("extract").resize or window)
        )
        side = images.images.shape[-1]
        resize = round(side * self.mirabest_arcsec / arcsec)
        log.info(
            "MiraBest: %d px at %.2f″ → %d px at %.2f″ (the probe inputs')",
            side,
            self.mirabest_arcsec,
            resize,
            arcsec,
        )
        n = len(images.images)
        common = np.sort(np.random.default_rng(0).choice(n, size=min(self.common_windows, n), replace=False))
        return Labelled(
            images.images,
            images.labels,
            mirabest_groups(root, images.names),
            images.images[common],
            resize=resize,
            split=images.split,
        )

    def measure(self, runs: BootstrapRuns, mirabest: Path | None = None) -> Measurement:
        """Score the loop's runs (see the module docstring); ``mirabest`` adds the MiraBest probes."""
        folds = int(self.linear_probe.folds)
        heldout = self.labelled_sky(runs.probe_merge)
        pool = self.labelled_sky(runs.merge)
        mira = None if mirabest is None else self.mirabest_set(mirabest, runs.merge)
        features, mirabest_baselines, gap = self._features(runs, heldout, mira, folds)
        scores: dict[tuple[str, str, str, str], tuple[list[float], list[float]]] = {}
        for method, seed, _ in self.plan():
            log.info("probing the %s models of seed %d", method, seed)
            models = {m.arm: m for m in runs.models if m.method == method and m.seed == seed}
            self._score_seed(models, heldout, pool, mira, folds, scores, method)
        return Measurement(
            features=features,
            gap_bn=gap,
            enrichment=self._enrichment(runs),
            scores=scores,
            mirabest=mirabest_baselines,
            reference=self.reference,
        )

    def _score_seed(
        self,
        models: dict[str, Model],
        heldout: Labelled,
        pool: Labelled,
        mira: Labelled | None,
        folds: int,
        scores: dict[tuple[str, str, str, str], tuple[list[float], list[float]]],
        method: str,
    ) -> None:
        embedded = {
            (arm, bn): {
                probe: self.embed(
                    data.windows, m.run_id, data.common if bn == "common" else None, resize=data.resize
                )
                for probe, data in (("heldout_sky", heldout), ("pool", pool), ("mirabest", mira))
                if data is not None
            }
            for arm, m in models.items()
            for bn in BN_MODES
        }
        seen = {arm: self.sources(m.merge, m.cutout_ids) for arm, m in models.items()}

        def knn(x: np.ndarray, data: Labelled, rows: np.ndarray | slice = slice(None)) -> float:
            return grouped_knn_balanced_accuracy(x[rows], data.labels[rows], data.groups[rows], folds=folds)

        # Each model's scores on the probes every pair shares, computed once.
        alone: dict[tuple[str, str], dict[str, float]] = {}
        for (arm, bn), x in embedded.items():
            alone[arm, bn] = {"heldout_sky": knn(x["heldout_sky"], heldout)}
            if mira is not None:
                for name, value in self.mirabest_probe(x["mirabest"], mira, folds).items():
                    alone[arm, bn][f"mirabest_{name}"] = value
        ref = self.reference
        for arm in models:
            if arm == ref:
                continue
            # The pool probe without every source either compared model has seen.
            unseen = ~np.isin(pool.groups, np.concatenate([seen[arm], seen[ref]]))
            for bn in BN_MODES:
                pairs = {name: (alone[arm, bn][name], alone[ref, bn][name]) for name in alone[arm, bn]}
                pairs["pool_excluded"] = (
                    knn(embedded[arm, bn]["pool"], pool, unseen),
                    knn(embedded[ref, bn]["pool"], pool, unseen),
                )
                for name, (a, r) in pairs.items():
                    mine, theirs = scores.setdefault((arm, method, name, bn), ([], []))
                    mine.append(a)
                    theirs.append(r)

    def mirabest_probe(self, x: np.ndarray, data: Labelled, folds: int, seed: int = 0) -> dict[str, float]:
        """Linear-probe accuracy on MiraBest: the published split and grouped ``folds``-fold CV."""
        probe = self.linear_probe
        classify = logistic_classifier(list(probe.cs), int(probe.inner_folds), int(probe.max_iter), seed=seed)
        result = evaluate_probe(x, data.labels, classify, folds, data.split, seed, data.groups)
        return {"split": float(result.split_accuracy), "cv": float(np.mean(result.accuracy))}

    def _features(
        self, runs: BootstrapRuns, heldout: Labelled, mira: Labelled | None, folds: int
    ) -> tuple[dict[str, list[float]], dict[tuple[str, str], list[float]], PairedDifference]:
        """The bootstrap model against random weights and radio statistics on the held-out sky (and on
        MiraBest), per seed: the kNN's fold assignment and the random weights."""
        per_seed: dict[str, list[float]] = {}
        mirabest: dict[tuple[str, str], list[float]] = {}
        stats = radio_statistics(heldout.windows)
        mira_stats = None if mira is None else radio_statistics(mira.windows)
        for seed in self.seeds:
            representations = {
                "knn_ssl": (runs.bootstrap_model, True),
                "knn_ssl_own": (runs.bootstrap_model, False),
                "knn_random_bn": (None, True),
                "knn_random_init": (None, False),
            }
            for name, (model, common) in representations.items():
                x = self.embed(heldout.windows, model, heldout.common if common else None, seed=seed)
                per_seed.setdefault(name, []).append(
                    grouped_knn_balanced_accuracy(x, heldout.labels, heldout.groups, folds=folds, seed=seed)
                )
                if mira is not None and seed == self.seeds[0]:
                    y = self.embed(
                        mira.windows, model, mira.common if common else None, seed=seed, resize=mira.resize
                    )
                    for probe, value in self.mirabest_probe(y, mira, folds).items():
                        mirabest[name, f"mirabest_{probe}"] = [value]
            per_seed.setdefault("knn_stats", []).append(
                grouped_knn_balanced_accuracy(stats, heldout.labels, heldout.groups, folds=folds, seed=seed)
            )
        if mira_stats is not None:
            for probe, value in self.mirabest_probe(mira_stats, mira, folds).items():
                mirabest["knn_stats", f"mirabest_{probe}"] = [value]
        gap = paired_difference(per_seed["knn_ssl"], per_seed["knn_random_bn"])
        return per_seed, mirabest, gap

    def _enrichment(self, runs: BootstrapRuns) -> dict[str, Any]:
        """Rare-class share of the balanced subsample over the pool's per clustering seed, distinct rare
        sources of the balanced and random subsamples per seed, and their ratio of empty windows."""
        empty = str(self.cfg("evaluate").catalogue.empty_label)
        ids, labels, groups = self.truth(runs.merge)
        codes = label_codes(labels)  # factorised once for the enrichments below
        rare = rare_classes(codes, 0.01, (empty,))
        where = f"merge run {runs.merge}"
        store = self.store

        def rows(sample: str) -> np.ndarray:
            chosen, _ = read_subsample(store.resolve(sample, stage="sample").artifact("subsample.h5"))
            return positions(ids, chosen, where)

        balanced_curate = self.arms["balanced"].curate if "balanced" in self.arms else ()
        ratios = []
        for seed, clusters in runs.clusterings.items():
            sample = self.sample(runs.features, balanced_curate, seed, clusters)["run_id"]
            ratios.append(enrichment(codes, rows(sample), rows(sample), rare, empty).ratio_pool)
        out: dict[str, Any] = {"ratio_pool": ratios, "rare": list(rare)}
        if "balanced" in runs.subsamples:
            empties = []
            for arm in ("balanced", self.reference):
                out[f"rare_sources_{arm}"] = [
                    len(np.unique(groups[r][np.isin(labels[r], rare)]))
                    for r in map(rows, runs.subsamples[arm].values())
                ]
            for seed, sample in runs.subsamples["balanced"].items():
                e = enrichment(codes, rows(sample), rows(runs.subsamples[self.reference][seed]), rare, empty)
                empties.append(e.empty_ratio)
            out["empty_ratio"] = empties
        return out


def _train(cfg: DictConfig) -> str:
    """One training of :meth:`BootstrapLoop.train_all` in a submitted job: its train run's ID."""
    register_resolvers()
    return train_task.run(cfg)["run_id"]


def recalibrate_batch_norm(
    network: torch.nn.Module,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    windows: np.ndarray,
    batch: int = 512,
) -> None:
    """Replace the batch-norm running statistics of ``network`` by those of raw ``windows`` (cumulative
    averages over batches of ``batch``), parameters untouched; leaves it in eval mode."""
    x = torch.from_numpy(np.asarray(windows, dtype=np.float32))
    update_bn((preprocess(x[i : i + batch]) for i in range(0, len(x), batch)), network)
    network.eval()


def mirabest_groups(root: Path, names: np.ndarray) -> np.ndarray:
    """A group per MiraBest source for grouped folds: the 36″ sky cell of ``labels.csv``'s ``ra_deg`` and
    ``dec_deg``, or each image its own group when the folder gives no positions."""
    table = Path(root) / "labels.csv"
    position = {}
    if table.is_file():
        with open(table, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("ra_deg") and row.get("dec_deg"):
                    position[row["file"]] = f"{float(row['ra_deg']):.2f}{float(row['dec_deg']):+.2f}"
    cells = np.array([position.get(str(n), str(n)) for n in names])
    return np.unique(cells, return_inverse=True)[1]


def _mean_min_max(values: Sequence[float]) -> tuple[float, float, float]:
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.min()), float(x.max())


def result_lines(measurement: Measurement) -> list[str]:
    """The ``RESULT`` lines of ``benchmarks/bench_science.py``."""
    f, g, e = measurement.features, measurement.gap_bn, measurement.enrichment
    mean = {name: float(np.mean(v)) for name, v in f.items()}
    lines = [
        f"RESULT features knn_ssl={mean['knn_ssl']:.4f} knn_random_bn={mean['knn_random_bn']:.4f} "
        f"knn_random_init={mean['knn_random_init']:.4f} knn_stats={mean['knn_stats']:.4f} "
        f"gap_bn={g.mean:+.4f} ci_low={g.low:+.4f} ci_high={g.high:+.4f} seeds={g.n} "
        f"knn_ssl_own={mean['knn_ssl_own']:.4f} probe=heldout_sky"
    ]
    ratio, low, high = _mean_min_max(e["ratio_pool"])
    line = (
        f"RESULT enrichment ratio_pool={ratio:.3f} ratio_pool_min={low:.3f} ratio_pool_max={high:.3f} "
        f"clustering_seeds={len(e['ratio_pool'])}"
    )
    if "empty_ratio" in e:
        line += (
            f" rare_sources_balanced={np.mean(e['rare_sources_balanced']):.1f} "
            f"rare_sources_random={np.mean(e[f'rare_sources_{measurement.reference}']):.1f} "
            f"empty_ratio={np.mean(e['empty_ratio']):.3f}"
        )
    lines.append(line)
    for (name, probe), values in sorted(measurement.mirabest.items()):
        lines.append(
            f"RESULT mirabest representation={name.removeprefix('knn_')} probe={probe} accuracy={values[0]:.4f}"
        )
    order = {p: i for i, p in enumerate(PROBES)}
    for (arm, method, probe, bn), d in sorted(
        measurement.pretraining().items(), key=lambda kv: (kv[0][1], kv[0][0], order[kv[0][2]], kv[0][3])
    ):
        a, r = measurement.scores[arm, method, probe, bn]
        lines.append(
            f"RESULT pretraining arm={arm} vs={measurement.reference} ssl={method} probe={probe} "
            f"diff={d.mean:+.4f} ci_low={d.low:+.4f} ci_high={d.high:+.4f} seeds={d.n} bn={bn} "
            f"arm_mean={seed_spread(a).mean:.4f} vs_mean={seed_spread(r).mean:.4f}"
        )
    return lines


def markdown_tables(measurement: Measurement, recipe: str) -> str:
    """The study's two tables in Markdown: arms × probes for the ``recipe`` method, and the other
    methods' arms × probes; each cell the paired difference to the reference arm [95 % interval] with
    batch-norm statistics of the probe's common set (``bn=own`` in brackets after it)."""
    diffs = measurement.pretraining()
    present = [p for p in PROBES if any(key[2] == p for key in diffs)]

    def cell(arm: str, method: str, probe: str) -> str:
        common, own = diffs.get((arm, method, probe, "common")), diffs.get((arm, method, probe, "own"))
        if common is None or own is None:
            return "–"
        return f"{common.mean:+.3f} [{common.low:+.3f}, {common.high:+.3f}] (own: {own.mean:+.3f})"

    head = "| | " + " | ".join(present) + " |\n|" + " --- |" * (len(present) + 1) + "\n"
    rows = sorted({(key[1], key[0]) for key in diffs})
    recipe_rows = [
        f"| {arm} | " + " | ".join(cell(arm, recipe, p) for p in present) + " |"
        for m, arm in rows
        if m == recipe
    ]
    method_rows = [
        f"| {arm}, {m} | " + " | ".join(cell(arm, m, p) for p in present) + " |"
        for m, arm in rows
        if m != recipe
    ]
    seeds = {m: next(d.n for key, d in diffs.items() if key[1] == m) for m, _ in rows}
    ref = measurement.reference
    return (
        f"Arms − {ref}, {recipe}, {seeds[recipe]} seeds:\n\n" + head + "\n".join(recipe_rows) + "\n\n"
        f"{', '.join(sorted({m for m, _ in rows} - {recipe}))} − {ref}, "
        f"{min(seeds[m] for m, _ in rows)} seeds:\n\n" + head + "\n".join(method_rows) + "\n"
    )


def summary(measurement: Measurement) -> dict[str, Any]:
    """Everything measured, JSON-ready (per-seed scores)."""
    return {
        "features": measurement.features,
        "gap_bn": measurement.gap_bn.as_dict(),
        "enrichment": measurement.enrichment,
        "mirabest_baselines": {f"{n}/{p}": v for (n, p), v in measurement.mirabest.items()},
        "pretraining": {
            "/".join(key): {
                **d.as_dict(),
                "arm": measurement.scores[key][0],
                "vs": measurement.scores[key][1],
            }
            for key, d in measurement.pretraining().items()
        },
    }
