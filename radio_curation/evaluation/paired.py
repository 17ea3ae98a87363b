"""Paired comparison of two training recipes over the same seeds: mean difference and its 95 % interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from radio_curation.errors import RadioCurationError


@dataclass(frozen=True)
class PairedDifference:
    """``a − b`` over paired seeds.

    Attributes
    ----------
    mean_a, mean_b, std_a, std_b : float
        Mean and standard deviation (over seeds, ddof 1) of each arm.
    diff : float
        Mean of the per-seed differences ``a_i − b_i``.
    ci_low, ci_high : float
        95 % Student-t interval of the mean difference.
    seeds : int
        Number of pairs.
    """

    mean_a: float
    mean_b: float
    std_a: float
    std_b: float
    diff: float
    ci_low: float
    ci_high: float
    seeds: int


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """Mean paired difference of ``a`` and ``b`` (same seed at the same position) with a t interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise RadioCurationError(
            f"a paired difference needs two equal-length lists of at least 2 seeds, got {len(a)} and {len(b)}"
        )
    d = a - b
    half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return PairedDifference(
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        std_a=float(a.std(ddof=1)),
        std_b=float(b.std(ddof=1)),
        diff=float(d.mean()),
        ci_low=float(d.mean() - half),
        ci_high=float(d.mean() + half),
        seeds=len(d),
    )
