"""Codes, counts and group orders computed a block of rows at a time equal their whole-column forms."""

from __future__ import annotations

import numpy as np
import pytest

from radio_curation.evaluation import blocked


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(blocked, "ROW_BLOCK", 97)  # blocks that cut runs of equal values


def test_factorise_matches_unique_across_blocks():
    rng = np.random.default_rng(0)
    values = rng.choice([841, 3, 77, 12], 1000).astype(np.int32)
    distinct, codes = blocked.factorise(values)
    expected, inverse = np.unique(values, return_inverse=True)
    np.testing.assert_array_equal(distinct, expected)
    np.testing.assert_array_equal(codes, inverse)
    assert codes.dtype == np.uint8
    labels = np.array(["FRII", "empty", 3], dtype=object)[rng.integers(0, 3, 500)]
    classes, label_codes = blocked.factorise(labels, str)
    assert classes.tolist() == ["3", "FRII", "empty"]
    np.testing.assert_array_equal(classes[label_codes], labels.astype(str))


def test_grouped_order_is_a_stable_sort_in_int32():
    keys = np.random.default_rng(1).integers(0, 13, 1000).astype(np.int32)
    order, counts = blocked.grouped_order(keys, 15)
    np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
    assert order.dtype == np.int32
    np.testing.assert_array_equal(counts, np.bincount(keys, minlength=15))


def test_bincount_rows_counts_the_rows_given():
    rng = np.random.default_rng(2)
    values = rng.integers(0, 20, 1000).astype(np.uint16)
    rows = np.sort(rng.choice(1000, 400, replace=False))
    np.testing.assert_array_equal(
        blocked.bincount_rows(values, rows, 25), np.bincount(values[rows], minlength=25)
    )
    np.testing.assert_array_equal(blocked.bincount_rows(values), np.bincount(values))
