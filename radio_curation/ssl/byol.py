"""BYOL (Grill et al. 2020) from lightly's heads, loss and momentum utilities."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad
from torch import Tensor, nn
from torch.optim import Optimizer

from radio_curation.data.augmentation import RadioAugmentation
from radio_curation.ssl.momentum import MomentumMethod


class BYOL(MomentumMethod):
    """Bootstrap Your Own Latent: an online network predicts a momentum network's projection.

    Parameters
    ----------
    backbone, augmentation, optimizer
        See :class:`~radio_curation.ssl.base.SSLModule`.
    projection_hidden_dim, projection_dim
        Projection MLP widths (paper: 4096, 256).
    prediction_hidden_dim
        Prediction MLP hidden width (paper: 4096).
    momentum
        ``(start, end)`` of the momentum network's EMA factor, cosine-scheduled over the optimizer steps
        and applied once per step. Default 0.99 → 1: the paper's 0.996 is for batches of 4096 over
        300–1000 ImageNet epochs; with the batches of a few hundred and the ~100 epochs of a radio
        subsample there are far fewer steps, and 0.99 (solo-learn's and lightly's BYOL recipes for such
        runs) lets the target keep up.
    **kwargs
        Passed to :class:`~radio_curation.ssl.base.SSLModule` (schedule, monitoring).
    """

    def __init__(
        self,
        backbone: nn.Module,
        augmentation: RadioAugmentation,
        optimizer: Callable[..., Optimizer],
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        prediction_hidden_dim: int = 4096,
        momentum: Sequence[float] = (0.99, 1.0),
        **kwargs: float | int | None,
    ) -> None:
        super().__init__(backbone, augmentation, optimizer, **kwargs)
        self.require_views()
        self.projection_head = BYOLProjectionHead(self.feature_dim, projection_hidden_dim, projection_dim)
        self.prediction_head = BYOLPredictionHead(projection_dim, prediction_hidden_dim, projection_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()
        self.momentum = (float(momentum[0]), float(momentum[1]))

    def step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Symmetrised negative cosine similarity between predictions and momentum projections."""
        x0, x1 = views
        f0, f1 = self.backbone(x0), self.backbone(x1)
        p0 = self.prediction_head(self.projection_head(f0))
        p1 = self.prediction_head(self.projection_head(f1))
        with torch.no_grad():
            z0 = self.projection_head_momentum(self.backbone_momentum(x0))
            z1 = self.projection_head_momentum(self.backbone_momentum(x1))
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        return loss, f0

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The backbone and projection head with their momentum copies."""
        return [
            (self.backbone, self.backbone_momentum),
            (self.projection_head, self.projection_head_momentum),
        ]
