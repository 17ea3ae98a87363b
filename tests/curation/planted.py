"""Synthetic feature vectors with known, unevenly sized cluster structure."""

from __future__ import annotations

import numpy as np


def planted(
    sizes: list[int], dim: int = 16, separation: float = 12.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs (unit variance) around centres ``separation`` apart on average; rows shuffled.

    Returns the float32 features ``[sum(sizes), dim]`` and each row's planted cluster.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), dim)) * separation / np.sqrt(2)
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    x = centres[labels] + rng.standard_normal((len(labels), dim))
    return x.astype(np.float32), labels
