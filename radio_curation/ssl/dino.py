"""DINO (Caron et al. 2021) from lightly's head, loss, momentum utilities and schedules."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad
from lightly.utils.scheduler import linear_warmup_schedule
from torch import Tensor, nn
from torch.optim import Optimizer

from radio_curation.data.augmentation import RadioAugmentation
from radio_curation.ssl.momentum import MomentumMethod


class DINO(MomentumMethod):
    """Self-distillation: a student matches a momentum teacher's centred, sharpened outputs (multi-crop).

    The teacher sees the global views only; the student sees global and local views. The exported
    backbone is the teacher's, which is the better feature extractor (Caron et al. 2021).

    Parameters
    ----------
    backbone, augmentation, optimizer
        See :class:`~radio_curation.ssl.base.SSLModule`.
    n_local_views
        Local crops per image; must equal the augmentation's ``n_local``.
    hidden_dim, bottleneck_dim, output_dim
        DINO head widths (paper: 2048, 256, 65536).
    head_batch_norm
        Batch norm in the head MLP (useful for CNN backbones, off for ViTs).
    norm_last_layer
        Weight-normalise the head's last layer with a fixed norm (more stable).
    freeze_last_layer
        Epochs during which the head's last layer is not updated.
    momentum
        ``(start, end)`` of the teacher's EMA factor, cosine-scheduled over the optimizer steps and
        applied once per step.
    teacher_temp
        ``(start, end)`` of the teacher temperature, linearly warmed up over ``warmup_teacher_temp_epochs``.
    warmup_teacher_temp_epochs
        Epochs of the teacher temperature warm-up.
    student_temp
        Student temperature.
    center_momentum
        EMA factor of the teacher output centre.
    **kwargs
        Passed to :class:`~radio_curation.ssl.base.SSLModule` (schedule, monitoring).
    """

    def __init__(
        self,
        backbone: nn.Module,
        augmentation: RadioAugmentation,
        optimizer: Callable[..., Optimizer],
        n_local_views: int = 6,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 4096,
        head_batch_norm: bool = False,
        norm_last_layer: bool = True,
        freeze_last_layer: int = 1,
        momentum: Sequence[float] = (0.996, 1.0),
        teacher_temp: Sequence[float] = (0.04, 0.07),
        warmup_teacher_temp_epochs: int = 30,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        **kwargs: float | int | None,
    ) -> None:
        super().__init__(backbone, augmentation, optimizer, **kwargs)
        self.require_views(n_local_views)
        self.head = DINOProjectionHead(
            self.feature_dim,
            hidden_dim,
            bottleneck_dim,
            output_dim,
            batch_norm=head_batch_norm,
            freeze_last_layer=freeze_last_layer,
            norm_last_layer=norm_last_layer,
        )
        self.teacher_backbone = copy.deepcopy(self.backbone)
        self.teacher_head = DINOProjectionHead(
            self.feature_dim, hidden_dim, bottleneck_dim, output_dim, batch_norm=head_batch_norm
        )
        self.teacher_head.load_state_dict(self.head.state_dict())
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(
            output_dim=output_dim,
            warmup_teacher_temp=float(teacher_temp[0]),
            teacher_temp=float(teacher_temp[1]),
            warmup_teacher_temp_epochs=max(1, int(warmup_teacher_temp_epochs)),
            student_temp=student_temp,
            center_momentum=center_momentum,
        )
        self.n_local_views = int(n_local_views)
        self.momentum = (float(momentum[0]), float(momentum[1]))
        self.teacher_temp = (float(teacher_temp[0]), float(teacher_temp[1]))
        self.warmup_teacher_temp_epochs = int(warmup_teacher_temp_epochs)

    def export_backbone(self) -> nn.Module:
        """The teacher backbone."""
        return self.teacher_backbone

    def step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Cross-entropy between teacher outputs on global views and student outputs on all other views."""
        global_views = views[:2]
        with torch.no_grad():
            teacher_out = [self.teacher_head(self.teacher_backbone(v)) for v in global_views]
        student_features = [self.backbone(v) for v in views]
        student_out = [self.head(f) for f in student_features]
        temp = linear_warmup_schedule(
            step=self.current_epoch,
            warmup_steps=self.warmup_teacher_temp_epochs,
            start_value=self.teacher_temp[0],
            end_value=self.teacher_temp[1],
        )
        loss = self.criterion(teacher_out, student_out, teacher_temp=temp)
        self.log("train/teacher_temp", temp, on_step=True, on_epoch=False)
        return loss, student_features[0]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Student backbone and head with the teacher's."""
        return [(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)]

    def on_after_backward(self) -> None:
        self.head.cancel_last_layer_gradients(current_epoch=self.current_epoch)
