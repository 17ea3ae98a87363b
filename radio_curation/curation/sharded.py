"""Rows sharded over the processes of a ``torch.distributed`` group, and the k-means steps that need them all.

Rank ``r`` holds a contiguous block of the rows, in rank order: its first row is row ``offset`` of the
whole. Every decision that depends on all the rows is made so that it does not depend on how they are
split: global row numbers drawn from one seeded generator, sums in float64, per-cluster thresholds found
by bisection over exact integer counts, ties broken by global row number. So one seed gives the same
clustering on 1, 2 or N ranks as in a single process, up to the order of the float64 additions.

:class:`Collective` is the single process (every reduction the identity); :class:`TorchCollective` runs
the reductions over a process group (gloo on CPUs, NCCL on GPUs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from radio_curation.errors import RadioCurationError

if TYPE_CHECKING:
    import torch

#: ``x ^ FLIP`` where ``x < 0`` maps float64 bit patterns onto int64 in the floats' order.
FLIP = np.int64(0x7FFF_FFFF_FFFF_FFFF)
#: Bisection rounds that pin an int64 threshold exactly.
ROUNDS = 64


class Collective:
    """All the rows in this one process: every reduction is the identity."""

    rank = 0
    world_size = 1

    def sum(self, a: np.ndarray) -> np.ndarray:
        """Element-wise sum of ``a`` over the ranks."""
        return a

    def gather(self, a: np.ndarray) -> list[np.ndarray]:
        """Every rank's ``a`` (any length along axis 0, same trailing shape), in rank order, on every rank."""
        return [a]

    def gather_all(self, x: np.ndarray) -> np.ndarray:
        """All ranks' rows of ``x`` in global order, on every rank."""
        return x

    def layout(self, n_local: int) -> tuple[int, int]:
        """``(offset, total)``: the global number of this rank's first row, and the rows of all ranks."""
        sizes = [int(s[0]) for s in self.gather(np.array([n_local], dtype=np.int64))]
        return sum(sizes[: self.rank]), sum(sizes)

    def total(self, values: np.ndarray) -> float:
        """Sum of ``values`` over all ranks' rows, in float64."""
        return float(self.sum(np.array([np.sum(values, dtype=np.float64)]))[0])


#: The single process.
LOCAL = Collective()


class TorchCollective(Collective):
    """Reductions over the default ``torch.distributed`` process group (already initialised).

    Parameters
    ----------
    device
        Where the exchanged tensors live: ``cpu`` for gloo, this rank's ``cuda:<n>`` for NCCL.
    max_gather_bytes
        Largest matrix :meth:`gather_all` copies onto every rank.
    """

    def __init__(self, device: str, max_gather_bytes: float) -> None:
        import torch.distributed as dist

        self.device = device
        self.max_gather_bytes = float(max_gather_bytes)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def sum(self, a: np.ndarray) -> np.ndarray:
        import torch.distributed as dist

        t = self._tensor(a)
        dist.all_reduce(t)
        return t.cpu().numpy()

    def gather(self, a: np.ndarray) -> list[np.ndarray]:
        import torch
        import torch.distributed as dist

        lengths = [int(n) for n in self.sum(self._one_hot(len(a)))]
        padded = np.zeros((max(lengths), *a.shape[1:]), dtype=a.dtype)
        padded[: len(a)] = a
        t = self._tensor(padded)
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t)
        return [p.cpu().numpy()[:n] for p, n in zip(parts, lengths, strict=True)]

    def _one_hot(self, value: int) -> np.ndarray:
        out = np.zeros(self.world_size, dtype=np.int64)
        out[self.rank] = value
        return out

    def gather_all(self, x: np.ndarray) -> np.ndarray:
        _, n = self.layout(len(x))
        size = n * x[:1].nbytes
        if size > self.max_gather_bytes:
            raise RadioCurationError(
                f"k-means++ on {n} rows would copy {size / 1e9:.1f} GB onto every rank, above "
                f"clustering.backend.max_gather_gb={self.max_gather_bytes / 1e9:g}: use clustering.init="
                "kmeans_parallel or random for this level (e.g. init=[kmeans_parallel,kmeans++]), set clustering.max_points_per_centroid, or "
                "raise max_gather_gb"
            )
        return np.concatenate(self.gather(np.ascontiguousarray(x[:])))


def local_rows(rows: np.ndarray, offset: int, n_local: int) -> np.ndarray:
    """This rank's local row numbers among the ascending global ``rows``."""
    lo, hi = np.searchsorted(rows, [offset, offset + n_local])
    return rows[lo:hi] - offset


