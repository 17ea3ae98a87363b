"""The measurement's probes: source-grouped truth kNN and hand-made radio statistics."""

from __future__ import annotations

import numpy as np
import pytest

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.radio_stats import STATISTICS, radio_statistics
from radio_curation.evaluation.truth_probe import grouped_knn_balanced_accuracy, grouped_knn_recall


def test_grouped_folds_do_not_reward_recognising_a_source():
    # 60 sources of 4 near-identical windows each; classes are assigned to sources at random, so
    # only recognising the source itself predicts the class.
    rng = np.random.default_rng(0)
    source = np.repeat(np.arange(60), 4)
    centre = rng.normal(size=(60, 16))
    x = centre[source] + 0.01 * rng.normal(size=(240, 16))
    label = np.array(["a", "b", "c"])[rng.integers(0, 3, 60)][source]
    grouped = grouped_knn_balanced_accuracy(x, label, source, k=3)
    leaky = grouped_knn_balanced_accuracy(x, label, np.arange(240), k=3)  # every window its own group
    assert leaky > 0.9
    assert grouped < 0.55  # chance is 1/3


def test_separable_classes_score_high_and_rare_classes_weigh_as_much_as_common_ones():
    rng = np.random.default_rng(1)
    sizes = {"common": 400, "rare": 20}
    label = np.repeat(list(sizes), list(sizes.values()))
    x = rng.normal(size=(420, 4))
    x[label == "rare", 0] += 10.0
    source = np.arange(420)
    assert grouped_knn_balanced_accuracy(x, label, source) > 0.95
    # Features that ignore the rare class: balanced accuracy ~ 0.5 although 95 % of windows are right.
    blind = rng.normal(size=(420, 4))
    assert grouped_knn_balanced_accuracy(blind, label, source) < 0.65
    # ... and the per-class recall says which class is lost, with the balanced accuracy as its mean.
    recall = grouped_knn_recall(blind, label, source)
    assert set(recall) == {"common", "rare"}
    assert recall["common"] > 0.9 and recall["rare"] < 0.3
    assert np.mean(list(recall.values())) == pytest.approx(
        grouped_knn_balanced_accuracy(blind, label, source)
    )


def test_classes_with_too_few_sources_are_left_out_and_too_few_classes_is_an_error():
    rng = np.random.default_rng(2)
    label = np.array(["a"] * 50 + ["b"] * 50 + ["c"] * 6)
    source = np.concatenate([np.arange(100), np.zeros(6, int) + 999])  # "c": one source
    x = rng.normal(size=(106, 4))
    x[50:100, 0] += 8.0
    assert grouped_knn_balanced_accuracy(x, label, source) > 0.95  # "c" left out, not scored at 0
    with pytest.raises(RadioCurationError, match="two classes"):
        keep = np.r_[0:50, 100:106]
        grouped_knn_balanced_accuracy(x[keep], label[keep], source[keep])


def _gaussian(size: int, x: float, y: float, sx: float, sy: float, peak: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return peak * np.exp(-((xx - x) ** 2 / (2 * sx**2) + (yy - y) ** 2 / (2 * sy**2)))


def test_radio_statistics_measure_noise_signal_extent_shape_and_islands():
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 1e-4, size=(4, 64, 64))
    windows = noise.copy()
    windows[1] += _gaussian(64, 32, 32, 2, 2, 5e-3)  # a compact source, SNR 50
    windows[2] += _gaussian(64, 32, 32, 12, 2, 5e-3)  # elongated
    windows[3] += _gaussian(64, 6, 32, 2, 2, 5e-3) + _gaussian(64, 57, 32, 2, 2, 5e-3)  # two islands
    s = dict(zip(STATISTICS, radio_statistics(windows).T, strict=True))
    assert radio_statistics(windows).shape == (4, len(STATISTICS))
    assert s["log_rms"] == pytest.approx(np.full(4, -4.0), abs=0.1)  # robust to the sources
    assert s["log_peak_snr"][0] < 0.75 and s["log_peak_snr"][1] == pytest.approx(np.log10(50), abs=0.05)
    assert s["log_area_5sigma"][2] > s["log_area_5sigma"][1] > s["log_area_5sigma"][0]
    assert s["axis_ratio"][2] < 0.3 < 0.8 < s["axis_ratio"][1]
    assert s["islands"].tolist() == [0, 1, 1, 2]
    assert s["central_fraction"][1] > 0.95 and s["central_fraction"][3] < 0.1
