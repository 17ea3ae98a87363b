"""Rare-class enrichment: how much more of the rare morphologies a subsample holds than a random one.

A class is rare when its share of the pool is below a threshold (1 % by default, the rare radio
morphologies of LoTSS: bent tails, haloes, relics). Curation is meant to raise their share and, at the same
time, not to fill the subsample with empty windows (pure noise, the commonest window of a radio survey).

Shares are counted on small integer label codes (:func:`label_codes`), a block of rows at a time
(:func:`bincount_rows`): at tens of millions of windows, no sorted copy of the label strings and no
per-row int64 array is held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.blocked import bincount_rows, factorise

#: Class of every pool window: ``[N]`` labels, or the ``(classes, codes)`` pair of :func:`label_codes`.
Labels = np.ndarray | tuple[np.ndarray, np.ndarray]


def label_codes(labels: Labels) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct classes of ``labels`` (as strings) and each label's index into them.

    :func:`~radio_curation.evaluation.blocked.factorise`: no sorted copy of all the label strings and no
    int64 codes are held; a ``(classes, codes)`` pair is returned as it is.
    """
    if isinstance(labels, tuple):
        return labels
    return factorise(labels, str)


def rare_classes(labels: Labels, threshold: float = 0.01, exclude: Sequence[str] = ("empty",)) -> list[str]:
    """Classes whose share of ``labels`` (the pool) is below ``threshold``, ``exclude`` left out.

    Parameters
    ----------
    labels : np.ndarray or (np.ndarray, np.ndarray)
        ``[N]`` class of every pool window, or its :func:`label_codes`.
    threshold : float
        Largest pool share of a rare class (exclusive).
    exclude : sequence of str
        Labels that are never rare classes (e.g. windows without a source).

    Returns
    -------
    list of str
        The rare classes, sorted.
    """
    classes, codes = label_codes(labels)
    shares = bincount_rows(codes, minlength=len(classes)) / max(len(codes), 1)
    return sorted(str(v) for v, s in zip(classes, shares, strict=True) if s < threshold and v not in exclude)


@dataclass(frozen=True)
class Enrichment:
    """Rare-class and empty-window shares of a subsample against a random subsample.

    Attributes
    ----------
    rare : tuple of str
        The rare classes.
    rare_subsample, rare_random, rare_pool : float
        Share of windows of any rare class in the subsample, in the random subsample and in the pool (what
        a random subsample holds on average: one random draw of a few rare windows spreads widely).
    empty_subsample, empty_random, empty_pool : float
        Share of empty windows in each.
    """

    rare: tuple[str, ...]
    rare_subsample: float
    rare_random: float
    rare_pool: float
    empty_subsample: float
    empty_random: float
    empty_pool: float

    @property
    def ratio(self) -> float:
        """``rare_subsample / rare_random`` (inf when the random subsample holds none and the subsample some)."""
        return _ratio(self.rare_subsample, self.rare_random)

    @property
    def ratio_pool(self) -> float:
        """``rare_subsample / rare_pool``: the enrichment over a random subsample's expected share."""
        return _ratio(self.rare_subsample, self.rare_pool)

    @property
    def empty_ratio(self) -> float:
        """``empty_subsample / empty_random``: above 1, curation enriched noise."""
        return _ratio(self.empty_subsample, self.empty_random)

    def metrics(self, prefix: str = "enrichment") -> dict[str, float]:
        """Flat ``<prefix>/<figure>`` metrics."""
        return {
            f"{prefix}/rare_subsample": self.rare_subsample,
            f"{prefix}/rare_random": self.rare_random,
            f"{prefix}/ratio": self.ratio,
            f"{prefix}/rare_pool": self.rare_pool,
            f"{prefix}/ratio_pool": self.ratio_pool,
            f"{prefix}/empty_subsample": self.empty_subsample,
            f"{prefix}/empty_random": self.empty_random,
            f"{prefix}/empty_ratio": self.empty_ratio,
            f"{prefix}/empty_pool": self.empty_pool,
        }


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return float("inf") if a > 0 else float("nan")


def enrichment(
    labels: Labels,
    subsample: np.ndarray,
    random: np.ndarray,
    rare: Sequence[str] | None = None,
    empty_label: str = "empty",
    threshold: float = 0.01,
) -> Enrichment:
    """Rare-class and empty-window enrichment of ``subsample`` over ``random`` (rows into ``labels``).

    Parameters
    ----------
    labels : np.ndarray or (np.ndarray, np.ndarray)
        ``[N]`` class of every pool window, or its :func:`label_codes` (to factorise the labels once for
        several calls).
    subsample, random : np.ndarray
        Pool rows of the curated and of the random subsample.
    rare : sequence of str, optional
        The rare classes; None: :func:`rare_classes` of the pool with ``threshold``.
    empty_label : str
        Label of windows without a source.
    threshold : float
        See :func:`rare_classes`.

    Returns
    -------
    Enrichment
    """
    classes, codes = label_codes(labels)
    subsample, random = np.asarray(subsample, dtype=np.int64), np.asarray(random, dtype=np.int64)
    if len(subsample) == 0 or len(random) == 0:
        raise RadioCurationError("enrichment needs a non-empty subsample and random subsample")
    rare = tuple(rare_classes((classes, codes), threshold, (empty_label,)) if rare is None else rare)

    def share(rows: np.ndarray | None, names: Sequence[str]) -> float:
        counts = bincount_rows(codes, rows, minlength=len(classes))
        return float(counts[np.isin(classes, list(names))].sum() / len(codes if rows is None else rows))

    return Enrichment(
        rare=rare,
        rare_subsample=share(subsample, rare),
        rare_random=share(random, rare),
        rare_pool=share(None, rare),
        empty_subsample=share(subsample, [empty_label]),
        empty_random=share(random, [empty_label]),
        empty_pool=share(None, [empty_label]),
    )
