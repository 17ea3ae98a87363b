"""k-means initialisations: greedy k-means++ (Arthur & Vassilvitskii 2007), in torch on the CPU or a CUDA
device, and k-means‖ (Bahmani et al. 2012), which reaches k-means++'s quality in a few passes over the points.

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

k-means++ still takes ``k`` sequential steps over the points. k-means‖ replaces them by a few rounds, each
drawing about ``oversampling × k`` points at once by D² sampling and updating every point's distance with
one nearest-centroid search of the backend (blocks of rows, in their stored dtype); the ``O(rounds × k)``
points drawn, weighted by the points nearest to each, are then reduced to ``k`` by weighted greedy k-means++.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from radio_curation.curation.backends import KMeansBackend, Points, RowView
from radio_curation.curation.sharded import derive_seed, gather_rows, random_keys, random_rows

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
    x: np.ndarray | RowView,
    k: int,
    seed: int,
    device: str = "cpu",
    n_candidates: int | None = None,
    weights: np.ndarray | None = None,
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
    weights
        ``[n]`` non-negative weight of each point (default: 1 each): the draws and the potential count a
        point ``weights[i]`` times (the reduction step of :func:`kmeans_parallel`).

    Returns
    -------
    numpy.ndarray
        ``[k, d]`` float32 centroids (rows of ``x``). The work holds one centred float32 copy of ``x`` on
        ``device``.
    """
    if torch.device(device).type == "cpu":
        with _one_cpu_thread():
            return _greedy(x, k, seed, device, n_candidates, weights)
    return _greedy(x, k, seed, device, n_candidates, weights)


def _greedy(
    x: np.ndarray | RowView,
    k: int,
    seed: int,
    device: str,
    n_candidates: int | None,
    weights: np.ndarray | None,
) -> np.ndarray:
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
    if weights is None:
        w = None
        chosen[0] = rng.integers(n)
    else:
        w = torch.from_numpy(np.asarray(weights, dtype=np.float64)).to(points.device)
        cumulative = torch.cumsum(w, 0)
        draw = torch.tensor([rng.random() * float(cumulative[-1])], dtype=torch.float64, device=w.device)
        chosen[0] = int(torch.searchsorted(cumulative, draw, right=True).clamp_max_(n - 1))
    centres[0], centres_sq[0] = points[chosen[0]], sq[chosen[0]]
    dist = _sq_dist(points, sq, centres[:1], centres_sq[:1])[:, 0]
    owner = torch.zeros(n, dtype=torch.int64, device=points.device)
    for i in range(1, k):
        cumulative = torch.cumsum(dist if w is None else dist * w, 0, dtype=torch.float64)
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
        lowered = d_rows[:, None] - torch.minimum(d_rows[:, None], to_cand)
        gain = (lowered if w is None else lowered * w[rows, None]).sum(0, dtype=torch.float64)
        best = int(torch.argmax(gain)) if len(rows) else 0
        chosen[i] = int(candidates[best])
        centres[i], centres_sq[i] = cand[best], cand_sq[best]
        moved = to_cand[:, best] < d_rows
        dist[rows[moved]] = to_cand[moved, best]
        owner[rows[moved]] = i
    return np.ascontiguousarray(x[chosen], dtype=np.float32)


def kmeans_parallel(
    x: Points, k: int, seed: int, backend: KMeansBackend, rounds: int = 5, oversampling: float = 1.0
) -> np.ndarray:
    """``k`` initial centroids of ``x`` (rows of ``x``) by k-means‖ (Bahmani et al. 2012).

    A first row drawn uniformly, then ``rounds`` rounds: with ``φ`` the sum over all points of ``D²(x)``,
    the squared L2 distance to the nearest point drawn so far, every point is drawn independently with
    probability ``min(1, oversampling × k × D²(x) / φ)``, and the distances are updated by one
    nearest-centroid search over the new points (``backend.assign``). Each point drawn is weighted by
    the points nearest to it, and weighted greedy k-means++ (:func:`greedy_kmeans_plusplus`) picks ``k``
    of them. If fewer than ``k`` points were drawn, random rows make up the rest.

    Parameters
    ----------
    x
        ``[n, d]`` points (any float dtype, or a row view), or this rank's rows of them when
        ``backend.comm`` spans several processes; ``n >= k``.
    k
        Number of centroids.
    seed
        Seeds every draw. Each point's draw in a round is element ``offset + i`` of one seeded sequence,
        and its distance comes from its own row, so the result depends neither on the search's blocks
        nor on the number of ranks (up to the order of the float64 additions of ``φ``).
    backend
        Its ``assign`` (squared L2) updates the distances; its ``comm`` the ranks ``x`` is sharded over.
    rounds
        Sampling rounds (each one search of all points against about ``oversampling × k`` new points).
    oversampling
        Points drawn per round, as a multiple of ``k``.

    Returns
    -------
    numpy.ndarray
        ``[k, d]`` float32 centroids, the same on every rank. Beyond the points the work holds the
        ``O(rounds × oversampling × k)`` drawn rows in float32 and 12 bytes per point.
    """
    comm = backend.comm
    offset, n = comm.layout(x.shape[0])
    first = np.array([np.random.default_rng(seed).integers(n)])
    drawn = [first]
    candidates = [gather_rows(x, first, comm)]
    owner, dist = backend.assign(x, candidates[0], spherical=False)
    n_drawn = 1

    def add(rows: np.ndarray) -> None:
        """Take the rows at global numbers ``rows`` as candidates: each point's nearest candidate and
        distance to it updated."""
        nonlocal n_drawn
        new = gather_rows(x, rows, comm)
        label, d = backend.assign(x, new, spherical=False)
        closer = d < dist
        dist[closer], owner[closer] = d[closer], label[closer] + n_drawn
        drawn.append(rows)
        candidates.append(new)
        n_drawn += len(rows)

    for r in range(1, rounds + 1):
        phi = comm.total(dist)
        if phi <= 0:
            break
        keys = random_keys(len(dist), offset, derive_seed(seed, r))
        # Points already drawn have D² = 0 and are never drawn again.
        picked = np.flatnonzero(keys * phi < oversampling * k * dist.astype(np.float64)) + offset
        rows = np.concatenate(comm.gather(picked))
        if len(rows):
            add(rows)
    if n_drawn < k:
        taken = np.concatenate(drawn)
        spare = random_rows(n, min(n, k + n_drawn), derive_seed(seed, rounds + 1))
        add(spare[~np.isin(spare, taken)][: k - n_drawn])
    weights = comm.sum(np.bincount(owner, minlength=n_drawn).astype(np.float64))
    return greedy_kmeans_plusplus(
        np.concatenate(candidates),
        k,
        derive_seed(seed, 0),
        device=backend.init_device,
        weights=weights,
    )
