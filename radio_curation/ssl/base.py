"""What every self-supervised method shares: views, optimiser and schedule, and the monitoring metrics.

Adding a method: subclass :class:`SSLModule`, build the heads, losses and momentum copies from lightly in
``__init__``, implement :meth:`SSLModule.step` (views → loss and the backbone features of the first view),
and add ``configs/ssl/<name>.yaml`` with ``_target_`` pointing at the class.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from lightly.models.utils import get_weight_decay_parameters
from lightly.utils.debug import std_of_l2_normalized
from lightly.utils.scheduler import CosineWarmupScheduler
from torch import Tensor, nn
from torch.optim import Optimizer

from radio_curation.data.augmentation import RadioAugmentation, batch_seed, views_generator
from radio_curation.errors import RadioCurationError
from radio_curation.ssl.monitor import rankme

#: The global batch size the configured learning rates refer to (linear scaling rule, Goyal et al. 2017).
REFERENCE_BATCH_SIZE = 256


class SSLModule(pl.LightningModule, ABC):
    """Base LightningModule of the self-supervised methods.

    Parameters
    ----------
    backbone
        The trainable feature extractor (``backbone`` group): ``forward(x[B, in_chans, H, W]) -> [B, D]``
        with an attribute ``feature_dim``.
    augmentation
        Makes the views of a batch of raw windows on the batch's device (``augmentation`` group).
    optimizer
        Partial optimizer taking the parameter groups, e.g. ``functools.partial(LARS, lr=0.2,
        momentum=0.9)``; its ``lr`` is the learning rate for a global batch of ``lr_batch_size`` images.
    warmup_epochs
        Linear warm-up of the learning rate (may be fractional), then cosine decay to
        ``lr * min_lr_ratio`` at the last step.
    min_lr_ratio
        Final learning rate as a fraction of the peak.
    lr_batch_size
        Global batch size the configured ``lr`` refers to; the peak learning rate is
        ``lr * global_batch / lr_batch_size``. ``None`` uses ``lr`` as given.
    rankme_samples
        How many backbone embeddings per epoch (over all ranks) RankMe is computed from.
    seed
        Views made here are drawn with a generator seeded per batch from (seed, epoch, rank, batch index),
        so a resumed run draws the views an uninterrupted one would; None draws from torch's global generator.
    """

    def __init__(
        self,
        backbone: nn.Module,
        augmentation: RadioAugmentation,
        optimizer: Callable[..., Optimizer],
        warmup_epochs: int | float = 10.0,
        min_lr_ratio: float = 1e-3,
        lr_batch_size: int | None = REFERENCE_BATCH_SIZE,
        rankme_samples: int = 2048,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not hasattr(backbone, "feature_dim"):
            raise RadioCurationError(
                f"the backbone {type(backbone).__name__} has no 'feature_dim' attribute."
            )
        if "lr" not in getattr(optimizer, "keywords", {}):
            raise RadioCurationError(
                "the ssl.optimizer config must set 'lr' (learning rate per lr_batch_size)."
            )
        self.backbone = backbone
        self.augmentation = augmentation
        self.optimizer_factory = optimizer
        self.warmup_epochs = float(warmup_epochs)
        self.min_lr_ratio = float(min_lr_ratio)
        self.lr_batch_size = lr_batch_size
        self.rankme_samples = int(rankme_samples)
        self.seed = seed
        self.save_hyperparameters(ignore=["backbone", "augmentation", "optimizer"])
        self._embeddings: list[Tensor] = []
        self._epoch_images = 0
        self._epoch_start = 0.0

    def require_views(self, n_local: int = 0) -> None:
        """Raise unless the augmentation makes the 2 global and ``n_local`` local views this method uses."""
        made = (self.augmentation.n_global, self.augmentation.n_local)
        if made != (2, n_local):
            raise RadioCurationError(
                f"{type(self).__name__} uses 2 global and {n_local} local views per image (local views: "
                f"ssl.n_local_views); the augmentation makes {made[0]} global and {made[1]} local views."
            )

    @property
    def feature_dim(self) -> int:
        """Dimension of the backbone's features."""
        return int(self.backbone.feature_dim)

    def export_backbone(self) -> nn.Module:
        """The backbone whose weights are exported as the trained model."""
        return self.backbone

    def trainable_modules(self) -> Iterable[nn.Module]:
        """Modules whose parameters the optimizer updates: those with trainable parameters.

        Momentum copies are frozen with lightly's ``deactivate_requires_grad`` and so left out.
        """
        return [
            m
            for name, m in self.named_children()
            if name != "augmentation" and any(p.requires_grad for p in m.parameters())
        ]

    @abstractmethod
    def step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Compute the method's loss from the views of one batch.

        Parameters
        ----------
        views
            Global views first, then local views, each ``[B, in_chans, s, s]``.

        Returns
        -------
        tuple of Tensor
            The scalar loss, and the backbone features ``[B, D]`` of the first view (for monitoring).
        """

    def forward(self, x: Tensor) -> Tensor:
        """Backbone features of model-ready images ``[B, in_chans, H, W]``."""
        return self.backbone(x)

    @property
    def total_steps(self) -> int:
        """Number of optimizer steps of the whole fit (momentum and learning-rate schedules end there)."""
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise RadioCurationError(
                "training length is unbounded: set trainer.max_epochs or trainer.max_steps so the "
                "learning-rate and momentum schedules know where they end."
            )
        return max(1, int(total))

    def global_batch_size(self, per_device: int) -> int:
        """Images per optimizer step over all devices and accumulated batches."""
        return per_device * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def _steps_per_epoch(self, total: int, datamodule: Any, per_device: int) -> float:
        """Optimizer steps per epoch, which the warm-up is counted in."""
        batches = self.trainer.num_training_batches  # known once estimated_stepping_batches loaded the data
        if math.isfinite(batches):
            return batches / self.trainer.accumulate_grad_batches
        # max_epochs=-1 (max_steps bounds the fit): Lightning does not load the data to count the steps; an
        # epoch is then the datamodule's windows over the global batch, or, without them, the whole fit.
        windows = len(getattr(datamodule, "cutout_ids", ()))
        if windows and per_device:
            return windows / self.global_batch_size(per_device)
        return total

    def configure_optimizers(self) -> dict[str, Any]:
        """LARS/AdamW (per config) with linear warm-up and cosine decay per optimizer step.

        Biases and normalisation parameters get no weight decay (and so no LARS adaptation).
        """
        decay, no_decay = get_weight_decay_parameters(self.trainable_modules())
        base_lr = float(self.optimizer_factory.keywords["lr"])
        total = self.total_steps
        datamodule = getattr(self.trainer, "datamodule", None)
        per_device = int(getattr(datamodule, "batch_size", 0) or 0)
        if self.lr_batch_size and per_device:
            base_lr *= self.global_batch_size(per_device) / self.lr_batch_size
        optimizer = self.optimizer_factory(
            [
                {"name": "default", "params": decay},
                {"name": "no_weight_decay", "params": no_decay, "weight_decay": 0.0},
            ],
            lr=base_lr,
        )
        steps_per_epoch = max(1, math.ceil(self._steps_per_epoch(total, datamodule, per_device)))
        warmup = min(total, round(self.warmup_epochs * steps_per_epoch))
        scheduler = CosineWarmupScheduler(
            optimizer, warmup_epochs=warmup, max_epochs=total, end_value=self.min_lr_ratio
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_step(self, batch: Tensor | list[Tensor] | dict[str, list[Tensor]], batch_idx: int) -> Tensor:
        """Compute the loss of a batch and log the monitoring metrics.

        ``batch`` is raw windows ``[B, 1, S, S]`` (a tensor, or a one-element list), whose views are made here
        on the batch's device, or ``{"views": [...]}`` already made by the DataLoader workers.
        """
        if isinstance(batch, dict):
            views = batch["views"]
        else:
            windows = batch[0] if isinstance(batch, list | tuple) else batch
            generator = None
            if self.seed is not None:
                seed = batch_seed(self.seed, self.current_epoch, self.global_rank, batch_idx)
                generator = views_generator(seed, windows.device)
            views = self.augmentation(windows, generator=generator)
        loss, features = self.step(views)
        batch_size = views[0].shape[0]
        self._epoch_images += batch_size
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch_size)
        self.log(
            "train/loss_epoch", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=batch_size
        )
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        detached = features.detach().float()
        self.log(
            "train/embedding_std",
            std_of_l2_normalized(detached),
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=batch_size,
        )
        per_rank = max(1, self.rankme_samples // self.trainer.world_size)
        kept = sum(len(e) for e in self._embeddings)
        if kept < per_rank:
            self._embeddings.append(detached[: per_rank - kept])
        return loss

    def on_train_epoch_start(self) -> None:
        self._embeddings = []
        self._epoch_images = 0
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        elapsed = max(time.perf_counter() - self._epoch_start, 1e-9)
        images = self.all_gather(torch.tensor(float(self._epoch_images), device=self.device)).sum()
        self.log("train/images_per_sec", images / elapsed, on_epoch=True, sync_dist=True)
        if self._embeddings:
            local = torch.cat(self._embeddings)
            # Ranks may hold different numbers of embeddings (uneven last batches): gather equal slices.
            n = int(self.all_gather(torch.tensor(len(local), device=self.device)).min())
            gathered = self.all_gather(local[:n]).reshape(-1, local.shape[-1])
            self.log("train/rankme", rankme(gathered), on_epoch=True, sync_dist=True)
        self._embeddings = []
