"""What an evaluation reads: runs up the lineage, feature rows, window tables, window labels, models."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from radio_curation.backbones.export import read_preprocessing
from radio_curation.cutouts.index import read_index
from radio_curation.data.catalogue import WindowCatalogue
from radio_curation.data.preprocess import Preprocess
from radio_curation.errors import RadioCurationError
from radio_curation.runs.store import RunRecord, RunStore


def ancestor(store: RunStore, record: RunRecord, stage: str) -> RunRecord | None:
    """The nearest run of ``stage`` up the lineage of ``record`` (``record`` itself included)."""
    queue, seen = deque([record]), set()
    while queue:
        current = queue.popleft()
        if current.stage == stage:
            return current
        for parent in current.parents:
            if parent not in seen:
                seen.add(parent)
                queue.append(store.resolve(parent))
    return None


def require_ancestor(store: RunStore, record: RunRecord, stage: str, why: str) -> RunRecord:
    """:func:`ancestor`, or a user-facing error naming what was looked for and why."""
    found = ancestor(store, record, stage)
    if found is None:
        raise RadioCurationError(
            f"run {record.run_id} has no '{stage}' run in its lineage, which {why} needs "
            f"(see `radio-curation runs lineage {record.run_id}`)"
        )
    return found


def positions(all_ids: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    """Positions of ``ids`` in the ascending ``all_ids``; an error naming ``what`` if any is missing."""
    all_ids = np.asarray(all_ids, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    pos = np.searchsorted(all_ids, ids)
    found = pos < len(all_ids)
    found[found] = all_ids[pos[found]] == ids[found]
    if not found.all():
        raise RadioCurationError(
            f"{int((~found).sum())} cutout IDs (e.g. {ids[~found][:5].tolist()}) are not in {what}; "
            "the runs given do not belong to one lineage"
        )
    return pos


def window_table(merged: Path, cutout_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of ``merged.h5`` for ``cutout_ids`` (in that order), plus ``pixel_scale`` [arcsec] per window."""
    index = read_index(merged)
    rows = positions(index.columns["cutout_id"], cutout_ids, str(merged))
    table = {key: np.asarray(values)[rows] for key, values in index.columns.items()}
    table["mosaic"] = np.asarray(index.mosaics["name"], dtype=str)[table["mosaic"]]
    table["pixel_scale"] = np.asarray(index.mosaics["pixel_scale"], dtype=np.float64)[
        np.asarray(index.columns["mosaic"])[rows]
    ]
    return table


def synthetic_truth(merged: Path) -> Path | None:
    """The synthetic sky's ``truth.fits`` when every mosaic of ``merged`` comes from one synthetic sky."""
    roots = {Path(p).parent.parent.parent for p in read_index(merged, ["cutout_id"]).mosaics["path"]}
    truths = {r / "truth.fits" for r in roots if (r / "truth.fits").is_file() and (r / "sky.json").is_file()}
    return truths.pop() if len(truths) == 1 and len(roots) == 1 else None


def window_labels(
    catalogue: DictConfig, merged: Path, table: dict[str, np.ndarray]
) -> tuple[np.ndarray, str, np.ndarray]:
    """Class of each window of ``table`` from the configured catalogue, and the source that labels it.

    ``catalogue.path=auto`` uses the synthetic sky's truth catalogue when the windows come from one.

    Returns
    -------
    labels : np.ndarray
        ``[N]`` str.
    source : str
        The catalogue file used.
    groups : np.ndarray
        ``[N]`` int64: the catalogue row of the matched source (windows of one source share it), a
        distinct negative number for each window without one.
    """
    path = catalogue.path
    if path == "auto":
        path = synthetic_truth(merged)
        if path is None:
            raise RadioCurationError(
                f"eval.catalogue.path=auto finds a truth catalogue only for windows of one synthetic sky, "
                f"and {merged} is not one; set eval.catalogue.path to a source catalogue (FITS/CSV/VOTable)"
            )
    options = OmegaConf.to_container(catalogue, resolve=True)
    options.pop("path")
    cat = WindowCatalogue(path, **options)
    radius = 0.5 * table["size"] * table["pixel_scale"]
    labels, groups = cat.match(table["ra"], table["dec"], radius)
    unmatched = groups < 0
    groups[unmatched] = -1 - np.arange(int(unmatched.sum()))
    return labels, str(path), groups


def _train_config(record: RunRecord) -> dict[str, Any]:
    path = record.dir / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}


def _model_preprocessing(record: RunRecord) -> tuple[dict[str, Any], int] | None:
    """The normalisation config and input size train run ``record``'s model was trained with.

    From its ``backbone.pt``; for a model exported before that was stored, from the run's config (the
    ``augmentation.global_size`` views it trained on). None when neither says.
    """
    stored = read_preprocessing(record.artifact("backbone.pt"))
    if stored is not None:
        return stored["normalization"], int(stored["input_size"])
    trained = _train_config(record)
    size = (trained.get("augmentation") or {}).get("global_size")
    if "normalization" not in trained or size is None:
        return None
    return trained["normalization"], int(size)


def build_model(cfg: DictConfig) -> tuple[nn.Module, Preprocess, dict[str, Any]]:
    """The feature extractor and its preprocessing for the configured representation.

    ``model_id`` (a train run) wins over ``backbone``; with ``preprocess_from_model`` the normalisation
    and input size stored with the model (those it was trained with) are used, so the model sees inputs
    like those it was trained on; ``preprocess_from_model=false`` takes ``normalization`` and ``resize``
    of the evaluate config. Weights that are not loaded from a file (random-initialisation baselines)
    are drawn with ``cfg.seed``.

    Returns
    -------
    extractor : nn.Module
        A ``FeatureExtractor``.
    preprocess : Preprocess
        Raw windows → model input.
    info : dict
        Which backbone, normalisation and resize were used.
    """
    normalization_cfg, resize = cfg.normalization, cfg.resize
    torch.manual_seed(int(cfg.seed))
    if cfg.model_id:
        from radio_curation.backbones.factory import run_backbone

        record = RunStore.of(cfg).resolve(str(cfg.model_id), stage="train")
        extractor = run_backbone(record.run_id, cfg.paths.runs_dir)
        info: dict[str, Any] = {"model": record.run_id, "preprocess_from": "evaluate config"}
        trained = _model_preprocessing(record) if cfg.preprocess_from_model else None
        if trained is not None:
            normalization_cfg, resize = OmegaConf.create(trained[0]), trained[1]
            info["preprocess_from"] = f"train run {record.run_id}"
    else:
        extractor = instantiate(cfg.backbone)
        info = {"model": OmegaConf.select(cfg, "backbone._target_")}
    normalization = instantiate(normalization_cfg)
    preprocess = Preprocess(normalization, extractor.in_chans, resize)
    info.update(
        normalization=OmegaConf.to_container(normalization_cfg, resolve=True),
        resize=resize,
        feature_dim=int(extractor.feature_dim),
        tap=getattr(extractor, "tap", None),
    )
    return extractor, preprocess, info
