"""Greedy suppression in priority order: which nodes of a "near-duplicate" graph a one-pass greedy keeps.

Shared by the merge stage (overlapping windows of neighbouring mosaics) and SemDeDup (near-duplicate
features within a cluster).
"""

from __future__ import annotations

import numpy as np

#: Edges per step of :func:`greedy_keep`'s rounds: its temporaries stay at this many, whatever the edges.
EDGE_BLOCK = 1 << 18


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
    blocks = [slice(start, start + EDGE_BLOCK) for start in range(0, len(better), EDGE_BLOCK)]
    while True:
        undecided = state == 0
        if not undecided.any():
            return state == 1
        blocked = np.zeros(n, dtype=bool)
        for block in blocks:
            blocked[worse[block][state[better[block]] != 2]] = True
        state[undecided & ~blocked] = 1
        del undecided, blocked
        # Only undecided nodes change here, so a block's kept nodes are the same before and after the others.
        for block in blocks:
            dropped = worse[block][state[better[block]] == 1]
            state[dropped[state[dropped] == 0]] = 2
