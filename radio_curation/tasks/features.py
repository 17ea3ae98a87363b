"""``extract.py stage=features source_id=<merge ID>``: features of every cutout into ``features.h5``.

Resumable: rows are computed in fixed blocks written atomically under ``<run>/shards/`` (see
:mod:`radio_curation.features.io`); a run stopped at any moment (SIGKILL included) and started again
with the same command computes only the missing blocks, then renames the file the ranks wrote their rows
into to ``features.h5`` (rows in ``cutout_id`` order; no row copied) and removes the shards.

Distributed: with ``devices``/``num_nodes`` > 1 and ``strategy=ddp`` every rank runs this entry point
(Lightning starts them, or SLURM / torchrun does). Rank 0 owns the run (lease, manifest, final file);
the other ranks only compute and write their blocks.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.connector import _PRECISION_INPUT
from omegaconf import DictConfig, OmegaConf

from radio_curation.backbones import build_backbone
from radio_curation.backbones.export import read_preprocessing, weights_digest
from radio_curation.cutouts.reader import WindowReader
from radio_curation.data.precision import check_first_batch, describe
from radio_curation.data.preprocess import Preprocess
from radio_curation.distributed import cluster_plugins, lightning_outside_srun
from radio_curation.errors import EmptyResultError, RadioCurationError, instantiate_user
from radio_curation.features.extraction import (
    GATHER_ON,
    BlockWriter,
    FeatureDataModule,
    FeatureModule,
    RateBar,
)
from radio_curation.features.io import BlockShards, Plan, join
from radio_curation.features.matrix import FeatureFile
from radio_curation.runs.settings import Built, NonNegativeInt, PositiveInt
from radio_curation.runs.stage import Inputs, Run, Stage, run_stage
from radio_curation.runs.store import RunRecord

log = logging.getLogger(__name__)

#: Batches per block: the unit of work a restart may have to redo.
BATCHES_PER_BLOCK = 8
FEATURES = "features.h5"
DTYPES = {"float32": np.float32, "float16": np.float16}


def _on_gpu(cfg: DictConfig) -> bool:
    return cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())


def resolve_precision(cfg: DictConfig) -> str:
    """The Lightning precision ``cfg.precision`` means here (``auto``: bf16/16-mixed on a GPU, else 32-true)."""
    precision = str(cfg.precision)
    if precision != "auto":
        return precision
    if not _on_gpu(cfg):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def resolve_gather_on(cfg: DictConfig) -> str:
    """Where windows are cut and preprocessed (``auto``: on the model's GPU, else in the loader workers)."""
    where = str(cfg.gather_on)
    if where == "auto":
        return "device" if _on_gpu(cfg) else "workers"
    return where


def _dtype(cfg: DictConfig) -> np.dtype:
    return np.dtype(DTYPES[cfg.features_dtype])


def preprocessing(inputs: Inputs) -> tuple[DictConfig, int | None, str]:
    """The normalisation config, input size and a description of where they come from.

    With ``backbone=run`` and ``preprocess_from_model`` (the default) they are those the model was
    trained with, stored in its ``backbone.pt``; otherwise ``normalization`` and ``resize``.
    """
    cfg = inputs.cfg
    model = inputs.parent("backbone.model_id")
    if model is not None and cfg.preprocess_from_model:
        stored = read_preprocessing(model.artifact("backbone.pt"))
        if stored is not None:
            normalization = OmegaConf.create(stored["normalization"])
            target = str(normalization.get("_target_", "?")).rsplit(".", 1)[-1]
            return (
                normalization,
                int(stored["input_size"]),
                f"the normalization of model {model.run_id} ({target})",
            )
    return cfg.normalization, cfg.resize, describe(cfg)


def _models(inputs: Inputs, sizes: np.ndarray) -> tuple[torch.nn.Module, Preprocess]:
    """The backbone and its preprocessing, checked on one window of each size in the index.

    Weights not loaded from a file are drawn from ``cfg.seed``: every run and every DDP rank of one
    config builds the same network.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(inputs.cfg.seed))
        extractor = build_backbone(inputs.cfg.backbone)
    normalization, resize, _ = preprocessing(inputs)
    preprocess = Preprocess(instantiate_user(normalization), extractor.in_chans, resize)
    extractor.eval()
    for size in np.unique(sizes):
        try:
            with torch.no_grad():
                extractor(preprocess(torch.zeros(1, 1, int(size), int(size))))
        except RadioCurationError:
            raise
        except Exception as err:
            raise RadioCurationError(
                f"the backbone cannot take {size} px windows resized to {resize}: {type(err).__name__}: "
                f"{err}. Set resize= to a size it accepts (or backbone.model_kwargs.dynamic_img_size=true "
                "for a timm ViT)."
            ) from err
    return extractor, preprocess


def _predict(
    cfg: DictConfig, module: FeatureModule, datamodule: FeatureDataModule
) -> tuple[BlockWriter, int]:
    """Run the predict loop; returns the block writer and the number of ranks."""
    writer = BlockWriter(_dtype(cfg))
    with lightning_outside_srun():
        trainer = pl.Trainer(
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy=cfg.strategy,
            precision=resolve_precision(cfg),
            logger=False,
            callbacks=[writer, RateBar()],
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            use_distributed_sampler=False,
            benchmark=torch.cuda.is_available(),
            inference_mode=True,
            plugins=cluster_plugins(),
        )
        log.info(
            "features on %s (%d process(es), precision %s)",
            trainer.strategy.root_device,
            trainer.world_size,
            trainer.precision,
        )
        trainer.predict(module, datamodule=datamodule, return_predictions=False)
    return writer, trainer.world_size


def _feature_module(extractor: torch.nn.Module, preprocess: Preprocess, cfg: DictConfig) -> FeatureModule:
    return FeatureModule(extractor, preprocess, channels_last=_on_gpu(cfg))


def _datamodule(
    cfg: DictConfig,
    merged: Path,
    preprocess: Preprocess,
    shards: BlockShards | None = None,
    plan: Plan | None = None,
) -> FeatureDataModule:
    return FeatureDataModule(
        merged, cfg.batch_size, cfg.num_workers, preprocess, resolve_gather_on(cfg), shards, plan
    )


def _attrs(run: Run, extractor: Any, source_id: str, dtype: np.dtype, weights: str) -> dict[str, Any]:
    def as_json(node: Any) -> str:
        return json.dumps(OmegaConf.to_container(node, resolve=True), sort_keys=True)

    cfg = run.cfg
    normalization, resize, _ = preprocessing(run)
    return {
        "backbone": as_json(cfg.backbone),
        "tap": extractor.tap,
        "pooling": extractor.pooling or "default",
        "normalization": as_json(normalization),
        "resize": int(resize) if resize is not None else 0,
        "precision": resolve_precision(cfg),
        "dtype": dtype.name,
        "source_id": source_id,
        "limit_batches": int(cfg.limit_batches) if cfg.limit_batches is not None else 0,
        "seed": int(cfg.seed),
        "weights_sha256": weights,
    }


def _finish(run: Run, final: Path, shards: BlockShards) -> None:
    with FeatureFile(final) as ff:
        run.counts.update({"rows": ff.n, "dim": ff.dim})
    shutil.rmtree(shards.directory, ignore_errors=True)


def limit_rows(cfg: DictConfig) -> int | None:
    """The windows a ``limit_batches`` run extracts (None: all): part of the run's identity, so two runs
    that differ only in ``batch_size`` (otherwise execution-only) but extract different rows never share
    an ID."""
    return None if cfg.limit_batches is None else int(cfg.limit_batches) * int(cfg.batch_size)


def _work(run: Run) -> None:
    cfg = run.cfg
    source = run.parent("source_id")
    final = run.dir / FEATURES
    shards = BlockShards(run.dir / "shards")
    if run.rank > 0:
        _compute_on_rank(run, source, final, shards)
        return
    run.info["limit_batches"] = cfg.limit_batches
    for stale in run.dir.glob(f".{FEATURES}.tmp-*"):
        # A join cut short by a kill; this process holds the run's lease, so nobody else is writing it.
        stale.unlink()
    if final.is_file():
        # An earlier attempt joined the blocks and was stopped before the manifest was written.
        run.register(FEATURES)
        _finish(run, final, shards)
        return
    merged = source.artifact("merged.h5")
    reader = WindowReader(merged)
    ids, sizes = reader.cutout_ids, reader.table()["size"]
    n_rows = len(ids)
    if n_rows == 0:
        raise EmptyResultError(f"merge run {source.run_id} has no windows to extract features of")
    if limit_rows(cfg) is not None:
        n_rows = min(n_rows, limit_rows(cfg))
    extractor, preprocess = _models(run, sizes[:n_rows])
    weights = weights_digest(extractor)
    plan = shards.load_or_create_plan(n_rows, BATCHES_PER_BLOCK * int(cfg.batch_size), source.run_id, weights)
    dtype = _dtype(cfg)
    shards.create_data(
        plan, ids, extractor.feature_dim, dtype, _attrs(run, extractor, source.run_id, dtype, weights)
    )
    run.info["weights_sha256"] = weights
    pending = shards.pending(plan)
    run.info["blocks"] = plan.n_blocks
    run.info["blocks_done_before"] = plan.n_blocks - len(pending)
    run.info["precision"] = resolve_precision(cfg)
    if pending:
        datamodule = _datamodule(cfg, merged, preprocess, shards, plan)
        module = _feature_module(extractor, preprocess, cfg)
        began = time.perf_counter()
        with run.timer("extract"):
            _, world_size = _predict(cfg, module, datamodule)
        elapsed = time.perf_counter() - began
        # Counted from the plan: under ddp_spawn the writers that counted rows lived in other processes.
        rows = sum(stop - start for start, stop in map(plan.block_range, pending))
        run.metrics["windows_per_s"] = round(rows / elapsed, 2)
        run.info["world_size"] = world_size
    with run.timer("join"), run.artifact(FEATURES) as tmp:
        run.info["blocks_by_rank"] = join(shards, plan, ids, tmp)
    _finish(run, final, shards)


def _compute_on_rank(run: Run, source: RunRecord, final: Path, shards: BlockShards) -> None:
    """A DDP rank above 0: build the same model and compute the blocks rank 0 hands out."""
    plan = shards.existing_plan()
    if final.is_file() or (plan is not None and not shards.pending(plan)):
        # Rank 0 only joins blocks: it starts no process group to wait for.
        return
    merged = source.artifact("merged.h5")
    reader = WindowReader(merged)
    extractor, preprocess = _models(run, reader.table()["size"])
    datamodule = _datamodule(run.cfg, merged, preprocess)
    writer, _ = _predict(run.cfg, _feature_module(extractor, preprocess, run.cfg), datamodule)
    run.counts["rows"] = writer.rows_written


def run(cfg: DictConfig) -> dict[str, Any]:
    """Extract features of the merge run ``cfg.source_id`` with ``cfg.backbone`` (or reuse that run).

    Returns
    -------
    dict
        The run summary of :func:`radio_curation.runs.stage.run_stage` (on a non-zero DDP rank: that
        rank's row count).

    Raises
    ------
    RadioCurationError
        No or a wrong source ID (e.g. a cutouts ID), a bad checkpoint or module name, a backbone that
        cannot take the windows, bad settings, a normalisation whose output the model's precision
        cannot hold (checked on the first batch).
    """
    return run_stage(cfg, FEATURES_STAGE)


def _check(inputs: Inputs) -> None:
    cfg = inputs.cfg
    source = inputs.parent("source_id")
    if source is None:
        raise RadioCurationError(
            "no source: give the merge run to extract features of, e.g. "
            "extract.py stage=features source_id=merge-1a2b3c4d5e"
        )
    normalization, resize, described = preprocessing(inputs)
    check_first_batch(
        source.artifact("merged.h5"),
        None,
        int(cfg.batch_size),
        Preprocess(instantiate_user(normalization), 1, resize),
        resolve_precision(cfg),
        described,
        "precision",
    )


FEATURES_STAGE = Stage(
    name="features",
    work=_work,
    parents={"source_id": "merge", "backbone.model_id": "train"},
    settings={
        "backbone": Built,
        "normalization": Built,
        "resize": PositiveInt | None,
        "preprocess_from_model": bool,
        "precision": _PRECISION_INPUT | Literal["auto"],
        "features_dtype": Literal[tuple(DTYPES)],
        "limit_batches": PositiveInt | None,
        "seed": int,
    },
    # How fast, where and in how many processes; batch_size only matters with limit_batches (derived).
    execution={
        "batch_size": PositiveInt,
        "num_workers": NonNegativeInt,
        "gather_on": Literal["auto", *GATHER_ON],
        "accelerator": str,
        "devices": PositiveInt | str | list[int],
        "num_nodes": PositiveInt,
        "strategy": str,
        "backbone.runs_dir": Built,
    },
    derived={"limit_rows": limit_rows},
    check=_check,
    resumable=("shards/block-*.h5", "shards/features.h5", FEATURES),
    headline="counts.rows",
    distributed=True,
)
