"""``curate.py``: the cluster stage (hierarchical k-means of a features run), then the sample stage."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from radio_curation.curation.clusters import Hierarchy, write_subsample
from radio_curation.curation.conditioning import (
    FeatureConditioning,
    load_conditioning,
    normalize_rows,
    save_conditioning,
)
from radio_curation.curation.kmeans import (
    ClusterLevel,
    HierarchicalKMeans,
    imbalance_factor,
    load_level,
    save_level,
)
from radio_curation.curation.loading import (
    LoadedFeatures,
    available_memory,
    check_memory,
    clustering_memory,
    load_features,
    stored_dtype,
)
from radio_curation.curation.plots import plot_cluster_sizes, plot_objective, plot_sampling
from radio_curation.curation.samplers import ClusteredPool, Compose, cluster_counts, share_of_largest
from radio_curation.curation.sharded import Collective
from radio_curation.errors import EmptyResultError, RadioCurationError
from radio_curation.features.matrix import FeatureFile
from radio_curation.runs.settings import Built, PositiveFloat, PositiveInt
from radio_curation.runs.stage import Inputs, Run, Stage, run_stage
from radio_curation.runs.store import RunRecord

log = logging.getLogger(__name__)

LEVELS_DIR = "levels"
CONDITIONING_FILE = "conditioning.h5"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Cluster ``features_id`` (unless ``clusters_id`` names a clustering), then sample from the clusters.

    Prints ``run_id=<cluster run>`` (when it clusters) and then ``run_id=<sample run>`` last.

    Returns
    -------
    dict
        The sample run's result (see :func:`radio_curation.runs.stage.run_stage`), with ``clusters_id``.
    """
    SAMPLE.values(cfg)  # the sampling's settings are checked before clustering, which may take long
    made = {}
    if cfg.clusters_id is None:
        if cfg.features_id is None:
            raise RadioCurationError(
                "curate.py needs features_id=<features run ID> (to cluster it) or clusters_id=<cluster run "
                "ID>; list them with `radio-curation runs list --stage features`"
            )
        clustered = run_stage(cfg, CLUSTER)
        if clustered.get("rank", 0) > 0:
            # The other ranks of a distributed clustering; rank 0 samples.
            return clustered
        made["clusters_id"] = clustered["run_id"]
    result = run_stage(cfg, SAMPLE, parents=made)
    return {**result, "clusters_id": result["info"]["clusters_id"]}


def _check_sample(inputs: Inputs) -> None:
    clusters = inputs.parent("clusters_id")
    if inputs.cfg.features_id is not None:
        features = inputs.store.resolve(str(inputs.cfg.features_id), stage="features")
        if features.run_id not in clusters.parents:
            raise RadioCurationError(
                f"clustering {clusters.run_id} was made from {clusters.parents}, not from features run "
                f"{features.run_id}; drop features_id or clusters_id"
            )


def _read_features(record: RunRecord, **kwargs: Any) -> LoadedFeatures:
    with FeatureFile(record.artifact("features.h5")) as source:
        return load_features(source, label=f"features run {record.run_id}", **kwargs)


