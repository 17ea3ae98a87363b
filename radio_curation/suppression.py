"""Greedy suppression in priority order: which nodes of a "near-duplicate" graph a one-pass greedy keeps.

Shared by the merge stage (overlapping windows of neighbouring mosaics) and SemDeDup (near-duplicate
features within a cluster).
"""

from __future__ import annotations

import numpy as np


def greedy_keep(better: np.ndarray, worse: np.ndarray, n: int) -> np.ndarray:
    """Which of ``n`` nodes a greedy pass in priority order keeps: a node is dropped when a node it is
    linked to with higher priority (``better[i] -> worse[i]`` edges) is kept.

    Decided in vectorised rounds: a node is kept once every better neighbour is dropped, and dropped as
    soon as one is kept; each round settles at least the best undecided node, so the rounds are as many as
    the longest chain of linked nodes (two or three for overlapping LoTSS mosaics).

    Returns
    -------
    ``[n]`` boolean mask of the kept nodes.
    """
    state = np.zeros(n, dtype=np.int8)  # 0 undecided, 1 kept, 2 dropped
    while True:
        undecided = state == 0
        if not undecided.any():
            return state == 1
        blocked = np.zeros(n, dtype=bool)
        blocked[worse[state[better] != 2]] = True
        state[undecided & ~blocked] = 1
        dropped = worse[state[better] == 1]
        state[dropped[state[dropped] == 0]] = 2
