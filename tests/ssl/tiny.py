"""A stand-in backbone small enough for 2 CPU cores, with the FeatureExtractor attributes."""

from __future__ import annotations

import functools

import torch
from lightly.utils.lars import LARS
from torch import nn

from radio_curation.data.augmentation import RadioAugmentation


class TinyBackbone(nn.Module):
    """conv-BN-ReLU ×2 + global pooling: ``[B, in_chans, H, W] -> [B, feature_dim]``."""

    def __init__(self, in_chans: int = 1, feature_dim: int = 16) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.feature_dim = feature_dim
        self.net = nn.Sequential(
            nn.Conv2d(in_chans, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, feature_dim, 3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def lars(lr: float = 0.2) -> functools.partial:
    return functools.partial(LARS, lr=lr, momentum=0.9, weight_decay=1e-4)


def augmentation(n_local: int = 0, size: int = 16) -> RadioAugmentation:
    return RadioAugmentation(nn.Identity(), 1, global_size=size, local_size=size // 2, n_local=n_local)


HEADS = {
    "byol": {"projection_hidden_dim": 32, "projection_dim": 16, "prediction_hidden_dim": 32},
    "simclr": {"projection_hidden_dim": 32, "projection_dim": 16},
    "vicreg": {"projection_hidden_dim": 32, "projection_dim": 32},
    "dino": {"hidden_dim": 32, "bottleneck_dim": 8, "output_dim": 64, "n_local_views": 2},
}
