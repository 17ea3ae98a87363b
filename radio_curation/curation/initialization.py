"""Greedy k-means++ initialisation (Arthur & Vassilvitskii 2007), in torch on the CPU or a CUDA device.

Each new centre is the best of ``2 + ln k`` candidates drawn by D² sampling: the one that lowers the
potential (the sum of squared distances to the nearest centre) most. This is the rule of scikit-learn's
``_kmeans_plusplus`` and of the hierarchical k-means reference code (Vo et al. 2024); one candidate per step
is plain k-means++ (faiss' ``KMEANS_PLUS_PLUS``), which starts Lloyd iterations from a worse place.

Every step would cost a pass over all points per candidate. By the triangle inequality a candidate ``c``
can only take a point ``x`` from its nearest centre ``a`` if ``|c - a| < 2 |x - a|``. The candidate-centre
distances are few (``2 + ln k`` times the centres so far), so only the points that some candidate can reach
are compared with the candidates: once centres are many, a step touches the neighbourhood of its
candidates rather than all the data (how much that saves depends on the data: little for isotropic
Gaussian blobs in 384 dimensions, where every point of a blob is about as far from every other).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from radio_curation.curation.backends import RowView

#: Above this fraction of the points, one product with all points beats gathering the touched rows first.
GATHER_FRACTION = 0.25
#: Rows reduced at once for the mean and the squared norms (whole-matrix temporaries would double the memory).
MEAN_BLOCK_ROWS = 65536
#: Relative slack on the pruning bound, so float32 rounding never prunes a centre that a candidate reaches.
PRUNE_SLACK = 1e-3


def n_local_trials(k: int) -> int:
    """Candidates per step: ``2 + floor(ln k)``, as in scikit-learn and the reference code."""
    return 2 + int(math.log(k))


def _sq_dist(a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """``[len(a), len(b)]`` squared L2 distances, clamped at 0."""
    return torch.addmm(a_sq[:, None] + b_sq[None, :], a, b.T, beta=1.0, alpha=-2.0).clamp_min_(0.0)


@contextmanager
def _one_cpu_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def greedy_kmeans_plusplus(
    x: np.ndarray | RowView, k: int, seed: int, device: str = "cpu", n_candidates: int | None = None
) -> np.ndarray:
    """``k`` initial centroids of ``x`` ``[n, d]`` (rows of ``x``) by greedy k-means++.

    Parameters
    ----------
    x
        ``[n, d]`` points (any float dtype, or a row view), ``n >= k``; squared L2 distances (on L2-normalised points these rank like
        cosine distances).
    k
        Number of centroids.
    seed
        Seeds the draws (numpy, on the host): the same seed picks the same rows on every device, up to
        float rounding in the distances.
    device
        torch device of the distance computations (``cpu``, ``cuda``, ``cuda:<n>``). On the CPU they run
        on one thread: each step's products are thin (``2 + ln k`` columns), and the threads' barriers at
        every one of the ``k`` steps cost more than they gain (20x slower with two threads on a shared,
        busy node).
    n_candidates
        Candidates per step (default :func:`n_local_trials`; 1 is plain k-means++).

    Returns
    -------
    numpy.ndarray
        ``[k, d]`` float32 centroids (rows of ``x``). The work holds one centred float32 copy of ``x`` on
        ``device``.
    """
    if torch.device(device).type == "cpu":
        with _one_cpu_thread():
            return _greedy(x, k, seed, device, n_candidates)
    return _greedy(x, k, seed, device, n_candidates)


def _greedy(x: np.ndarray | RowView, k: int, seed: int, device: str, n_candidates: int | None) -> np.ndarray:
    n, dim = x.shape
    trials = n_local_trials(k) if n_candidates is None else int(n_candidates)
    rng = np.random.default_rng(seed)
    host = np.ascontiguousarray(x[:], dtype=np.float32)
    points = torch.from_numpy(host).to(device)
    # k-means is translation-invariant; centring keeps the |x|² + |c|² - 2 x·c distances accurate in float32.
    mean = sum(block.sum(0, dtype=torch.float64) for block in points.split(MEAN_BLOCK_ROWS)) / max(n, 1)
    mean = mean.float()
    # In place when ``points`` is already a copy of x's rows: the work holds one float32 copy, not two.
    shared = points.device.type == "cpu" and np.shares_memory(host, x[:1])
    points = points - mean if shared else points.sub_(mean)
    sq = torch.cat([(block * block).sum(1) for block in points.split(MEAN_BLOCK_ROWS)])
    centres = torch.empty(k, dim, dtype=torch.float32, device=points.device)
    centres_sq = torch.empty(k, dtype=torch.float32, device=points.device)
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n)
    centres[0], centres_sq[0] = points[chosen[0]], sq[chosen[0]]
    dist = _sq_dist(points, sq, centres[:1], centres_sq[:1])[:, 0]
    owner = torch.zeros(n, dtype=torch.int64, device=points.device)
    for i in range(1, k):
        cumulative = torch.cumsum(dist, 0, dtype=torch.float64)
        draws = torch.from_numpy(rng.random(trials) * float(cumulative[-1])).to(points.device)
        candidates = torch.searchsorted(cumulative, draws, right=True).clamp_max_(n - 1)
        cand, cand_sq = points[candidates], sq[candidates]
        # |c - a|² for every candidate c and centre a; c can take x (now nearest to a) only if |c - a|² < 4 D(x).
        reach = _sq_dist(cand, cand_sq, centres[:i], centres_sq[:i])
        slack = PRUNE_SLACK * (cand_sq.max() + centres_sq[:i])
        reachable = (reach[:, owner] < (4.0 * (1.0 + PRUNE_SLACK)) * dist + slack[owner]).any(0)
        rows = torch.nonzero(reachable).flatten()
        d_rows = dist[rows]
        if len(rows) > GATHER_FRACTION * n:
            to_cand = _sq_dist(points, sq, cand, cand_sq)[rows]
        else:
            to_cand = _sq_dist(points.index_select(0, rows), sq[rows], cand, cand_sq)
        gain = (d_rows[:, None] - torch.minimum(d_rows[:, None], to_cand)).sum(0, dtype=torch.float64)
        best = int(torch.argmax(gain)) if len(rows) else 0
        chosen[i] = int(candidates[best])
        centres[i], centres_sq[i] = cand[best], cand_sq[best]
        moved = to_cand[:, best] < d_rows
        dist[rows[moved]] = to_cand[moved, best]
        owner[rows[moved]] = i
    return np.ascontiguousarray(x[chosen], dtype=np.float32)
