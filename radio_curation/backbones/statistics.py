"""The hand-made radio-statistics vector as a backbone (``backbone=radio_stats``).

With it, ``extract.py stage=features`` writes each window's radio statistics
(:func:`radio_curation.evaluation.radio_stats.radio_statistics`) as its features, so the curation stages
cluster and sample them as they do learned features: the ``balanced_stats`` baseline of
``benchmarks/bench_science.py`` is ``backbone=radio_stats normalization=none resize=null`` followed by the
ordinary ``sampler=balanced``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from radio_curation.backbones.extractor import FeatureExtractor
from radio_curation.evaluation.radio_stats import radio_statistics


class RadioStatistics(nn.Module):
    """``forward(x [B, 1, H, W]) -> [B, 12]``: the radio statistics of raw windows (Jy/beam, no weights)."""

    def forward(self, x: Tensor) -> Tensor:
        stats = radio_statistics(x.detach().cpu().numpy())
        return torch.from_numpy(stats).to(x.device)


def radio_statistics_backbone(input_size: int = 64) -> FeatureExtractor:
    """The radio statistics as a :class:`FeatureExtractor` (one input channel; ``input_size``: the
    window side used to probe the feature width)."""
    return FeatureExtractor(RadioStatistics(), {"kind": "radio_statistics"}, 1, input_size=input_size)
