"""Frozen-feature probes on labelled images: logistic regression and a weighted kNN classifier.

Both probes are scored the same way: stratified k-fold cross-validation (mean ± std of accuracy and
macro-F1 over the folds) and, when the dataset ships a fixed train/test split, that split as well.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.similarity import l2_normalise

#: A probe: fit on (train features, train labels[, groups=train groups]), predict labels of the test
#: features. Groups keep the rows of one source on one side of any inner split.
Classifier = Callable[..., np.ndarray]


@dataclass
class ProbeResult:
    """Scores of one probe.

    Attributes
    ----------
    accuracy, macro_f1 : list of float
        Per-fold scores of the k-fold cross-validation.
    confusion : np.ndarray
        ``[C, C]`` confusion matrix of the out-of-fold predictions (rows: true class).
    split_accuracy, split_macro_f1 : float or None
        Scores on the dataset's fixed test split, when it has one.
    split_confusion : np.ndarray or None
        Confusion matrix on the fixed test split.
    info : dict
        Details such as the regularisation chosen in each fold.
    """

    accuracy: list[float]
    macro_f1: list[float]
    confusion: np.ndarray
    split_accuracy: float | None = None
    split_macro_f1: float | None = None
    split_confusion: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat metrics (``<prefix>/accuracy_mean`` …) for ``metrics.json`` and the trackers."""
        out = {
            f"{prefix}/accuracy_mean": float(np.mean(self.accuracy)),
            f"{prefix}/accuracy_std": float(np.std(self.accuracy)),
            f"{prefix}/macro_f1_mean": float(np.mean(self.macro_f1)),
            f"{prefix}/macro_f1_std": float(np.std(self.macro_f1)),
        }
        if self.split_accuracy is not None:
            out[f"{prefix}/split_accuracy"] = float(self.split_accuracy)
            out[f"{prefix}/split_macro_f1"] = float(self.split_macro_f1)
        return out


def logistic_classifier(
    cs: Sequence[float] = tuple(np.logspace(-4, 4, 9)),
    inner_folds: int = 3,
    max_iter: int = 2000,
    seed: int = 0,
    record: dict | None = None,
) -> Classifier:
    """Logistic regression on standardised features, ``C`` chosen by inner stratified cross-validation.

    Parameters
    ----------
    cs : sequence of float
        Inverse regularisation strengths to search.
    inner_folds : int
        Folds of the inner cross-validation (reduced automatically for tiny classes).
    max_iter : int
        L-BFGS iteration limit.
    seed : int
        Seed of the inner fold shuffling.
    record : dict, optional
        Receives ``chosen_C`` (one per fit) and ``convergence_warnings`` (count).

    Returns
    -------
    Classifier
        ``classify(x_train, y_train, x_test, groups=None) -> predicted labels``.
    """
    record = record if record is not None else {}
    record.setdefault("chosen_C", [])
    record.setdefault("convergence_warnings", 0)

    def classify(
        x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, groups: np.ndarray | None = None
    ) -> np.ndarray:
        # Inner folds, like the outer ones, keep each group (source) on one side when groups are given.
        per_class = [
            int((y_train == c).sum()) if groups is None else len(np.unique(groups[y_train == c]))
            for c in np.unique(y_train)
        ]
        folds = min(inner_folds, min(per_class))
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        fit_kwargs = {}
        if folds >= 2 and len(cs) > 1:
            if groups is None:
                inner = StratifiedKFold(folds, shuffle=True, random_state=seed)
            else:
                inner = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
                fit_kwargs["groups"] = groups
            model = GridSearchCV(model, {"logisticregression__C": list(cs)}, cv=inner, scoring="accuracy")
        # One BLAS thread: L-BFGS on a few hundred rows is latency-bound, and with torch's threads beside
        # it a multi-threaded BLAS spent 10x longer synchronising than computing (measured on 2 cores).
        with warnings.catch_warnings(record=True) as caught, threadpool_limits(1, user_api="blas"):
            # Very weak regularisation on separable features stops at max_iter; the probe is still
            # valid, so the warning is counted and reported rather than raised.
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(x_train, y_train, **fit_kwargs)
        for w in caught:
            if issubclass(w.category, ConvergenceWarning):
                record["convergence_warnings"] += 1
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        chosen = model.best_params_["logisticregression__C"] if hasattr(model, "best_params_") else cs[0]
        record["chosen_C"].append(float(chosen))
        return model.predict(x_test)

    return classify