def _read_shard(record: RunRecord, comm: Collective, drop_nonfinite: bool) -> LoadedFeatures:
    """This rank's contiguous share of the features' rows (all of them in one process).

    Every rank drops its non-finite rows and they are counted over all ranks, so that without
    ``drop_nonfinite`` all ranks stop with the same error rather than one leaving the others waiting.
    """
    if comm.world_size == 1:
        return _read_features(record, drop_nonfinite=drop_nonfinite)
    path = record.artifact("features.h5")
    n = FeatureFile(path).n
    rows = np.arange(n * comm.rank // comm.world_size, n * (comm.rank + 1) // comm.world_size)
    with FeatureFile(path, rows=rows) as source:
        mine = load_features(source, label=f"features run {record.run_id}", drop_nonfinite=True)
    n_bad = int(comm.sum(np.array([mine.n_nonfinite]))[0])
    bad_ids = np.concatenate(comm.gather(np.asarray(mine.nonfinite_ids, dtype=np.int64)))[:10].tolist()
    if n_bad and not drop_nonfinite:
        raise RadioCurationError(
            f"features run {record.run_id} have {n_bad} rows with NaN or Inf values (cutout IDs {bad_ids}"
            f"{' ...' if n_bad > len(bad_ids) else ''}); rerun with drop_nonfinite=true to leave them out"
        )
    return LoadedFeatures(mine.x, mine.cutout_id, n_bad, bad_ids)


def _finished_levels(levels_dir: Path, n_levels: int, comm: Collective) -> tuple[list[ClusterLevel], Any]:
    """The levels a previous attempt saved, as rank 0 sees them (every rank reads the same files), and
    level 1's cutout IDs."""
    done: list[ClusterLevel] = []
    cutout_id = None
    for level in range(1, n_levels + 1):
        path = levels_dir / f"level_{level}.h5"
        if not path.exists():
            break
        finished, ids = load_level(path)
        done.append(finished)
        if level == 1:
            cutout_id = ids
    agreed = int(comm.sum(np.array([len(done) if comm.rank == 0 else 0]))[0])
    if len(done) < agreed:
        raise RadioCurationError(
            f"rank {comm.rank} sees {len(done)} finished levels in {levels_dir}, rank 0 sees {agreed}: "
            "the ranks must share the run directory"
        )
    return done[:agreed], cutout_id if agreed else None


def _log_plot(run: Run, name: str, draw: Callable[..., None], *args: Any) -> None:
    with run.artifact(name) as tmp, open(tmp, "wb") as fh:
        draw(*args, fh)
    run.tracker.log_image(run.dir / name)


def cluster(run: Run) -> None:
    """Work of the cluster stage: features conditioned (the fit saved under ``levels/``), levels saved one
    by one under ``levels/``, then ``clusters.h5``."""
    cfg = run.cfg
    conditioning: FeatureConditioning = instantiate(cfg.conditioning)
    algo: HierarchicalKMeans = instantiate(cfg.clustering)
    comm = algo.backend.comm
    if run.rank > 0 and comm.world_size == 1:
        raise RadioCurationError(
            f"clustering/backend={algo.backend.name} runs in one process, but this is rank {run.rank} of a "
            "multi-process launch: use clustering/backend=distributed, or launch a single process"
        )
    features_run = run.parent("features_id")
    levels_dir = run.dir / LEVELS_DIR
    levels_dir.mkdir(exist_ok=True)
    done, cutout_id = _finished_levels(levels_dir, algo.n_levels, comm)
    if done:
        log.info("resuming clustering %s after level %d", run.run_id, len(done))
        run.info["resumed_after_level"] = len(done)
    x = None
    if done:
        fit = load_conditioning(levels_dir / CONDITIONING_FILE)
    else:
        _check_cluster_memory(run, features_run, conditioning, algo)
        with run.timer("read_features"):
            loaded = _read_shard(features_run, comm, bool(cfg.drop_nonfinite))
        cutout_id = (
            loaded.cutout_id if comm.world_size == 1 else np.concatenate(comm.gather(loaded.cutout_id))
        )
        run.counts["nonfinite_rows_dropped"] = loaded.n_nonfinite
        if loaded.n_nonfinite:
            run.info["nonfinite_cutout_ids"] = loaded.nonfinite_ids
        with run.timer("conditioning"):
            fit = conditioning.fit(loaded.x, comm)
            x = fit.transform(loaded.x, inplace=True)
            del loaded
            if algo.spherical and not fit.normalize:
                normalize_rows(x)
        if run.rank == 0:
            save_conditioning(levels_dir / CONDITIONING_FILE, fit)
    run.info["conditioning"] = fit.describe()
    run.counts["points"] = len(cutout_id)
    run.info["backend"] = algo.backend.describe()
    run.info["init"] = [algo.level_init(level, len(cutout_id)) for level in range(1, algo.n_levels + 1)]
    run.info["max_points_per_centroid"] = algo.max_points_per_centroid
    started = time.perf_counter()

    def on_level(level: int, result: ClusterLevel) -> None:
        nonlocal started
        if run.rank > 0:
            return
        save_level(levels_dir / f"level_{level}.h5", result, cutout_id if level == 1 else None)
        run.timings[f"level_{level}"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        run.save("running")

    levels = algo.fit(x, seed=int(cfg.seed), done=done, on_level=on_level)
    del x
    if run.rank > 0:
        return
    hierarchy = Hierarchy(cutout_id, levels, algo.metric, fit)
    with run.artifact("clusters.h5") as tmp:
        hierarchy.save(tmp, attrs={"features_id": features_run.run_id, "backend": algo.backend.name})
    run.metrics["levels"] = {}
    for i, level in enumerate(levels, start=1):
        sizes = level.sizes
        run.metrics["levels"][f"level_{i}"] = {
            "k": level.k,
            "imbalance_factor": round(imbalance_factor(sizes), 4),
            "empty_clusters": int((sizes == 0).sum()),
            "size_min": int(sizes.min()),
            "size_median": float(np.median(sizes)),
            "size_max": int(sizes.max()),
            "objective_first": float(level.objective[0]),
            "objective_last": float(level.objective[-1]),
            "objective_after_resampling": float(level.resampling_objective[-1]),
            "training_points": level.n_train,
            "assignment_seconds": round(level.search_seconds, 3),
        }
        for step, value in enumerate(level.objective, start=1):
            run.tracker.log_metrics({f"level_{i}.objective": float(value)}, step=step)
    _log_plot(run, "cluster_sizes.png", plot_cluster_sizes, levels)
    _log_plot(run, "objective.png", plot_objective, levels)


def _check_cluster_memory(
    run: Run, features_run: RunRecord, conditioning: FeatureConditioning, algo: HierarchicalKMeans
) -> None:
    """Stop before reading the features when the clustering cannot fit in memory, naming what would.

    Under clustering/backend=distributed each rank holds its share of the rows (k-means++'s rows whole)."""
    with FeatureFile(features_run.artifact("features.h5")) as source:
        n, dim, dtype = source.n, source.dim, stored_dtype(source)
    k, per_centroid = algo.n_clusters[0], algo.max_points_per_centroid
    kmeanspp_rows = 0
    if algo.level_init(1, n) == "kmeans++":
        kmeanspp_rows = n if per_centroid is None else min(n, k * per_centroid)
    n_rank = -(-n // algo.backend.comm.world_size)
    parts = clustering_memory(
        n_rank, dim, dtype, whiten_dim=conditioning.whiten_dim, kmeanspp_rows=kmeanspp_rows
    )
    run.info["memory_estimate_gb"] = round(parts["peak"] / 1e9, 6)
    hints = []
    if dtype != np.float16:
        hints.append(_FLOAT16_HINT)
    if kmeanspp_rows:
        hints.append(
            f"start level 1 with k-means‖ or random rows (clustering.init=kmeans_parallel or random, or "
            f"init=auto with clustering.kmeanspp_max_work below {kmeanspp_rows * k})"
        )
        if per_centroid is None:
            hints.append("or bound k-means++'s rows with clustering.max_points_per_centroid")
    if conditioning.whiten_dim:
        hints.append("lower conditioning.whiten_dim")
    check_memory(parts, _memory_limit(run), f"clustering {n} x {dim} {dtype} features", [*hints, _LIMIT_HINT])


_LIMIT_HINT = "or set memory_limit_gb if more memory is free than the host reports"
_FLOAT16_HINT = "extract the features as float16 (extract.py features_dtype=float16 halves the matrix)"


def _memory_limit(run: Run) -> int:
    """Bytes the stage may use: ``memory_limit_gb``, or what the host reports available."""
    if run.cfg.memory_limit_gb is None:
        return available_memory()
    return int(float(run.cfg.memory_limit_gb) * 1e9)


def build_sampler(node: DictConfig) -> Compose:
    """The samplers of the ``sampler`` config node (``{name: sampler config}``), in order."""
    return Compose({str(name): instantiate(step) for name, step in node.items()})


def sample(run: Run) -> None:
    """Work of the sample stage: ``subsample.h5`` from the parent clustering."""
    cfg = run.cfg
    clusters_run = run.parent("clusters_id")
    run.info["clusters_id"] = clusters_run.run_id
    hierarchy = Hierarchy.load(clusters_run.artifact("clusters.h5"))

    def features() -> np.ndarray:
        features_run = run.ancestor(clusters_run, "features")
        with FeatureFile(features_run.artifact("features.h5")) as source:
            dim, dtype = source.dim, stored_dtype(source)
        projection = hierarchy.conditioning.projection
        whiten_dim = None if projection is None else int(projection.shape[1])
        parts = clustering_memory(hierarchy.n, dim, dtype, whiten_dim=whiten_dim, kmeanspp_rows=0)
        hints = [_FLOAT16_HINT] if dtype != np.float16 else []
        what = f"sampling from {hierarchy.n} x {dim} {dtype} features"
        check_memory(parts, _memory_limit(run), what, [*hints, _LIMIT_HINT])
        with run.timer("read_features"):
            loaded = _read_features(features_run, drop_nonfinite=True, keep_ids=hierarchy.cutout_id)
        # The samplers measure distances in the clustering's space, where its centroids live.
        return hierarchy.conditioning.transform(loaded.x, inplace=True)

    pool = ClusteredPool(hierarchy, features)
    sampler = build_sampler(cfg.sampler)
    target = None if cfg.target_size is None else int(cfg.target_size)
    with run.timer("sample"):
        rows, report = sampler(pool, target, int(cfg.seed))
    if len(rows) == 0:
        raise EmptyResultError(f"the samplers kept no window of the {pool.n} in the pool ({report})")
    with run.artifact("subsample.h5") as tmp:
        write_subsample(
            tmp,
            hierarchy.cutout_id[rows],
            pool.paths[rows],
            OmegaConf.to_container(cfg.sampler, resolve=True),
            target,
        )
    before = cluster_counts(hierarchy, pool.paths)
    after = cluster_counts(hierarchy, pool.paths[rows])
    run.counts["pool"] = pool.n
    run.counts["selected"] = len(rows)
    run.metrics["target_size"] = target
    run.metrics["achieved_size"] = len(rows)
    run.metrics["share_of_largest_clusters"] = {
        f"level_{i}": share_of_largest(b, a)
        for i, (b, a) in enumerate(zip(before, after, strict=True), start=1)
    }
    run.metrics["top_level_imbalance"] = round(imbalance_factor(after[-1]), 4)
    run.metrics["imbalance_factor"] = {
        f"level_{i}": {"before": round(imbalance_factor(b), 4), "after": round(imbalance_factor(a), 4)}
        for i, (b, a) in enumerate(zip(before, after, strict=True), start=1)
    }
    run.info["samplers"] = report
    _log_plot(run, "sampling.png", plot_sampling, before, after)


CLUSTER = Stage(
    name="cluster",
    work=cluster,
    parents={"features_id": "features"},
    settings={"conditioning": Built, "clustering": Built, "drop_nonfinite": bool, "seed": int},
    execution={
        "clustering.backend.device": Built,
        "clustering.backend.timeout_min": Built,
        "clustering.backend.max_gather_gb": Built,
        "memory_limit_gb": PositiveFloat | None,
    },
    resumable=(f"{LEVELS_DIR}/level_*.h5",),
    headline="metrics.levels.level_1.imbalance_factor",
    # clustering/backend=distributed shards the points over the ranks of torchrun or srun.
    distributed=True,
)

SAMPLE = Stage(
    name="sample",
    work=sample,
    parents={"clusters_id": "cluster"},
    # Without clusters_id, the parent is this config's clustering of features_id.
    derive_parents={"clusters_id": CLUSTER},
    settings={"sampler": Built, "target_size": PositiveInt | None, "seed": int},
    # Only checked against the clustering's own features run.
    execution={"features_id": str | None, "memory_limit_gb": PositiveFloat | None},
    check=_check_sample,
    headline="metrics.top_level_imbalance",
)
