"""Probes: ≈100% on separable features, ≈ chance on random ones, fixed split scored separately."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.probes import evaluate_probe, knn_classifier, logistic_classifier


def _separable(n: int = 240, dim: int = 16, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = 6.0 * np.eye(classes, dim)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def _random(n: int = 300, dim: int = 16, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), rng.integers(0, 2, n)


@pytest.mark.parametrize(
    "make",
    [lambda r: logistic_classifier(cs=[0.01, 1.0, 100.0], record=r), lambda r: knn_classifier()],
    ids=["logistic", "knn"],
)
def test_probe_separates_separable_features(make):
    x, y = _separable()
    result = evaluate_probe(x, y, make({}), folds=5)
    assert len(result.accuracy) == 5
    assert np.mean(result.accuracy) > 0.98
    assert np.mean(result.macro_f1) > 0.98
    assert result.confusion.sum() == len(y)
    assert np.trace(result.confusion) >= 0.98 * len(y)


@pytest.mark.parametrize(
    "make",
    [lambda r: logistic_classifier(cs=[0.01, 1.0, 100.0], record=r), lambda r: knn_classifier()],
    ids=["logistic", "knn"],
)
def test_probe_is_at_chance_on_random_features(make):
    x, y = _random()
    result = evaluate_probe(x, y, make({}), folds=5)
    assert 0.35 < np.mean(result.accuracy) < 0.65


def test_logistic_probe_records_chosen_regularisation_per_fold():
    x, y = _separable(classes=2)
    record: dict = {}
    evaluate_probe(x, y, logistic_classifier(cs=[0.01, 1.0], record=record), folds=4)
    assert len(record["chosen_C"]) == 4
    assert set(record["chosen_C"]) <= {0.01, 1.0}


def test_fixed_split_is_scored_on_its_test_part():
    x, y = _separable(n=200, classes=2)
    split = np.where(np.arange(200) < 150, "train", "test")
    # Flip the labels of the test part: a probe trained on the train part must then score 0 there.
    y_flipped = y.copy()
    y_flipped[150:] = 1 - y_flipped[150:]
    result = evaluate_probe(x, y_flipped, knn_classifier(k=5), folds=3, split=split)
    assert result.split_accuracy == pytest.approx(0.0, abs=0.03)
    assert result.split_confusion.sum() == 50
    metrics = result.metrics("knn")
    assert metrics["knn/split_accuracy"] == result.split_accuracy
    assert metrics["knn/accuracy_mean"] == pytest.approx(np.mean(result.accuracy))


def test_knn_votes_are_temperature_weighted():
    # One very close neighbour of class 1 against two farther ones of class 0: a low temperature trusts
    # the closest, a high temperature counts heads.
    train = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]], dtype=np.float32)
    labels = np.array([1, 0, 0])
    query = np.array([[1.0, 0.05]], dtype=np.float32)
    assert knn_classifier(k=3, temperature=0.05)(train, labels, query)[0] == 1
    assert knn_classifier(k=3, temperature=100.0)(train, labels, query)[0] == 0


def test_knn_memory_does_not_grow_with_the_training_rows():
    # A block of similarities of every test row against every training row would grow by 16 bytes per
    # training row and test row (82 MB from 20,000 to 40,000 training rows for 256 test rows).
    rng = np.random.default_rng(0)
    query = rng.normal(size=(256, 8)).astype(np.float32)

    def peak(n_train):
        train = rng.normal(size=(n_train, 8)).astype(np.float32)
        labels = np.arange(n_train) % 3
        tracemalloc.start()
        try:
            knn_classifier(k=5)(train, labels, query)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(20_000), peak(40_000)
    assert large - small < 8e6, (small, large)
    train = rng.normal(size=(3000, 8)).astype(np.float32)
    labels = np.arange(3000) % 3
    assert np.array_equal(  # blocks of one test row score like one block of all
        knn_classifier(k=5, block_elements=1)(train, labels, query),
        knn_classifier(k=5, block_elements=1 << 30)(train, labels, query),
    )


def test_probe_rejects_too_small_classes():
    x, y = _separable(n=20, classes=2)
    y[:] = 0
    y[:3] = 1
    with pytest.raises(RadioCurationError, match=r"fewer than eval\.folds"):
        evaluate_probe(x, y, knn_classifier(), folds=5)


def test_folds_grouped_by_source_do_not_score_a_probe_on_copies_of_its_training_windows():
    # 60 sources with a random class each and no class signal; every source is seen by 4 overlapping
    # windows, i.e. 4 near-identical feature rows.
    rng = np.random.default_rng(0)
    sources = rng.normal(size=(60, 16))
    source_class = np.tile([0, 1], 30)
    group = np.repeat(np.arange(60), 4)
    x = (sources[group] + 0.01 * rng.normal(size=(240, 16))).astype(np.float32)
    y = source_class[group]
    leaky = evaluate_probe(x, y, knn_classifier(k=1), folds=5)
    grouped = evaluate_probe(x, y, knn_classifier(k=1), folds=5, groups=group)
    assert np.mean(leaky.accuracy) > 0.95  # a copy of each test window is in the training folds
    assert np.mean(grouped.accuracy) < 0.7  # chance, as it should be without class signal
    with pytest.raises(RadioCurationError, match="distinct sources"):
        evaluate_probe(x[:24], y[:24], knn_classifier(k=1), folds=5, groups=group[:24])


def test_logistic_probe_chooses_its_regularisation_on_folds_grouped_by_source(monkeypatch):
    from sklearn import model_selection

    seen = []
    real = model_selection.StratifiedGroupKFold.split

    def split(self, x, y=None, groups=None):
        seen.append(groups)
        yield from real(self, x, y, groups)

    monkeypatch.setattr(model_selection.StratifiedGroupKFold, "split", split)
    rng = np.random.default_rng(1)
    group = np.repeat(np.arange(40), 3)
    y = np.tile([0, 1], 20)[group]
    x = (rng.normal(size=(40, 8))[group] + 0.01 * rng.normal(size=(120, 8))).astype(np.float32)
    record: dict = {}
    evaluate_probe(x, y, logistic_classifier(cs=[0.01, 1.0], record=record), folds=4, groups=group)
    # One outer split, then one inner split per outer fold, each seeing only its training rows' groups.
    assert len(seen) == 1 + 4 and len(record["chosen_C"]) == 4
    assert all(g is not None and set(np.unique(g)) < set(group) for g in seen[1:])
