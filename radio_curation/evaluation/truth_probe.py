"""Balanced kNN accuracy on truth classes, cross-validated with every source's windows in one fold.

Overlapping windows of one source look alike; if some are in the training folds and others in the test
fold, kNN finds the source, not the class. Folds are therefore grouped by the source that labels a window,
and the score is the balanced accuracy (mean per-class recall), so rare classes weigh as much as common
ones.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import recall_score
from sklearn.model_selection import StratifiedGroupKFold

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.probes import knn_classifier


def grouped_knn_recall(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    folds: int = 5,
    k: int = 20,
    temperature: float = 0.07,
    seed: int = 0,
) -> dict[str, float]:
    """Out-of-fold recall of each class of a cosine kNN on standardised features, folds grouped by source.

    Classes with windows of fewer than ``folds`` sources cannot be in every fold and are left out. Each
    feature is standardised with the training folds' mean and std (so that the cosine compares deviations
    from the typical window, the same conditioning for every representation).

    Parameters
    ----------
    features : np.ndarray
        ``[N, D]`` features.
    labels : np.ndarray
        ``[N]`` class of each window.
    groups : np.ndarray
        ``[N]`` source of each window: all windows of a source fall in the same fold.
    folds : int
        Number of folds (at most the number of sources of the rarest class).
    k, temperature : int, float
        kNN neighbours and vote temperature (see :func:`radio_curation.evaluation.probes.knn_classifier`).
    seed : int
        Seed of the fold assignment.

    Returns
    -------
    dict
        Class → share of its windows predicted as that class, for every class scored.
    """
    labels, groups = np.asarray(labels).astype(str), np.asarray(groups)
    names = np.unique(labels)
    enough = [c for c in names if len(np.unique(groups[labels == c])) >= folds]
    keep = np.isin(labels, enough)
    if len(enough) < 2:
        raise RadioCurationError(
            f"a truth probe needs two classes with windows of at least {folds} sources each; "
            f"only {enough} of {names.tolist()} have them"
        )
    x = np.asarray(features, dtype=np.float32)[keep]
    scored, y = np.unique(labels[keep], return_inverse=True)
    groups = groups[keep]
    classify = knn_classifier(k=k, temperature=temperature)
    predicted = np.empty_like(y)
    for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(x, y, groups):
        mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
        predicted[test] = classify((x[train] - mean) / std, y[train], (x[test] - mean) / std)
    recall = recall_score(y, predicted, labels=np.arange(len(scored)), average=None, zero_division=0)
    return {str(name): float(r) for name, r in zip(scored, recall, strict=True)}


def grouped_knn_balanced_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    folds: int = 5,
    k: int = 20,
    temperature: float = 0.07,
    seed: int = 0,
) -> float:
    """Balanced accuracy (mean per-class recall) of :func:`grouped_knn_recall`, with the same arguments."""
    return balanced_accuracy(grouped_knn_recall(features, labels, groups, folds, k, temperature, seed))


def balanced_accuracy(recall: dict[str, float]) -> float:
    """Mean of the per-class recalls of :func:`grouped_knn_recall`."""
    return float(np.mean(list(recall.values())))
