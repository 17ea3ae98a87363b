"""k-means backends: faiss (CPU, or GPU with faiss-gpu), torch (CPU or CUDA) and cuML (CUDA).

A backend assigns points to centroids and trains k-means from the initial centroids it is given;
initialisation and training subsamples are chosen once, outside the backends
(:mod:`radio_curation.curation.kmeans`), so one seed means the same start on every backend; k-means++
runs in torch on the backend's GPU when it has one, else on the CPU (:attr:`KMeansBackend.init_device`).

faiss and torch share one Lloyd iteration: assign every point (the distance computations, i.e. the
matrix products, which is where backends differ), then move each centroid to the mean of its points,
summed in float64. A cluster left empty takes the point farthest from its centroid, as scikit-learn
does (faiss' own ``Kmeans`` splits a large cluster instead, which converged to a worse objective on our
benchmark data). Training stops early when the objective repeats exactly (a fixed point, where further
iterations change nothing). cuML runs its own iterations.

Distances are squared L2 for ``spherical=False`` and cosine distance (``1 - cos``) for
``spherical=True`` (points are then expected to be L2-normalised, and centroids are renormalised after
every update, as in spherical k-means). The objective of an iteration is the sum of those distances at
its assignment step, before the centroid update.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
from scipy.sparse import csr_matrix

from radio_curation.curation.sharded import LOCAL, Collective, farthest_rows
from radio_curation.errors import RadioCurationError
from radio_curation.progress import progress

if TYPE_CHECKING:
    import torch

#: Elements of the [rows, k] distance block computed at once during assignment (64 MiB in float32).
BLOCK_ELEMENTS = 1 << 24
#: Rows summed at once by the centroid updates, whatever k: the update costs n·d, not n·k·d.
UPDATE_BLOCK_ROWS = 65536


class RowView:
    """Rows ``rows`` of the matrix ``base``, gathered a block at a time when read (a training sample that
    is an index, not a copy of its rows).

    Supports what the backends read of a matrix: ``shape``, ``dtype``, ``len`` and ``view[key]`` for a
    slice or an index array (which gathers those rows of ``base``).
    """

    def __init__(self, base: np.ndarray | RowView, rows: np.ndarray) -> None:
        if isinstance(base, RowView):
            base, rows = base.base, base.rows[rows]
        self.base = base
        self.rows = np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), int(self.base.shape[1]))

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        return self.base[self.rows[key]]


#: A matrix of points as the backends read it: an array in its stored dtype, or rows of one.
Points = np.ndarray | RowView


def float32_rows(x: Points, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``x`` as float32 (a view when ``x`` is a float32 array)."""
    return np.asarray(x[start:stop], dtype=np.float32)


@dataclass
class KMeansFit:
    """What one k-means training run produced.

    Attributes
    ----------
    centroids
        ``[k, d]`` float32 centroids after the last update.
    objective
        Objective at each iteration's assignment step (sum of distances; see module docstring).
    search_seconds
        Seconds spent in the assignment steps (the distance computations).
    n_train
        Number of training points.
    """

    centroids: np.ndarray
    objective: np.ndarray
    search_seconds: float
    n_train: int


