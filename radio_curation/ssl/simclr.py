"""SimCLR (Chen et al. 2020) from lightly's projection head and NT-Xent loss."""

from __future__ import annotations

from collections.abc import Callable

from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor, nn
from torch.optim import Optimizer

from radio_curation.data.augmentation import RadioAugmentation
from radio_curation.ssl.base import SSLModule


class SimCLR(SSLModule):
    """Contrastive learning of two views against the other images of the (global) batch.

    Parameters
    ----------
    backbone, augmentation, optimizer
        See :class:`~radio_curation.ssl.base.SSLModule`.
    projection_hidden_dim, projection_dim, projection_layers
        Projection MLP (SimCLR v1: 2 layers, 2048 → 128).
    temperature
        NT-Xent temperature.
    gather_distributed
        Use the negatives of every DDP rank, not only the local batch (needed for the contrastive task to
        be as hard as the global batch size implies).
    **kwargs
        Passed to :class:`~radio_curation.ssl.base.SSLModule` (schedule, monitoring).
    """

    def __init__(
        self,
        backbone: nn.Module,
        augmentation: RadioAugmentation,
        optimizer: Callable[..., Optimizer],
        projection_hidden_dim: int = 2048,
        projection_dim: int = 128,
        projection_layers: int = 2,
        temperature: float = 0.2,
        gather_distributed: bool = True,
        **kwargs: float | int | None,
    ) -> None:
        super().__init__(backbone, augmentation, optimizer, **kwargs)
        self.require_views()
        self.projection_head = SimCLRProjectionHead(
            self.feature_dim, projection_hidden_dim, projection_dim, num_layers=projection_layers
        )
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)

    def step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """NT-Xent between the projections of the two views."""
        x0, x1 = views
        f0, f1 = self.backbone(x0), self.backbone(x1)
        loss = self.criterion(self.projection_head(f0), self.projection_head(f1))
        return loss, f0
