"""Curation benchmarks: GEMM rate, k-means vs scikit-learn, hierarchical k-means memory, balanced sampling.

k-means on a CPU is bound by its distance computations, which are matrix products, so the machine's own
float32 GEMM rate (numpy ``matmul``, measured first in the same run) is the yardstick. The features are
generated here with known, unevenly sized (Zipf) cluster structure.

Usage::

    python benchmarks/bench_curation.py                      # 200,000 x 384, k = 2,000, 20 iterations
    python benchmarks/bench_curation.py --n 1000000          # the large setting
    python benchmarks/bench_curation.py --backend torch --device cuda --n 1000000 --k 10000

Prints one ``RESULT`` line per benchmark.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from radio_curation.curation.backends import FaissBackend, KMeansBackend, TorchBackend
from radio_curation.curation.clusters import Hierarchy
from radio_curation.curation.kmeans import (
    ClusterLevel,
    HierarchicalKMeans,
    derive_seed,
    init_centroids,
    kmeans,
)
from radio_curation.curation.loading import ArrayFeatures, load_features
from radio_curation.curation.samplers import BalancedSampler, Compose, Pool


def gemm_gflops(rows: int, dim: int, k: int, repeats: int = 5) -> float:
    """Best float32 ``matmul`` rate (GFLOP/s) for the assignment's shape: [rows, dim] @ [dim, k]."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, dim), dtype=np.float32)
    b = rng.standard_normal((dim, k), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * rows * dim * k / best / 1e9


def planted_features(n: int, dim: int, n_true: int, seed: int = 0, chunk: int = 65536) -> np.ndarray:
    """``[n, dim]`` float32 blobs around ``n_true`` centres with Zipf-distributed sizes, built in chunks."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_true + 1)
    labels = rng.choice(n_true, size=n, p=weights / weights.sum())
    centres = (rng.standard_normal((n_true, dim)) * 2.0).astype(np.float32)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        x[start:stop] = centres[labels[start:stop]] + rng.standard_normal(
            (stop - start, dim), dtype=np.float32
        )
    return x


def make_backend(name: str, device: str) -> KMeansBackend:
    return FaissBackend(device) if name == "faiss" else TorchBackend(device)


def bench_kmeans(
    x: np.ndarray, k: int, iters: int, backend: KMeansBackend, gemm: float, sklearn: bool
) -> None:
    n, dim = x.shape
    start = time.perf_counter()
    ours = kmeans(x, k, n_iters=iters, init="random", seed=0, backend=backend)
    ours_s = time.perf_counter() - start
    done = len(ours.objective)
    achieved = 2.0 * n * k * dim * done / ours.search_seconds / 1e9
    ours_obj = float(ours.distance.sum(dtype=np.float64))
    print(
        f"ours: {ours_s:.1f} s for {done} iterations, assignment {achieved:.0f} GFLOP/s, objective {ours_obj:.6g}"
    )
    line = f"RESULT kmeans ours={ours_s:.2f}"
    if sklearn:
        from sklearn.cluster import KMeans

        # Exactly the initial centroids ours started from.
        init = init_centroids(x, k, "random", derive_seed(0, 0))
        model = KMeans(
            n_clusters=k, init=init, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd", random_state=0
        )
        start = time.perf_counter()
        model.fit(x)
        sk_s = time.perf_counter() - start
        print(f"scikit-learn: {sk_s:.1f} s for {model.n_iter_} iterations, objective {model.inertia_:.6g}")
        line += (
            f" sklearn={sk_s:.2f} speedup={sk_s / ours_s:.2f} objective_ratio={ours_obj / model.inertia_:.4f}"
        )
    print(f"{line} gemm_fraction={achieved / gemm:.2f}")


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _hierarchical_child(
    path: str, n_clusters: list[int], iters: int, backend: str, device: str, queue
) -> None:
    # Reset the peak-RSS mark: getrusage's maximum would include the parent's memory at fork time.
    Path("/proc/self/clear_refs").write_text("5")
    baseline = _status_bytes("VmRSS")
    start = time.perf_counter()
    with h5py.File(path, "r") as f:
        loaded = load_features(ArrayFeatures(f["features"], f["cutout_id"][()]))
    algo = HierarchicalKMeans(
        n_clusters,
        n_resampling_steps=[1, 3, 3],
        sample_size=[20, 5, 5],
        n_iters=iters,
        init="random",
        backend=make_backend(backend, device),
    )
    levels = algo.fit(loaded.x, seed=0)
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    queue.put((seconds, peak - baseline, [lv.k for lv in levels]))


def bench_hierarchical(x: np.ndarray, n_clusters: list[int], iters: int, backend: str, device: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "features.h5")
        with h5py.File(path, "w") as f:
            f.create_dataset("features", data=x, chunks=(min(len(x), 8192), x.shape[1]))
            f.create_dataset("cutout_id", data=np.arange(len(x), dtype=np.int64))
        # A fresh process, so its peak memory is this benchmark's alone (read from disk in chunks).
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_hierarchical_child, args=(path, n_clusters, iters, backend, device, queue))
        proc.start()
        seconds, peak, ks = queue.get()
        proc.join()
    ratio = peak / x.nbytes
    print(f"hierarchical k-means {ks}: {seconds:.1f} s, peak memory {peak / 2**20:.0f} MiB above start")
    print(
        f"RESULT hierarchical seconds={seconds:.2f} peak_mb={peak / 2**20:.0f} "
        f"features_mb={x.nbytes / 2**20:.0f} peak_memory_ratio={ratio:.2f}"
    )


def synthetic_hierarchy(n: int, ks: list[int], seed: int = 0) -> Hierarchy:
    """A 3-level hierarchy over ``n`` points with Zipf-sized clusters (the sampler needs no features)."""
    rng = np.random.default_rng(seed)
    levels = []
    inputs = n
    for k in ks:
        weights = 1.0 / np.arange(1, k + 1) ** 0.8
        assignment = rng.choice(k, size=inputs, p=weights / weights.sum())
        # Every cluster gets at least one input, so each level has exactly k non-empty clusters.
        assignment[rng.choice(inputs, size=k, replace=False)] = np.arange(k)
        levels.append(
            ClusterLevel(
                centroids=np.zeros((k, 1), dtype=np.float32),
                assignment=assignment.astype(np.int64),
                distance=rng.random(inputs, dtype=np.float32),
                sizes=np.zeros(k, dtype=np.int64),
                objective=np.zeros(1),
                resampling_objective=np.zeros(1),
                n_train=inputs,
                search_seconds=0.0,
            )
        )
        inputs = k
    return Hierarchy(np.arange(n, dtype=np.int64), levels)


def bench_balanced(n: int, target: int, ks: list[int]) -> None:
    hierarchy = synthetic_hierarchy(n, ks)
    for strategy in ("r", "c"):
        pool = Pool(hierarchy)
        start = time.perf_counter()
        rows, _ = Compose([BalancedSampler(strategy)])(pool, target, seed=0)
        seconds = time.perf_counter() - start
        exact = len(rows) == target == len(np.unique(rows))
        print(
            f"RESULT balanced strategy={strategy} n={n} target={target} seconds={seconds:.2f} exact={exact}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200_000, help="points (1,000,000 for the large setting)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=2000, help="clusters of the level-1 k-means")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument(
        "--levels", type=int, nargs=3, default=[2000, 200, 20], help="hierarchical k per level"
    )
    parser.add_argument("--backend", choices=["faiss", "torch"], default="faiss")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn comparison")
    parser.add_argument("--balanced-n", type=int, default=3_000_000)
    parser.add_argument("--balanced-target", type=int, default=200_000)
    parser.add_argument("--balanced-levels", type=int, nargs=3, default=[60000, 4000, 300])
    parser.add_argument("--only", choices=["kmeans", "hierarchical", "balanced"], nargs="*")
    args = parser.parse_args()
    only = set(args.only or ["kmeans", "hierarchical", "balanced"])

    gemm = gemm_gflops(16384, args.dim, args.k)
    print(f"RESULT gemm gflops={gemm:.1f} shape=16384x{args.dim}x{args.k}")
    if only & {"kmeans", "hierarchical"}:
        x = planted_features(args.n, args.dim, n_true=max(args.k // 4, 2))
        print(f"features: {args.n} x {args.dim} float32 ({x.nbytes / 2**20:.0f} MiB)")
        if "kmeans" in only:
            bench_kmeans(
                x, args.k, args.iters, make_backend(args.backend, args.device), gemm, not args.no_sklearn
            )
        if "hierarchical" in only:
            bench_hierarchical(x, args.levels, args.iters, args.backend, args.device)
        del x
    if "balanced" in only:
        bench_balanced(args.balanced_n, args.balanced_target, args.balanced_levels)


if __name__ == "__main__":
    main()
