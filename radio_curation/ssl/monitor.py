"""Training monitors: representation collapse (RankMe), online kNN accuracy, and the trackers bridge."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.utils.benchmarking.knn import knn_predict
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor, nn

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.representation import entropy_rank


@torch.no_grad()
def rankme(embeddings: Tensor) -> float:
    """RankMe (Garrido et al. 2023) of ``[N, D]`` embeddings: the entropy rank of their singular values.

    Between 1 (complete collapse) and ``min(N, D)`` (all directions used equally); the formula is the
    evaluation stage's :func:`~radio_curation.evaluation.representation.entropy_rank`.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"rankme needs [N, D] embeddings, got shape {tuple(embeddings.shape)}")
    return entropy_rank(torch.linalg.svdvals(embeddings.float()).cpu().numpy())


class TrackerLogger(Logger):
    """A Lightning logger that forwards metrics to the run's trackers (``run.tracker``).

    Parameters
    ----------
    tracker
        Anything with ``log_metrics(dict, step)``: the stage's :class:`~radio_curation.tracking.base.Trackers`.
    run_id
        Shown as the logger's version.
    """

    def __init__(self, tracker: Any, run_id: str) -> None:
        super().__init__()
        self._tracker = tracker
        self._run_id = run_id

    @property
    def name(self) -> str:
        return "trackers"

    @property
    def version(self) -> str:
        return self._run_id

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Ignored: the stage runner logs the run's whole resolved config to the trackers."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Send ``metrics`` (numbers only) to every enabled tracker."""
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float | np.number | Tensor)}
        if numeric:
            self._tracker.log_metrics(numeric, step=step)


class OnlineKNN(pl.Callback):
    """kNN accuracy of the backbone's features on a labelled set, every ``every_n_epochs`` epochs.

    Parameters
    ----------
    images
        Raw labelled images ``[N, 1, H, W]`` (same units as the training windows, NaNs filled).
    labels
        Integer class labels ``[N]``.
    preprocess
        Maps raw images to model input (normalisation, channels, resize), as used for the training views.
    train_mask
        Which images form the feature bank; the others are queried. ``None``: a fixed random 80/20 split.
    k, temperature
        Neighbours and similarity temperature of the weighted vote (lightly's ``knn_predict``).
    every_n_epochs
        How often to evaluate.
    batch_size
        Images per forward pass.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        preprocess: nn.Module,
        train_mask: Tensor | None = None,
        k: int = 20,
        temperature: float = 0.07,
        every_n_epochs: int = 1,
        batch_size: int = 256,
    ) -> None:
        super().__init__()
        if len(images) != len(labels) or len(images) < 2:
            raise RadioCurationError(
                f"online kNN needs at least 2 labelled images with one label each; got {len(images)} images "
                f"and {len(labels)} labels."
            )
        self.images = images.float()
        self.labels = labels.long()
        self.preprocess = preprocess
        if train_mask is None:
            # A fixed 80/20 split, the same every epoch, so accuracies are comparable along training.
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
            train_mask = torch.ones(len(labels), dtype=torch.bool)
            train_mask[order[: max(1, len(labels) // 5)]] = False
        self.train_mask = train_mask.bool()
        if self.train_mask.all() or not self.train_mask.any():
            raise RadioCurationError(
                "online kNN needs both bank (train) and query (test) images in its split."
            )
        self.k = int(k)
        self.temperature = float(temperature)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.batch_size = int(batch_size)
        self.num_classes = int(self.labels.max()) + 1

    @torch.no_grad()
    def features(self, backbone: nn.Module, device: torch.device) -> Tensor:
        """L2-normalised backbone features of all labelled images ``[N, D]``."""
        self.preprocess.to(device)
        chunks = []
        for start in range(0, len(self.images), self.batch_size):
            x = self.preprocess(self.images[start : start + self.batch_size].to(device))
            chunks.append(F.normalize(backbone(x).float(), dim=1))
        return torch.cat(chunks)

    @torch.no_grad()
    def accuracy(self, backbone: nn.Module, device: torch.device) -> float:
        """Top-1 kNN accuracy of ``backbone`` on the labelled set (backbone put in eval mode meanwhile)."""
        was_training = backbone.training
        backbone.eval()
        try:
            feats = self.features(backbone, device)
        finally:
            backbone.train(was_training)
        labels = self.labels.to(device)
        bank = self.train_mask.to(device)
        k = min(self.k, int(bank.sum()))
        pred = knn_predict(
            feats[~bank], feats[bank].T, labels[bank], self.num_classes, knn_k=k, knn_t=self.temperature
        )
        return float((pred[:, 0] == labels[~bank]).float().mean())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        backbone = pl_module.export_backbone() if hasattr(pl_module, "export_backbone") else pl_module
        if trainer.is_global_zero:
            acc = self.accuracy(backbone, pl_module.device)
            pl_module.log("monitor/knn_top1", acc, on_epoch=True, rank_zero_only=True)
