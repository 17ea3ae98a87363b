"""``train.py``: self-supervised pretraining on a subsample (or on all / a random part of a merge run).

The run directory holds Lightning's checkpoints (``checkpoints/last.ckpt`` and one every N steps), the
exported ``backbone.pt`` (loadable with ``backbone=run backbone.model_id=<run ID>``) and, with
``data.cache=true``, the pixel cache. Running the same command again resumes from ``last.ckpt``.

Under DDP every rank runs this task. Rank 0 owns the run (store lease, manifest, trackers, export); the
other ranks train in rank 0's run directory without touching the store, since rank 0 holds the run's lock
for the whole fit.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from radio_curation.backbones import build_backbone
from radio_curation.backbones.export import save_backbone
from radio_curation.curation.clusters import read_subsample
from radio_curation.cutouts.index import read_index
from radio_curation.data.datamodule import RestoreLoaderPosition, TrainingWindows
from radio_curation.data.precision import check_first_batch, describe
from radio_curation.data.preprocess import Preprocess
from radio_curation.distributed import cluster_plugins, launched_rank, lightning_outside_srun
from radio_curation.errors import RadioCurationError, instantiate_user
from radio_curation.runs.resolvers import expected_run_dir
from radio_curation.runs.store import RunRecord, RunStore
from radio_curation.ssl.base import SSLModule
from radio_curation.ssl.checkpoint_io import AtomicCheckpointIO
from radio_curation.ssl.monitor import OnlineKNN, TrackerLogger
from radio_curation.tasks.stage import Run, check_precision, run_stage

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = f"{CHECKPOINT_DIR}/last.ckpt"


@dataclass(frozen=True)
class TrainingSource:
    """The windows a run trains on.

    Attributes
    ----------
    record
        The sample run (``subsample_id``) or merge run (``source_id``) they come from.
    merged
        The ``merged.h5`` the windows are read from.
    cutout_ids
        The windows, ascending.
    window_size
        Their common side in pixels.
    """

    record: RunRecord
    merged: Path
    cutout_ids: np.ndarray
    window_size: int


def _merge_ancestor(store: RunStore, record: RunRecord) -> RunRecord:
    """The merge run a sample run descends from (through its clusters and features runs)."""
    queue, seen = [record], set()
    while queue:
        current = queue.pop(0)
        if current.stage == "merge":
            return current
        for parent in current.parents:
            if parent not in seen:
                seen.add(parent)
                queue.append(store.resolve(parent))
    raise RadioCurationError(
        f"run {record.run_id} does not descend from a merge run, so its windows cannot be read; "
        f"check its lineage with `radio-curation runs lineage {record.run_id}`."
    )


def _select_size(
    cutout_ids: np.ndarray, index: dict[str, np.ndarray], window_size: int | None, what: str
) -> tuple[np.ndarray, int]:
    sizes = index["size"][np.searchsorted(index["cutout_id"], cutout_ids)]
    present = sorted(int(s) for s in np.unique(sizes))
    if window_size is None:
        if len(present) != 1:
            raise RadioCurationError(
                f"{what} has window sizes {present} px; choose one with data.window_size=<size>."
            )
        return cutout_ids, present[0]
    keep = sizes == int(window_size)
    if not keep.any():
        raise RadioCurationError(f"data.window_size={window_size}: {what} has only {present} px windows.")
    return cutout_ids[keep], int(window_size)


def resolve_source(cfg: DictConfig) -> TrainingSource:
    """Find the windows to train on from ``subsample_id`` or ``source_id`` (+ ``random_subset``).

    Raises
    ------
    RadioCurationError
        Neither or both IDs given, an ID of the wrong stage, ``random_subset`` with ``subsample_id`` or
        larger than the source, a ``data.window_size`` the source does not have.
    """
    store = RunStore.of(cfg)
    subsample_id, source_id, subset = cfg.subsample_id, cfg.source_id, cfg.random_subset
    if (subsample_id is None) == (source_id is None):
        raise RadioCurationError(
            "give exactly one of subsample_id=<sample run ID> (a curated subsample) or source_id=<merge run "
            f"ID> (all its cutouts, or random_subset=N of them); got subsample_id={subsample_id}, "
            f"source_id={source_id}."
        )
    if subsample_id is not None:
        if subset is not None:
            raise RadioCurationError(
                "random_subset draws from all cutouts of a merge run: use it with source_id=<merge run ID>, "
                "not with subsample_id."
            )
        record = store.resolve(str(subsample_id), stage="sample")
        ids, _ = read_subsample(record.artifact("subsample.h5"))
        merge = _merge_ancestor(store, record)
        what = f"subsample {record.run_id}"
    else:
        record = merge = store.resolve(str(source_id), stage="merge")
        ids = None
        what = f"merge run {record.run_id}"
    merged = merge.artifact("merged.h5")
    index = read_index(merged, ["cutout_id", "size"]).columns
    ids = np.sort(np.asarray(index["cutout_id"] if ids is None else ids, dtype=np.int64))
    ids, size = _select_size(ids, index, cfg.data.window_size, what)
    if subset is not None:
        if not 0 < int(subset) <= len(ids):
            raise RadioCurationError(
                f"random_subset={subset} must be between 1 and the {len(ids)} windows of {what}."
            )
        rng = np.random.default_rng(int(cfg.seed))
        ids = np.sort(rng.choice(ids, size=int(subset), replace=False))
    return TrainingSource(record=record, merged=merged, cutout_ids=ids, window_size=size)


def _build_model(cfg: DictConfig) -> SSLModule:
    backbone = build_backbone(cfg.backbone)
    make_views = instantiate(cfg.augmentation)
    augmentation = make_views(normalization=instantiate_user(cfg.normalization), in_chans=backbone.in_chans)
    method = instantiate(cfg.ssl, _convert_="all")
    return method(
        backbone=backbone,
        augmentation=augmentation,
        rankme_samples=cfg.monitor.rankme_samples,
        seed=int(cfg.seed),
    )


def _knn_monitor(cfg: DictConfig, model: SSLModule) -> OnlineKNN | None:
    monitor = cfg.monitor
    if monitor.dataset is None:
        return None
    labelled = instantiate_user(monitor.dataset).load()
    train_mask = None if labelled.split is None else torch.from_numpy(labelled.split == "train")
    preprocess = Preprocess(
        instantiate_user(cfg.normalization), model.backbone.in_chans, resize=model.augmentation.global_size
    )
    return OnlineKNN(
        torch.from_numpy(labelled.images),
        torch.from_numpy(labelled.labels),
        preprocess,
        train_mask=train_mask,
        k=monitor.k,
        temperature=monitor.temperature,
        every_n_epochs=monitor.every_n_epochs,
    )


def _callbacks(cfg: DictConfig, run_dir: Path, knn: OnlineKNN | None) -> list[pl.Callback]:
    callbacks: list[pl.Callback] = []
    for name, node in (cfg.callbacks or {}).items():
        if node is None:
            continue
        if name == "checkpoint":
            callbacks.append(instantiate(node, dirpath=str(run_dir / CHECKPOINT_DIR)))
        else:
            callbacks.append(instantiate(node))
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        raise RadioCurationError("callbacks.checkpoint is needed: training resumes from its last.ckpt.")
    if knn is not None:
        callbacks.append(knn)
    callbacks.append(RestoreLoaderPosition())
    return callbacks


def fit(
    cfg: DictConfig, source: TrainingSource, run_dir: Path, run: Run | None = None
) -> tuple[pl.Trainer, SSLModule]:
    """Train in ``run_dir``, resuming from its ``last.ckpt`` if there is one.

    Parameters
    ----------
    cfg
        The composed ``train`` config.
    source
        The windows to train on.
    run_dir
        The run directory (checkpoints, cache).
    run
        Rank 0's run handle (trackers); None on the other ranks.

    Returns
    -------
    tuple
        The trainer and the trained module.
    """
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = _build_model(cfg)
    data = cfg.data
    datamodule = TrainingWindows(
        source.merged,
        source.cutout_ids,
        batch_size=data.batch_size,
        num_workers=data.num_workers,
        cache_path=run_dir / "cache" / "pixels.h5" if data.cache else None,
        nan_fill=data.nan_fill,
        pin_memory=data.pin_memory,
        prefetch_factor=data.prefetch_factor,
        resident_gb=data.resident_gb,
        seed=int(cfg.seed),
    )
    knn = _knn_monitor(cfg, model) if run is not None else None  # evaluated on rank 0 only
    logger = TrackerLogger(run.tracker, run.run_id) if run is not None else False
    with lightning_outside_srun():
        trainer: pl.Trainer = instantiate(
            cfg.trainer,
            callbacks=_callbacks(cfg, run_dir, knn),
            logger=logger,
            plugins=[AtomicCheckpointIO(), *cluster_plugins()],
            default_root_dir=str(run_dir),
        )
    on_cpu = trainer.strategy.root_device.type == "cpu"
    if on_cpu and cfg.trainer.sync_batchnorm:
        raise RadioCurationError(
            "trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm has no CPU implementation); "
            "set trainer.sync_batchnorm=false to train with DDP on CPUs."
        )
    if data.augment_on not in ("auto", "device", "workers"):
        raise RadioCurationError(f"data.augment_on={data.augment_on!r}: choose auto, device or workers.")
    if data.augment_on == "workers" or (data.augment_on == "auto" and on_cpu):
        datamodule.augmentation = model.augmentation
    last = run_dir / LAST_CHECKPOINT
    ckpt_path = str(last) if last.exists() else None
    with lightning_outside_srun(), warnings.catch_warnings():
        if ckpt_path is not None:
            log.info("resuming from %s", ckpt_path)
            # Resuming writes into the checkpoint directory of the interrupted attempt on purpose.
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    trainer.save_checkpoint(last)
    return trainer, model


def _metrics(trainer: pl.Trainer) -> dict[str, float]:
    names = {
        "train/loss_epoch": "loss",
        "train/embedding_std": "embedding_std",
        "train/rankme": "rankme",
        "train/images_per_sec": "images_per_sec",
        "monitor/knn_top1": "knn_top1",
    }
    metrics = trainer.callback_metrics
    return {short: float(metrics[name]) for name, short in names.items() if name in metrics}


def _work(run: Run, source: TrainingSource) -> None:
    cfg = run.cfg
    resumed_at = None
    last = run.dir / LAST_CHECKPOINT
    if last.exists():
        resumed_at = int(torch.load(last, map_location="cpu", weights_only=False, mmap=True)["global_step"])
    with run.timer("fit"):
        trainer, model = fit(cfg, source, run.dir, run)
    run.register(LAST_CHECKPOINT)
    with run.artifact("backbone.pt") as tmp:
        save_backbone(
            model.export_backbone(),
            OmegaConf.to_container(cfg.backbone, resolve=True),
            tmp,
            preprocessing={
                # The model saw views of augmentation.global_size pixels, normalised per view.
                "input_size": int(cfg.augmentation.global_size),
                "normalization": OmegaConf.to_container(cfg.normalization, resolve=True),
                "in_chans": int(model.backbone.in_chans),
            },
        )
    run.counts.update(
        {
            "images": len(source.cutout_ids),
            "steps": int(trainer.global_step),
            "epochs": int(trainer.current_epoch),
        }
    )
    run.metrics.update(_metrics(trainer))
    run.info.update(
        {
            "source": source.record.run_id,
            "source_stage": source.record.stage,
            "window_size": source.window_size,
            "global_batch_size": int(cfg.data.batch_size)
            * trainer.world_size
            * trainer.accumulate_grad_batches,
            "world_size": trainer.world_size,
            "resumed_from_step": resumed_at,
        }
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Pretrain the ``ssl`` method on the windows of ``subsample_id`` or ``source_id``; see the module doc."""
    check_precision(cfg.trainer.precision, "trainer.precision")
    source = resolve_source(cfg)
    check_first_batch(
        source.merged,
        source.cutout_ids,
        int(cfg.data.batch_size),
        Preprocess(instantiate_user(cfg.normalization), 1, int(cfg.augmentation.global_size)),
        cfg.trainer.precision,
        describe(cfg),
        "trainer.precision",
    )
    if launched_rank() > 0:
        run_dir = expected_run_dir(cfg)
        trainer, _ = fit(cfg, source, run_dir)
        return {
            "run_id": run_dir.name,
            "run_dir": str(run_dir),
            "stage": cfg.stage.name,
            "rank": trainer.global_rank,
        }
    return run_stage(
        cfg, cfg.stage, lambda handle: _work(handle, source), resumable=[f"{CHECKPOINT_DIR}/*.ckpt"]
    )