def gather_rows(x: np.ndarray, rows: np.ndarray, comm: Collective) -> np.ndarray:
    """The rows of the sharded ``x`` at global numbers ``rows`` (any order), on every rank.

    Each row comes from the one rank that holds it; the others add zeros, so the sum is exact.
    """
    offset, _ = comm.layout(len(x))
    mine = (rows >= offset) & (rows < offset + len(x))
    out = np.zeros((len(rows), x.shape[1]), dtype=np.float32)
    out[mine] = x[rows[mine] - offset]
    return comm.sum(out)


def derive_seed(seed: int, *parts: int) -> int:
    """A 31-bit seed for one step (level, resampling step ...) of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), *map(int, parts)]).generate_state(1)[0] % (2**31 - 1))


def random_rows(n: int, k: int, seed: int) -> np.ndarray:
    """``k`` distinct row numbers of ``n``, ascending, drawn with ``seed``."""
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def random_keys(n_local: int, offset: int, seed: int) -> np.ndarray:
    """Rows ``offset .. offset + n_local`` of ``np.random.default_rng(seed).random(n)`` for any ``n``.

    One float64 takes one step of PCG64, so advancing the generator by ``offset`` steps gives this rank's
    slice of the one global sequence without drawing the others'.
    """
    generator = np.random.PCG64(seed)
    generator.advance(offset)
    return np.random.Generator(generator).random(n_local)


def farthest_rows(x: np.ndarray, dist: np.ndarray, m: int, comm: Collective) -> np.ndarray:
    """The ``m`` rows of the sharded ``x`` farthest from their centroid (ties: lower global row), everywhere.

    Each rank offers its own ``m`` farthest; the best ``m`` of those are the best overall.
    """
    offset, _ = comm.layout(len(x))
    local = np.argsort(-dist, kind="stable")[:m]
    candidates = np.stack([-dist[local].astype(np.float64), (local + offset).astype(np.float64)], axis=1)
    merged = np.concatenate(comm.gather(candidates))
    best = merged[np.lexsort((merged[:, 1], merged[:, 0]))[:m], 1].astype(np.int64)
    return gather_rows(x, best, comm)


def _ordered_bits(key: np.ndarray) -> np.ndarray:
    """int64 codes of ``key`` (as float64) in the same order as the values."""
    bits = np.ascontiguousarray(key, dtype=np.float64).view(np.int64)
    return np.where(bits < 0, bits ^ FLIP, bits)


def smallest_per_cluster(
    assignment: np.ndarray, key: np.ndarray, per_cluster: int, k: int, comm: Collective
) -> np.ndarray:
    """Local indices of the ``per_cluster`` rows with the smallest ``key`` of each cluster over all ranks.

    The sharded form of :func:`radio_curation.curation.kmeans.select_per_cluster` (same rows: ties go to
    the lower global row). Each cluster's threshold, the ``per_cluster``-th smallest key, is found by
    bisection over the keys' int64 codes, each round one all-reduce of ``k`` counts; the rows tied at the
    threshold are then shared out in rank order.
    """
    assignment = np.asarray(assignment, dtype=np.int64)
    code = _ordered_bits(key)
    sizes = comm.sum(np.bincount(assignment, minlength=k))
    want = np.minimum(sizes, per_cluster)
    lo = np.full(k, np.iinfo(np.int64).min, dtype=np.int64)
    hi = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
    for _ in range(ROUNDS):
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)
        below = comm.sum(np.bincount(assignment[code <= mid[assignment]], minlength=k))
        enough = below >= want
        hi = np.where(enough, mid, hi)
        lo = np.where(enough, lo, mid + 1)
    threshold = hi[assignment]
    take = code < threshold
    n_less = comm.sum(np.bincount(assignment[take], minlength=k))
    tied = np.flatnonzero(code == threshold)
    tied_here = np.bincount(assignment[tied], minlength=k)
    before = np.concatenate(comm.gather(tied_here[None, :]))[: comm.rank].sum(0)
    allowed = np.clip(want - n_less - before, 0, None)
    # Rank of each tied row among this rank's ties of its cluster, in row order.
    order = np.argsort(assignment[tied], kind="stable")
    labels = assignment[tied][order]
    rank_in_cluster = np.arange(len(order)) - np.searchsorted(labels, labels)
    take[tied[order[rank_in_cluster < allowed[labels]]]] = True
    return np.flatnonzero(take)
