"""Greedy suppression: the vectorised rounds, in edge blocks, keep what a sequential pass keeps."""

from __future__ import annotations

import numpy as np
import pytest

from radio_curation.suppression import greedy_keep


def _sequential(better, worse, n):
    """Nodes in priority order (better before worse): keep one unless a kept node is linked to it."""
    kept = np.zeros(n, dtype=bool)
    # Priority: node i before node j when i < j (the edges below all run from lower to higher numbers).
    for node in range(n):
        kept[node] = not kept[better[worse == node]].any()
    return kept


@pytest.mark.parametrize("edge_block", [5, 1 << 18])
def test_greedy_keep_in_edge_blocks_equals_the_sequential_pass(monkeypatch, edge_block):
    monkeypatch.setattr("radio_curation.suppression.EDGE_BLOCK", edge_block)
    rng = np.random.default_rng(0)
    n = 300
    a, b = rng.integers(0, n, (2, 900))
    a, b = a[a != b], b[a != b]
    better, worse = np.minimum(a, b), np.maximum(a, b)
    kept = greedy_keep(better, worse, n)
    assert np.array_equal(kept, _sequential(better, worse, n))
    assert 0 < kept.sum() < n
