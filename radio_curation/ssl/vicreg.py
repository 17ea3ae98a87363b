"""VICReg (Bardes et al. 2022) from lightly's projection head and variance-invariance-covariance loss."""

from __future__ import annotations

from collections.abc import Callable

from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from torch import Tensor, nn
from torch.optim import Optimizer

from radio_curation.data.augmentation import RadioAugmentation
from radio_curation.ssl.base import SSLModule


class VICReg(SSLModule):
    """Two views pulled together, with every projection dimension kept varied and decorrelated.

    No negatives and no momentum network: the variance and covariance terms alone prevent collapse, so
    small batches of near-identical windows (most of a radio pool) do not weaken the loss as they do a
    contrastive one.

    Parameters
    ----------
    backbone, augmentation, optimizer
        See :class:`~radio_curation.ssl.base.SSLModule`.
    projection_hidden_dim, projection_dim, projection_layers
        The expander MLP (the paper: 3 layers of 8192).
    invariance_weight, variance_weight, covariance_weight
        λ, μ, ν of the loss (the paper: 25, 25, 1).
    gather_distributed
        Compute the variance and covariance over the batches of every DDP rank.
    **kwargs
        Passed to :class:`~radio_curation.ssl.base.SSLModule` (schedule, monitoring).
    """

    def __init__(
        self,
        backbone: nn.Module,
        augmentation: RadioAugmentation,
        optimizer: Callable[..., Optimizer],
        projection_hidden_dim: int = 8192,
        projection_dim: int = 8192,
        projection_layers: int = 3,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gather_distributed: bool = True,
        **kwargs: float | int | None,
    ) -> None:
        super().__init__(backbone, augmentation, optimizer, **kwargs)
        self.require_views()
        self.projection_head = VICRegProjectionHead(
            self.feature_dim, projection_hidden_dim, projection_dim, num_layers=projection_layers
        )
        self.criterion = VICRegLoss(
            lambda_param=invariance_weight,
            mu_param=variance_weight,
            nu_param=covariance_weight,
            gather_distributed=gather_distributed,
        )

    def step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """VICReg loss between the projections of the two views."""
        x0, x1 = views
        f0, f1 = self.backbone(x0), self.backbone(x1)
        loss = self.criterion(self.projection_head(f0), self.projection_head(f1))
        return loss, f0
