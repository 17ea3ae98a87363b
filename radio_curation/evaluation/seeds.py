"""Results over training seeds: the spread of each setting and paired differences between settings.

A probe's ``±`` is the spread over the folds of one model: it says nothing about how much another
training seed would change the score. Settings (e.g. curated vs random subsamples) are compared over
several seeds each; runs of the same seed are paired (same seed, same everything else but the setting),
and the difference is reported with a Student-t confidence interval over the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from radio_curation.errors import RadioCurationError

#: What ``std`` means in a seed summary, written beside the numbers.
SPREAD_OVER_SEEDS = "std is the standard deviation (ddof=1) over the training seeds of the setting"


@dataclass(frozen=True)
class SeedSpread:
    """A metric over the seeds of one setting."""

    mean: float
    std: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


@dataclass(frozen=True)
class PairedDifference:
    """``setting − reference`` over seeds paired one to one, with its confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "mean": self.mean,
            "ci_low": self.low,
            "ci_high": self.high,
            "n": self.n,
            "confidence": self.confidence,
        }


def seed_spread(values: list[float]) -> SeedSpread:
    """Mean and standard deviation (ddof=1; NaN for one seed) of one setting's per-seed values."""
    x = np.asarray(values, dtype=np.float64)
    return SeedSpread(float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else float("nan"), len(x))


def paired_difference(
    setting: list[float], reference: list[float], confidence: float = 0.95
) -> PairedDifference:
    """Mean of ``setting[i] − reference[i]`` (the same seed ``i``) and its Student-t interval.

    Raises
    ------
    RadioCurationError
        The two lists do not pair up (different lengths), or there is only one pair.
    """
    a, b = np.asarray(setting, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if len(a) != len(b):
        raise RadioCurationError(
            f"paired comparison needs one run per seed in every group; got {len(a)} and {len(b)} runs"
        )
    if len(a) < 2:
        raise RadioCurationError("a paired difference needs at least 2 seeds per group")
    d = a - b
    mean = float(d.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return PairedDifference(mean, mean - half, mean + half, len(d), confidence)