def knn_classifier(k: int = 20, temperature: float = 0.07, block_elements: int = 1 << 22) -> Classifier:
    """Cosine-similarity kNN with temperature-weighted votes (weight ``exp(sim / T)``).

    Parameters
    ----------
    k : int
        Number of neighbours (capped at the training-set size).
    temperature : float
        Vote temperature ``T``; small values trust the closest neighbours most.
    block_elements : int
        Similarities per block: test rows are scored ``block_elements // n_train`` (at least one) at a time,
        so memory stays at about 16 bytes per element (the similarities, their negation, argpartition's
        indices) however many training rows there are.

    Returns
    -------
    Classifier
        ``classify(x_train, y_train, x_test, groups=None) -> predicted labels``.
    """
    if k < 1 or temperature <= 0:
        raise RadioCurationError(
            f"kNN needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}"
        )

    def classify(
        x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, groups: np.ndarray | None = None
    ) -> np.ndarray:
        # Groups do not matter here: nothing is fitted beyond storing the training rows.
        train = l2_normalise(x_train)
        n_classes = int(y_train.max()) + 1
        kk = min(k, len(train))
        predictions = np.empty(len(x_test), dtype=np.int64)
        chunk = max(1, block_elements // len(train))
        for start in range(0, len(x_test), chunk):
            predictions[start : start + chunk] = _knn_votes(
                l2_normalise(x_test[start : start + chunk]), train, y_train, kk, temperature, n_classes
            ).argmax(axis=1)
        return predictions

    return classify


def _knn_votes(
    query: np.ndarray, train: np.ndarray, y_train: np.ndarray, k: int, temperature: float, n_classes: int
) -> np.ndarray:
    """``[Q, n_classes]`` votes of each query's ``k`` most similar training rows (unit rows both)."""
    sim = query @ train.T
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    top_sim = np.take_along_axis(sim, top, axis=1)
    weights = np.exp((top_sim - 1.0) / temperature)  # shifted by the max possible sim: no overflow
    votes = np.zeros((len(sim), n_classes))
    np.add.at(votes, (np.arange(len(sim))[:, None], y_train[top]), weights)
    return votes


def evaluate_probe(
    features: np.ndarray,
    labels: np.ndarray,
    classify: Classifier,
    folds: int = 5,
    split: np.ndarray | None = None,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> ProbeResult:
    """Score ``classify`` by stratified k-fold cross-validation and on the fixed split if given.

    With ``groups``, the folds are stratified group folds: rows of one group (e.g. the overlapping
    windows of one catalogue source) are all in the training part or all in the test part of a fold, so
    a probe is never scored on a near-copy of what it was fitted on.

    Parameters
    ----------
    features : np.ndarray
        ``[N, D]`` frozen features.
    labels : np.ndarray
        ``[N]`` integer class labels ``0..C-1``.
    classify : Classifier
        From :func:`logistic_classifier` or :func:`knn_classifier`.
    folds : int
        Number of outer folds (at most the size of the smallest class).
    split : np.ndarray, optional
        ``[N]`` strings ``train``/``test``: the dataset's fixed split.
    seed : int
        Seed of the fold shuffling.
    groups : np.ndarray, optional
        ``[N]`` group of each row; None: every row is its own group.

    Returns
    -------
    ProbeResult
    """
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or len(features) != len(labels):
        raise RadioCurationError(
            f"probe needs features [N, D] and labels [N], got {features.shape} and {labels.shape}"
        )
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if len(present) < 2:
        raise RadioCurationError("the labelled set has a single class; a probe needs at least two")
    if present.min() < folds:
        raise RadioCurationError(
            f"the smallest class has {present.min()} images, fewer than eval.folds={folds}; "
            "lower eval.folds or pick a dataset subset with more images per class"
        )
    n_classes = len(counts)
    accuracy, macro_f1 = [], []
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    if groups is None:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:
        groups = np.asarray(groups)
        per_class = min(len(np.unique(groups[labels == c])) for c in np.flatnonzero(counts))
        if per_class < folds:
            raise RadioCurationError(
                f"a class has {per_class} distinct sources, fewer than eval.folds={folds}: folds are split "
                "by source so that overlapping windows of one source never sit on both sides; lower "
                "eval.folds or label more of the sky"
            )
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in splitter.split(features, labels, groups):
        inner_groups = None if groups is None else groups[train_idx]
        predicted = classify(features[train_idx], labels[train_idx], features[test_idx], groups=inner_groups)
        accuracy.append(float(accuracy_score(labels[test_idx], predicted)))
        macro_f1.append(float(f1_score(labels[test_idx], predicted, average="macro", zero_division=0)))
        confusion += confusion_matrix(labels[test_idx], predicted, labels=np.arange(n_classes))
    result = ProbeResult(accuracy=accuracy, macro_f1=macro_f1, confusion=confusion)
    if split is not None:
        split = np.asarray(split).astype(str)
        train, test = split == "train", split == "test"
        if train.any() and test.any():
            predicted = classify(features[train], labels[train], features[test])
            result.split_accuracy = float(accuracy_score(labels[test], predicted))
            result.split_macro_f1 = float(f1_score(labels[test], predicted, average="macro", zero_division=0))
            result.split_confusion = confusion_matrix(labels[test], predicted, labels=np.arange(n_classes))
    return result