class KMeansBackend(ABC):
    """Nearest-centroid assignment, and k-means training through it.

    The points may be one rank's shard of rows sharded over processes (:attr:`comm`); the shared Lloyd
    iteration then sums objectives and centroids over all ranks.
    """

    name: str = ""
    device: str = "cpu"
    #: The processes the rows are sharded over (this one alone by default).
    comm: Collective = LOCAL

    @property
    def replicated(self) -> KMeansBackend:
        """The backend for inputs every rank holds whole (the upper levels' centroids): itself by default."""
        return self

    @property
    def init_device(self) -> str:
        """The torch device k-means++ initialisation runs on: this backend's GPU when torch sees it."""
        import torch

        return self.device if self.device.startswith("cuda") and torch.cuda.is_available() else "cpu"

    @abstractmethod
    def assign(self, x: Points, centroids: np.ndarray, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid (int64) and distance to it (float32) of every row of ``x``."""

    def fit(self, x: Points, init: np.ndarray, n_iters: int, spherical: bool) -> KMeansFit:
        """Run up to ``n_iters`` Lloyd iterations on ``x`` [n, d] starting from ``init`` [k, d]; ``x`` may be
        float16 or a :class:`RowView`, read a block of rows at a time."""
        centroids = _normalize_rows(init) if spherical else np.ascontiguousarray(init, dtype=np.float32)
        objective: list[float] = []
        search = 0.0
        with progress(n_iters, f"k-means k={len(centroids)}", unit="iter") as bar:
            for _ in range(n_iters):
                start = time.perf_counter()
                labels, dist = self.assign(x, centroids, spherical)
                search += time.perf_counter() - start
                objective.append(self.comm.total(dist))
                bar.advance(1)
                bar.describe(f"objective {objective[-1]:.6g}")
                if len(objective) > 1 and objective[-1] == objective[-2]:
                    break
                centroids = update_centroids(x, labels, dist, centroids.shape[0], spherical, comm=self.comm)
        return KMeansFit(centroids, np.asarray(objective), search, self.comm.layout(x.shape[0])[1])

    def describe(self) -> dict[str, Any]:
        """Backend name and device, for the run's manifest."""
        return {"backend": self.name, "device": self.device}


def _block_rows(k: int, n: int) -> int:
    return int(max(1, min(n, BLOCK_ELEMENTS // max(k, 1))))


def _normalize_rows(c: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(c, axis=1, keepdims=True)
    return (c / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)


def update_centroids(
    x: Points,
    labels: np.ndarray,
    dist: np.ndarray,
    k: int,
    spherical: bool,
    block: int = UPDATE_BLOCK_ROWS,
    comm: Collective = LOCAL,
) -> np.ndarray:
    """Mean of each cluster's points (float64 sums, blockwise); empty clusters take the farthest points.

    With ``comm``, ``x`` is this rank's shard: sums, counts and the farthest points are over all ranks.
    Every addition is in float64, so how the rows are split into blocks or ranks changes the sums only
    at float64 rounding, far below the float32 centroids' precision.
    """
    n, d = x.shape
    sums = np.zeros((k, d), dtype=np.float64)
    for start in range(0, n, block):
        lab = labels[start : start + block]
        onehot = csr_matrix(
            (np.ones(len(lab), dtype=np.float64), (lab, np.arange(len(lab)))), shape=(k, len(lab))
        )
        sums += onehot @ float32_rows(x, start, start + block)
    sums = comm.sum(sums)
    counts = comm.sum(np.bincount(labels, minlength=k))
    centroids = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        centroids[empty] = farthest_rows(x, dist, len(empty), comm)
    return _normalize_rows(centroids) if spherical else centroids


def nearest_candidate(
    x: np.ndarray, centroids: np.ndarray, candidates: np.ndarray, spherical: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest of each row's candidate centroids (``[n, c]``, best first) and the distance to it, both
    computed directly from the row and the centroid (ties: the lower centroid).

    The matrix products that find the candidates round a row's distances differently depending on the
    block it falls in, which can swap two nearly equidistant centroids; deciding between the best two by
    this per-row computation depends on the row alone, so on no block or rank split (and it keeps the
    small distances that ``|x|² + |c|² - 2 x·c`` loses to cancellation).
    """
    best = np.full(len(x), np.inf, dtype=np.float32)
    labels = candidates[:, 0].astype(np.int64)
    for j in range(candidates.shape[1]):
        chosen = centroids[candidates[:, j]]
        if spherical:
            d = 1.0 - np.einsum("ij,ij->i", x, chosen)
        else:
            diff = x - chosen
            d = np.einsum("ij,ij->i", diff, diff)
        better = (d < best) | ((d == best) & (candidates[:, j] < labels))
        best = np.where(better, d, best).astype(np.float32)
        labels = np.where(better, candidates[:, j], labels)
    return labels, best


class FaissBackend(KMeansBackend):
    """Assignment by faiss flat indexes; on the GPU when faiss-gpu is installed and sees one.

    On the CPU, row blocks are searched by ``threads`` workers at once, each single-threaded (faiss and its
    BLAS use OpenMP, whose threads spin-wait at every block's barrier: on a shared, oversubscribed node
    that halved the throughput, while independent blocks keep every core busy either way).

    Parameters
    ----------
    device
        ``auto`` (GPU if faiss has GPU support and sees a GPU, else CPU), ``cpu`` or ``cuda``.
    threads
        CPU workers (default: the cores this process may use).
    block_rows
        Rows per CPU search block.
    """

    name = "faiss"

    def __init__(self, device: str = "auto", threads: int | None = None, block_rows: int = 4096) -> None:
        n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if device == "auto":
            device = "cuda" if n_gpus > 0 else "cpu"
        if device not in ("cpu", "cuda"):
            raise RadioCurationError(f"clustering.backend.device={device!r}: use auto, cpu or cuda")
        if device == "cuda" and n_gpus == 0:
            raise RadioCurationError(
                "clustering.backend.device=cuda needs faiss with GPU support and a visible GPU "
                "(pip install faiss-gpu-cu12); use device=cpu or clustering/backend=torch"
            )
        self.device = device
        self.threads = int(threads or len(os.sched_getaffinity(0)))
        self.block_rows = int(block_rows)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **({"threads": self.threads} if self.device == "cpu" else {})}

    def _index(self, centroids: np.ndarray, spherical: bool) -> faiss.Index:
        d = centroids.shape[1]
        index = faiss.IndexFlatIP(d) if spherical else faiss.IndexFlatL2(d)
        if self.device == "cuda":
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(np.ascontiguousarray(centroids, dtype=np.float32))
        return index

    def assign(self, x: Points, centroids: np.ndarray, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
        index = self._index(centroids, spherical)
        n = x.shape[0]
        labels = np.empty(n, dtype=np.int64)
        dist = np.empty(n, dtype=np.float32)

        def search(start: int) -> None:
            block = np.ascontiguousarray(float32_rows(x, start, start + rows))
            _, candidates = index.search(block, min(2, len(centroids)))
            labels[start : start + len(block)], dist[start : start + len(block)] = nearest_candidate(
                block, centroids, candidates, spherical
            )

        if self.device == "cuda":
            rows = max(_block_rows(centroids.shape[0], n), 4096)
            for start in range(0, n, rows):
                search(start)
            return labels, dist

        def search_alone(start: int) -> None:
            # OpenMP thread counts are per calling thread: this worker's search and BLAS use one core.
            faiss.omp_set_num_threads(1)
            search(start)

        rows = self.block_rows
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(search_alone, range(0, n, rows)))
        return labels, dist


class TorchBackend(KMeansBackend):
    """Lloyd iterations in torch, blockwise, on the CPU or a CUDA device.

    The points keep their stored dtype (float16 or float32) and each block is converted to float32 when it
    is used. On a CUDA device they are moved there once; on the CPU a float32 or float16 array is used in
    place and a :class:`RowView` is gathered block by block (no copy of the points either way).

    Parameters
    ----------
    device
        ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:<n>``.
    """

    name = "torch"

    def __init__(self, device: str = "auto") -> None:
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RadioCurationError(f"clustering.backend.device={device} but torch sees no CUDA device")
        self.device = device

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)

    def _points(self, x: Points) -> torch.Tensor | RowView:
        """The points where the blocks are read from: a tensor on the device in the stored dtype, or (on
        the CPU) the row view itself."""
        import torch

        if isinstance(x, RowView):
            if self.device == "cpu":
                return x
            out = torch.empty(x.shape, dtype=torch.from_numpy(x[:1]).dtype, device=self.device)
            for start in range(0, x.shape[0], UPDATE_BLOCK_ROWS):
                out[start : start + UPDATE_BLOCK_ROWS] = torch.from_numpy(
                    x[start : start + UPDATE_BLOCK_ROWS]
                )
            return out
        x = np.ascontiguousarray(x)
        if x.dtype not in (np.float16, np.float32):
            x = x.astype(np.float32)
        return torch.from_numpy(x).to(self.device)

    def _block(self, points: torch.Tensor | RowView, start: int, stop: int) -> torch.Tensor:
        import torch

        if isinstance(points, RowView):
            return torch.from_numpy(float32_rows(points, start, stop))
        return points[start:stop].float()

    def _assign_t(
        self, points: torch.Tensor | RowView, c: torch.Tensor, spherical: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        n, k = points.shape[0], c.shape[0]
        labels = torch.empty(n, dtype=torch.int64, device=c.device)
        dist = torch.empty(n, dtype=torch.float32, device=c.device)
        c_sq = (c * c).sum(1)
        rows = _block_rows(k, n)
        n_best = min(2, k)
        for start in range(0, n, rows):
            xb = self._block(points, start, start + rows)
            if spherical:
                candidates = (xb @ c.T).topk(n_best, dim=1).indices
            else:
                scores = torch.addmm(c_sq, xb, c.T, beta=1.0, alpha=-2.0)
                candidates = scores.topk(n_best, dim=1, largest=False).indices
            # As in nearest_candidate: the best two decided by per-row distances, independent of the block.
            best = torch.full((len(xb),), torch.inf, device=c.device)
            idx = candidates[:, 0].clone()
            for j in range(n_best):
                chosen = c[candidates[:, j]]
                d = 1.0 - (xb * chosen).sum(1) if spherical else ((xb - chosen) ** 2).sum(1)
                better = (d < best) | ((d == best) & (candidates[:, j] < idx))
                best = torch.where(better, d, best)
                idx = torch.where(better, candidates[:, j], idx)
            labels[start : start + len(xb)] = idx
            dist[start : start + len(xb)] = best
        return labels, dist

    def _update(
        self,
        points: torch.Tensor | RowView,
        labels: torch.Tensor,
        dist: torch.Tensor,
        k: int,
        spherical: bool,
    ) -> torch.Tensor:
        import torch

        n, d = points.shape
        sums = torch.zeros(k, d, dtype=torch.float64, device=labels.device)
        for start in range(0, n, UPDATE_BLOCK_ROWS):
            block = self._block(points, start, start + UPDATE_BLOCK_ROWS)
            sums.index_add_(0, labels[start : start + UPDATE_BLOCK_ROWS], block.double())
        counts = torch.bincount(labels, minlength=k)
        new = (sums / counts.clamp_min(1).unsqueeze(1)).float()
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            far = torch.argsort(-dist, stable=True)[: len(empty)]
            if isinstance(points, RowView):
                new[empty] = torch.from_numpy(np.asarray(points[far.numpy()], dtype=np.float32))
            else:
                new[empty] = points[far].float()
        return torch.nn.functional.normalize(new, dim=1) if spherical else new

    def fit(self, x: Points, init: np.ndarray, n_iters: int, spherical: bool) -> KMeansFit:
        import torch

        points = self._points(x)
        c = self._tensor(init)
        if spherical:
            c = torch.nn.functional.normalize(c, dim=1)
        objective: list[float] = []
        search = 0.0
        with progress(n_iters, f"k-means k={len(c)}", unit="iter") as bar:
            for _ in range(n_iters):
                t0 = time.perf_counter()
                labels, dist = self._assign_t(points, c, spherical)
                if c.is_cuda:
                    torch.cuda.synchronize(c.device)
                search += time.perf_counter() - t0
                objective.append(float(dist.sum(dtype=torch.float64)))
                bar.advance(1)
                bar.describe(f"objective {objective[-1]:.6g}")
                if len(objective) > 1 and objective[-1] == objective[-2]:
                    break
                c = self._update(points, labels, dist, len(c), spherical)
        return KMeansFit(c.cpu().numpy().astype(np.float32), np.asarray(objective), search, points.shape[0])

    def assign(self, x: Points, centroids: np.ndarray, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
        labels, dist = self._assign_t(self._points(x), self._tensor(centroids), spherical)
        return labels.cpu().numpy(), dist.cpu().numpy()


class CumlBackend(KMeansBackend):
    """RAPIDS cuML ``KMeans`` on a CUDA device (squared L2 only); assignment runs in torch on CUDA.

    cuML reports only the final inertia, so the objective history has one entry.
    """

    name = "cuml"
    device = "cuda"

    def __init__(self, device: str = "cuda") -> None:
        try:
            import cuml  # noqa: F401
        except ImportError as err:
            raise RadioCurationError(
                "clustering/backend=cuml needs RAPIDS cuML (pip install cuml-cu12) and a GPU; "
                "use clustering/backend=faiss or clustering/backend=torch"
            ) from err
        if device not in ("auto", "cuda"):
            raise RadioCurationError(f"the cuML backend runs on cuda only, not device={device!r}")

    def fit(self, x: Points, init: np.ndarray, n_iters: int, spherical: bool) -> KMeansFit:
        from cuml.cluster import KMeans

        if spherical:
            raise RadioCurationError(
                "the cuML backend has no spherical k-means; use metric=l2 or another backend"
            )
        x = np.ascontiguousarray(x[:], dtype=np.float32)
        model = KMeans(
            n_clusters=init.shape[0],
            init=np.ascontiguousarray(init, dtype=np.float32),
            n_init=1,
            max_iter=n_iters,
            tol=0.0,
            output_type="numpy",
        )
        t0 = time.perf_counter()
        model.fit(x)
        seconds = time.perf_counter() - t0
        centroids = np.asarray(model.cluster_centers_, dtype=np.float32)
        return KMeansFit(centroids, np.asarray([float(model.inertia_)]), seconds, x.shape[0])

    def assign(self, x: Points, centroids: np.ndarray, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
        return TorchBackend("cuda").assign(x, centroids, spherical)
