"""A labelled dataset seen through a model: what the evaluations read when they are given no features run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from radio_curation.backbones.export import load_backbone, read_preprocessing
from radio_curation.data.datasets import LabelledImages
from radio_curation.data.preprocess import Preprocess
from radio_curation.evaluation.embed import embed_images, resolve_device
from radio_curation.runs.store import RunRecord


def _train_config(record: RunRecord) -> dict[str, Any]:
    path = record.dir / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}


def model_preprocessing(record: RunRecord) -> tuple[dict[str, Any], int] | None:
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


class EmbeddedDataset:
    """Labelled images and the model whose features of them an evaluation reads.

    The model is train run ``model``'s backbone when given, else ``backbone``. With
    ``preprocess_from_model`` a train run's model sees inputs like those it was trained on (the
    normalisation and input size stored with it); otherwise, and for ``backbone``, ``normalization`` and
    ``resize`` apply. Weights that are not loaded from a file (random-initialisation baselines) are drawn
    with ``seed``.

    Parameters
    ----------
    dataset
        A ``dataset`` group config (instantiated when the images are first needed).
    backbone, normalization
        ``backbone`` and ``normalization`` group configs.
    resize
        Model input side in pixels (None: the image size).
    model
        A complete train run, or None.
    preprocess_from_model
        Use ``model``'s own preprocessing.
    seed
        Seeds random weights.
    batch_size, device
        Images per forward pass and where to run them (``auto``: a GPU when there is one).
    """

    def __init__(
        self,
        dataset: DictConfig,
        backbone: DictConfig,
        normalization: DictConfig,
        resize: int | None,
        model: RunRecord | None,
        preprocess_from_model: bool,
        seed: int,
        batch_size: int,
        device: str,
    ) -> None:
        self.dataset = dataset
        self.backbone = backbone
        self.normalization = normalization
        self.resize = resize
        self.record = model
        self.preprocess_from_model = preprocess_from_model
        self.seed = seed
        self.batch_size = batch_size
        self.device = device
        self._model: tuple[nn.Module, Preprocess, dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        """The dataset's class name, for the record."""
        return str(self.dataset._target_).rsplit(".", 1)[-1]

    def load(self) -> LabelledImages:
        """The labelled images."""
        return instantiate(self.dataset).load()

    def model(self) -> tuple[nn.Module, Preprocess, dict[str, Any]]:
        """The feature extractor, its preprocessing and a record of both (built once).

        Returns
        -------
        extractor : nn.Module
            A ``FeatureExtractor``.
        preprocess : Preprocess
            Raw images → model input.
        info : dict
            Which model, normalisation and input size were used, and where they came from.
        """
        if self._model is None:
            self._model = self._build()
        return self._model

    def _build(self) -> tuple[nn.Module, Preprocess, dict[str, Any]]:
        normalization_cfg, resize = self.normalization, self.resize
        torch.manual_seed(self.seed)
        if self.record is not None:
            extractor = load_backbone(self.record.artifact("backbone.pt"))
            info: dict[str, Any] = {"model": self.record.run_id, "preprocess_from": "evaluate config"}
            trained = model_preprocessing(self.record) if self.preprocess_from_model else None
            if trained is not None:
                normalization_cfg, resize = OmegaConf.create(trained[0]), trained[1]
                info["preprocess_from"] = f"train run {self.record.run_id}"
        else:
            extractor = instantiate(self.backbone)
            info = {"model": OmegaConf.select(self.backbone, "_target_")}
        preprocess = Preprocess(instantiate(normalization_cfg), extractor.in_chans, resize)
        info.update(
            normalization=OmegaConf.to_container(normalization_cfg, resolve=True),
            resize=resize,
            feature_dim=int(extractor.feature_dim),
            tap=getattr(extractor, "tap", None),
        )
        return extractor, preprocess, info

    def embed(self, images: np.ndarray, transform: Callable[[Tensor], Tensor] | None = None) -> np.ndarray:
        """Features ``[N, D]`` (float32) of raw ``images`` ``[N, 1, H, W]``, each first ``transform``-ed."""
        extractor, preprocess, _ = self.model()
        return embed_images(
            extractor, preprocess, images, self.batch_size, resolve_device(self.device), transform=transform
        )
