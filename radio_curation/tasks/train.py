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
from typing import Annotated, Any

import numpy as np
import pytorch_lightning as pl
import torch
from annotated_types import Gt
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from radio_curation.backbones import build_backbone
from radio_curation.backbones.export import save_backbone
from radio_curation.curation.clusters import read_subsample
from radio_curation.cutouts.index import read_index
from radio_curation.data.datamodule import RestoreLoaderPosition
from radio_curation.data.precision import check_first_batch, describe
from radio_curation.data.preprocess import Preprocess
from radio_curation.data.training_data import TrainingData
from radio_curation.distributed import cluster_plugins, lightning_outside_srun
from radio_curation.errors import RadioCurationError, instantiate_user
from radio_curation.runs.settings import Built, PositiveInt
from radio_curation.runs.stage import Inputs, Run, Stage, run_stage
from radio_curation.runs.store import RunRecord
from radio_curation.ssl.base import SSLModule
from radio_curation.ssl.checkpoint_io import AtomicCheckpointIO
from radio_curation.ssl.monitor import OnlineKNN, TrackerLogger

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


def resolve_source(inputs: Inputs) -> TrainingSource:
    """Find the windows to train on from ``subsample_id`` or ``source_id`` (+ ``random_subset``).

    Raises
    ------
    RadioCurationError
        Neither or both IDs given, ``random_subset`` with ``subsample_id`` or larger than the source, a
        ``data.window_size`` the source does not have.
    """
    cfg = inputs.cfg
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
        record = inputs.parent("subsample_id")
        ids, _ = read_subsample(record.artifact("subsample.h5"))
        merge = inputs.ancestor(record, "merge")
        what = f"subsample {record.run_id}"
    else:
        record = merge = inputs.parent("source_id")
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
    callbacks: list[pl.Callback] = [instantiate(node) for node in (cfg.callbacks or {}).values() if node]
    checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    if not checkpoints:
        raise RadioCurationError("callbacks.checkpoint is needed: training resumes from its last.ckpt.")
    if not any(Path(c.dirpath or "") == run_dir / CHECKPOINT_DIR for c in checkpoints):
        raise RadioCurationError(
            f"no checkpoint callback writes to the run's {CHECKPOINT_DIR}/ (dirpath: "
            f"{', '.join(str(c.dirpath) for c in checkpoints)}): training resumes from its last.ckpt; keep "
            "callbacks.checkpoint.dirpath=${rc_run_dir:}/checkpoints"
        )
    if knn is not None:
        callbacks.append(knn)
    callbacks.append(RestoreLoaderPosition())
    return callbacks


def fit(run: Run, source: TrainingSource) -> tuple[pl.Trainer, SSLModule]:
    """Train in ``run.dir``, resuming from its ``last.ckpt`` if there is one.

    Parameters
    ----------
    run
        The run's handle: its config view, directory (checkpoints, cache) and, on rank 0, trackers.
    source
        The windows to train on.

    Returns
    -------
    tuple
        The trainer and the trained module.
    """
    cfg, run_dir, owner = run.cfg, run.dir, run.rank == 0
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = _build_model(cfg)
    data: TrainingData = instantiate_user(cfg.data)
    datamodule = data.datamodule(source.merged, source.cutout_ids, run_dir, int(cfg.seed))
    knn = _knn_monitor(cfg, model) if owner else None  # evaluated on rank 0 only
    logger = TrackerLogger(run.tracker, run.run_id) if owner else False
    with lightning_outside_srun():
        trainer: pl.Trainer = instantiate(
            cfg.trainer,
            callbacks=_callbacks(cfg, run_dir, knn),
            logger=logger,
            plugins=[AtomicCheckpointIO(), *cluster_plugins()],
            default_root_dir=str(run_dir),
        )
    on_cpu = trainer.strategy.root_device.type == "cpu"
    log.info(
        "training on %d windows for up to %d epochs on %s (%d process(es), precision %s)",
        len(source.cutout_ids),
        trainer.max_epochs,
        trainer.strategy.root_device,
        trainer.world_size,
        trainer.precision,
    )
    if on_cpu and cfg.trainer.sync_batchnorm:
        raise RadioCurationError(
            "trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm has no CPU implementation); "
            "set trainer.sync_batchnorm=false to train with DDP on CPUs."
        )
    if data.views_in_workers(on_cpu):
        datamodule.augmentation = model.augmentation
    last = run_dir / LAST_CHECKPOINT
    ckpt_path = str(last) if last.exists() else None
    with lightning_outside_srun(), warnings.catch_warnings():
        if ckpt_path is not None:
            log.info("resuming from %s", ckpt_path)
            # Resuming writes into the checkpoint directory of the interrupted attempt on purpose.
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    # The full state (optimizer, loops, callbacks): a rerun resumes from it.
    trainer.save_checkpoint(last, weights_only=False)
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


def _work(run: Run) -> None:
    cfg = run.cfg
    source = resolve_source(run)
    if run.rank > 0:
        fit(run, source)
        return
    resumed_at = None
    last = run.dir / LAST_CHECKPOINT
    if last.exists():
        resumed_at = int(torch.load(last, map_location="cpu", weights_only=False, mmap=True)["global_step"])
    with run.timer("fit"):
        trainer, model = fit(run, source)
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
    return run_stage(cfg, TRAIN)


def _check(inputs: Inputs) -> None:
    cfg = inputs.cfg
    instantiate_user(cfg.data)
    source = resolve_source(inputs)
    check_first_batch(
        source.merged,
        source.cutout_ids,
        int(cfg.data.batch_size),
        Preprocess(instantiate_user(cfg.normalization), 1, int(cfg.augmentation.global_size)),
        cfg.trainer.precision,
        describe(cfg),
        "trainer.precision",
    )


TRAIN = Stage(
    name="train",
    work=_work,
    parents={"subsample_id": "sample", "source_id": "merge", "backbone.model_id": "train"},
    settings={
        **dict.fromkeys(("ssl", "backbone", "normalization", "augmentation", "data", "trainer"), Built),
        "random_subset": PositiveInt | None,
        "seed": int,
    },
    # Workers, caching, logging, checkpoint frequency and the online kNN monitor never change the model.
    execution={
        **dict.fromkeys(
            (
                "data.num_workers",
                "data.cache",
                "data.resident_gb",
                "data.resident_shared_dir",
                "data.pin_memory",
                "data.prefetch_factor",
                "data.augment_on",
                "trainer.accelerator",
                "trainer.enable_progress_bar",
                "trainer.enable_model_summary",
                "trainer.log_every_n_steps",
                "backbone.runs_dir",
                "callbacks",
            ),
            Built,
        ),
        "monitor": {
            "rankme_samples": PositiveInt,
            "dataset": Built,
            "every_n_epochs": PositiveInt,
            "k": PositiveInt,
            "temperature": Annotated[float, Gt(0)],
        },
    },
    check=_check,
    resumable=(f"{CHECKPOINT_DIR}/*.ckpt",),
    headline="metrics.loss",
    distributed=True,
)
