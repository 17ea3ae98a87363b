"""Greedy suppression in priority order: which nodes of a "near-duplicate" graph a one-pass greedy keeps.

SemDeDup (near-duplicate features within a cluster) decides a whole graph at once (:func:`greedy_keep`);
the merge stage (overlapping windows of neighbouring mosaics) decides its graph as its sweep finds it
(:func:`settle`), so it never holds all of it.
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


def settle(
    better: np.ndarray, worse: np.ndarray, state: np.ndarray, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decide in ``state`` what a partly known graph already decides of :func:`greedy_keep`'s answer.

    ``state`` holds each node's decision (0 undecided, 1 kept, 2 dropped); nodes below ``lo`` are decided,
    and those from ``lo`` to ``hi`` are complete: every edge into them is among ``better -> worse`` or
    was left out of an earlier call's answer. A complete node is kept once every better neighbour is
    dropped; any node is dropped as soon as a better neighbour is kept. Both follow from the greedy
    pass's rule whatever edges are still to come, so calls made as the graph grows, the last with every
    node complete, decide every node as :func:`greedy_keep` does.

    Returns
    -------
    tuple
        The edges still needed: those into undecided nodes from nodes not dropped.
    """
    while True:
        free = state[lo:hi] == 0
        inside = (worse >= lo) & (worse < hi) & (state[better] != 2)
        free[worse[inside] - lo] = False
        state[lo:hi][free] = 1
        dropped = worse[state[better] == 1]
        dropped = dropped[state[dropped] == 0]
        state[dropped] = 2
        live = (state[worse] == 0) & (state[better] != 2)
        better, worse = better[live], worse[live]
        if not free.any() and not len(dropped):
            return better, worse
