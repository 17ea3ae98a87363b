"""Curation benchmarks: GEMM rate, k-means and k-means++ vs scikit-learn, k-means‖ vs greedy k-means++,
hierarchical k-means vs a plain per-level loop, balanced sampling vs a plain per-cluster loop.

k-means is bound by its distance computations, which are matrix products, so the float32 GEMM rate of the
device the k-means runs on (numpy ``matmul`` on the CPU; torch ``matmul`` on a GPU, with and without TF32),
measured first in the same run, is the yardstick. The features are generated here with known, unevenly
sized (Zipf) cluster structure. The hierarchical and balanced parts exit non-zero when they are not exact.

Usage::

    python benchmarks/bench_curation.py                      # 200,000 x 384, k = 2,000, 20 iterations
    python benchmarks/bench_curation.py --n 1000000          # the large setting
    python benchmarks/bench_curation.py --only kmeanspp --n 20000 --k 200 --iters 50 --threads 1
    python benchmarks/bench_curation.py --only init --n 100000 --init-ks 64 256 1024
    python benchmarks/bench_curation.py --backend torch --device cuda --n 1000000 --k 10000

Prints one ``RESULT`` line per benchmark.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from radio_curation.curation.backends import FaissBackend, KMeansBackend, TorchBackend
from radio_curation.curation.clusters import Hierarchy
from radio_curation.curation.initialization import greedy_kmeans_plusplus
from radio_curation.curation.kmeans import (
    ClusterLevel,
    HierarchicalKMeans,
    derive_seed,
    init_centroids,
    kmeans,
    select_per_cluster,
)
from radio_curation.curation.loading import load_features
from radio_curation.curation.samplers import BalancedSampler, ClusteredPool, Compose, cluster_counts
from radio_curation.features.matrix import FeatureFile


def gemm_gflops(rows: int, dim: int, k: int, device: str = "cpu", repeats: int = 5) -> dict[str, float]:
    """Best matmul rate (GFLOP/s) for the assignment's shape, [rows, dim] @ [dim, k], on ``device``.

    ``float32`` always; on a GPU also ``tf32`` (TensorFloat-32 tensor cores, what float32 products run as
    when ``torch.backends.cuda.matmul.allow_tf32`` is on).
    """
    flops = 2.0 * rows * dim * k
    if not device.startswith("cuda"):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((rows, dim), dtype=np.float32)
        b = rng.standard_normal((dim, k), dtype=np.float32)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        return {"float32": flops / best / 1e9}
    a = torch.randn(rows, dim, device=device)
    b = torch.randn(dim, k, device=device)
    rates = {}
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, tf32 in (("float32", False), ("tf32", True)):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a @ b
            torch.cuda.synchronize(device)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                a @ b
                torch.cuda.synchronize(device)
                best = min(best, time.perf_counter() - start)
            rates[name] = flops / best / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return rates


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


def make_backend(name: str, device: str, threads: int) -> KMeansBackend:
    return FaissBackend(device, threads=threads) if name == "faiss" else TorchBackend(device)


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


def bench_kmeanspp(x: np.ndarray, k: int, iters: int, backend: KMeansBackend, seeds: int) -> None:
    """Greedy k-means++ and Lloyd (the level-1 k-means) vs scikit-learn's at equal settings.

    Each side draws its own k-means++ start (same algorithm: best of 2 + ln k D²-sampled candidates per
    step), so the objectives are compared as means over ``seeds``; the plain k-means++ start (one
    candidate per step, faiss' method) run through the same Lloyd iterations shows what the greedy choice
    buys.
    """
    from sklearn.cluster import KMeans, kmeans_plusplus

    ours_obj, plain_obj, sk_obj = [], [], []
    ours_s = sk_s = ours_init_s = sk_init_s = 0.0
    for seed in range(seeds):
        start = time.perf_counter()
        ours = kmeans(x, k, n_iters=iters, init="kmeans++", seed=seed, backend=backend)
        ours_s += time.perf_counter() - start
        ours_obj.append(float(ours.distance.sum(dtype=np.float64)))
        start = time.perf_counter()
        greedy_kmeans_plusplus(x, k, seed, device=backend.init_device)
        ours_init_s += time.perf_counter() - start
        plain = greedy_kmeans_plusplus(x, k, seed, device=backend.init_device, n_candidates=1)
        fit = backend.fit(x, plain, iters, spherical=False)
        plain_obj.append(float(backend.assign(x, fit.centroids, False)[1].sum(dtype=np.float64)))
        model = KMeans(
            k, init="k-means++", n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd", random_state=seed
        )
        start = time.perf_counter()
        model.fit(x)
        sk_s += time.perf_counter() - start
        sk_obj.append(float(model.inertia_))
        start = time.perf_counter()
        kmeans_plusplus(x, k, random_state=seed)
        sk_init_s += time.perf_counter() - start
        print(
            f"seed {seed}: objective ours {ours_obj[-1]:.6g}, plain k-means++ {plain_obj[-1]:.6g}, sklearn {sk_obj[-1]:.6g}"
        )
    ratio = np.mean(ours_obj) / np.mean(sk_obj)
    print(
        f"RESULT kmeanspp n={len(x)} k={k} iters={iters} seeds={seeds} ours={ours_s / seeds:.2f} "
        f"sklearn={sk_s / seeds:.2f} speedup={sk_s / ours_s:.2f} objective_ratio={ratio:.4f} "
        f"plain_objective_ratio={np.mean(plain_obj) / np.mean(sk_obj):.4f} within_1pct={ratio <= 1.01} "
        f"init_ours={ours_init_s / seeds:.2f} init_sklearn={sk_init_s / seeds:.2f} "
        f"init_speedup={sk_init_s / ours_init_s:.2f}"
    )


def _potential(x: np.ndarray, centres: np.ndarray, backend: KMeansBackend) -> float:
    return float(backend.assign(x, centres, False)[1].sum(dtype=np.float64))


def bench_init(x: np.ndarray, ks: list[int], backend: KMeansBackend) -> None:
    """k-means‖ against greedy k-means++ (the baseline) at fixed ``n`` and growing ``k``.

    Per ``k``: each one's seconds (wall and CPU) and rate (points × k per wall second), their ratio, and
    the potential (sum of squared distances to the nearest initial centroid) of k-means‖ over k-means++'s;
    then the log-log slope of each one's wall time in ``k`` (k-means++ takes ``k`` sequential steps).
    """
    seconds: dict[str, list[float]] = {"kmeans++": [], "kmeans_parallel": []}
    for k in ks:
        potential, cpu = {}, {}
        for method in seconds:
            start = time.perf_counter(), time.process_time()
            centres = init_centroids(x, k, method, derive_seed(0, k), backend)
            seconds[method].append(time.perf_counter() - start[0])
            cpu[method] = time.process_time() - start[1]
            potential[method] = _potential(x, centres, backend)
        base, ours = seconds["kmeans++"][-1], seconds["kmeans_parallel"][-1]
        print(
            f"RESULT init n={len(x)} k={k} kmeanspp_s={base:.2f} kmeanspp_cpu_s={cpu['kmeans++']:.2f} "
            f"kmeans_parallel_s={ours:.2f} kmeans_parallel_cpu_s={cpu['kmeans_parallel']:.2f} "
            f"kmeanspp_rate={len(x) * k / base:.3g} kmeans_parallel_rate={len(x) * k / ours:.3g} "
            f"speedup={base / ours:.2f} potential_ratio={potential['kmeans_parallel'] / potential['kmeans++']:.4f}"
        )
    if len(ks) > 1:
        scale = np.log(ks[-1] / ks[0])
        slopes = {m: np.log(t[-1] / t[0]) / scale for m, t in seconds.items()}
        print(
            f"RESULT init_growth n={len(x)} k={ks[0]}..{ks[-1]} alpha_kmeanspp={slopes['kmeans++']:.2f} "
            f"alpha_kmeans_parallel={slopes['kmeans_parallel']:.2f}"
        )


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


#: Resampling settings of the hierarchical benchmark, per level.
RESAMPLING_STEPS = [1, 3, 3]
SAMPLE_SIZE = [20, 5, 5]


def bench_hierarchy(n_clusters: list[int], iters: int, backend: KMeansBackend) -> HierarchicalKMeans:
    """The benchmarked hierarchy: random init, l2, :data:`RESAMPLING_STEPS` of :data:`SAMPLE_SIZE` points."""
    return HierarchicalKMeans(
        n_clusters,
        n_resampling_steps=RESAMPLING_STEPS,
        sample_size=SAMPLE_SIZE,
        n_iters=iters,
        init="random",
        metric="l2",
        backend=backend,
    )


def _hierarchical_child(
    path: str, n_clusters: list[int], iters: int, backend: str, device: str, threads: int, queue
) -> None:
    # Reset the peak-RSS mark: getrusage's maximum would include the parent's memory at fork time.
    Path("/proc/self/clear_refs").write_text("5")
    baseline = _status_bytes("VmRSS")
    torch.set_num_threads(threads)
    with threadpool_limits(threads):
        start = time.perf_counter()
        with FeatureFile(path) as features:
            loaded = load_features(features)
        algo = bench_hierarchy(n_clusters, iters, make_backend(backend, device, threads))
        fit_start = time.perf_counter()
        levels = algo.fit(loaded.x, seed=0)
        end = time.perf_counter()
    peak = _status_bytes("VmHWM")
    queue.put((end - start, end - fit_start, peak - baseline, [(lv.assignment, lv.sizes) for lv in levels]))


def plain_hierarchy(
    x: np.ndarray, n_clusters: list[int], iters: int, backend: KMeansBackend, seed: int = 0
) -> list[np.ndarray]:
    """The reference algorithm (Vo et al. 2024) as a plain per-level loop, with the seeds ours derives:
    per level, k-means; then per resampling step, the closest points of every cluster, k-means on them,
    every input reassigned; the level's centroids are the next level's inputs. Returns the assignments.
    """
    inputs, out = x, []
    for level, k in enumerate(n_clusters, start=1):
        first = kmeans(
            inputs, k, n_iters=iters, init="random", seed=derive_seed(seed, level, 0), backend=backend
        )
        centroids, assignment, distance = first.centroids, first.assignment, first.distance
        for step in range(1, RESAMPLING_STEPS[level - 1] + 1):
            sample = inputs[select_per_cluster(assignment, distance, SAMPLE_SIZE[level - 1])]
            again = kmeans(
                sample, k, n_iters=iters, init="random", seed=derive_seed(seed, level, step), backend=backend
            )
            centroids = again.centroids
            assignment, distance = backend.assign(inputs, centroids, False)
        out.append(assignment)
        inputs = centroids
    return out


def bench_hierarchical(
    x: np.ndarray, n_clusters: list[int], iters: int, backend: str, device: str, threads: int
) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "features.h5")
        with h5py.File(path, "w") as f:
            f.create_dataset("features", data=x, chunks=(min(len(x), 8192), x.shape[1]))
            f.create_dataset("cutout_id", data=np.arange(len(x), dtype=np.int64))
        # A fresh process, so its peak memory is this benchmark's alone (read from disk in chunks).
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(
            target=_hierarchical_child, args=(path, n_clusters, iters, backend, device, threads, queue)
        )
        proc.start()
        seconds, fit_seconds, peak, levels = queue.get()
        proc.join()
    start = time.perf_counter()
    plain = plain_hierarchy(x, n_clusters, iters, make_backend(backend, device, threads))
    plain_s = time.perf_counter() - start
    # Exact: every level's assignment is the plain loop's, and the sizes count level-1 points through it.
    exact = len(levels) == len(plain)
    path = np.arange(len(x))
    for (assignment, sizes), reference in zip(levels, plain, strict=False):
        path = reference[path]  # each point's cluster at this level
        exact &= np.array_equal(assignment, reference)
        exact &= np.array_equal(sizes, np.bincount(path, minlength=len(sizes)))
    ratio = peak / x.nbytes
    ks = [len(sizes) for _, sizes in levels]
    print(f"hierarchical k-means {ks}: {seconds:.1f} s, peak memory {peak / 2**20:.0f} MiB above start")
    print(
        f"RESULT hierarchical seconds={seconds:.2f} fit={fit_seconds:.2f} plain_loop={plain_s:.2f} "
        f"ratio={plain_s / fit_seconds:.2f} exact={exact} peak_mb={peak / 2**20:.0f} "
        f"features_mb={x.nbytes / 2**20:.0f} peak_memory_ratio={ratio:.2f}"
    )
    return exact


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


def _plain_fill(sizes: np.ndarray, quota: int) -> np.ndarray:
    """Water-filling by a loop: smallest first, each takes its size or an equal share of what is left."""
    take = np.zeros(len(sizes), dtype=np.int64)
    left = int(quota)
    order = np.argsort(sizes, kind="stable")
    for rank, i in enumerate(order):
        take[i] = min(int(sizes[i]), left // (len(order) - rank))
        left -= take[i]
    return take


def plain_balanced(hierarchy: Hierarchy, target: int, strategy: str, rng: np.random.Generator) -> list[int]:
    """Hierarchical balanced sampling (Vo et al. 2024) as plain loops over clusters: water-filling from the
    top level down, then ``r``andom or ``c``losest rows of each finest cluster. Returns the rows."""
    paths = hierarchy.paths()
    counts = cluster_counts(hierarchy, paths)
    quota = _plain_fill(counts[-1], target)
    for level in range(hierarchy.n_levels - 1, 0, -1):
        parents = hierarchy.parents(level + 1)
        order = np.argsort(parents, kind="stable")
        members_of = np.split(order, np.cumsum(np.bincount(parents, minlength=len(quota)))[:-1])
        child = np.zeros(len(counts[level - 1]), dtype=np.int64)
        for parent, members in enumerate(members_of):
            child[members] = _plain_fill(counts[level - 1][members], quota[parent])
        quota = child
    leaf = paths[:, 0]
    order = np.argsort(leaf, kind="stable")
    rows: list[int] = []
    distance = hierarchy.levels[0].distance
    for cluster, members in enumerate(
        np.split(order, np.cumsum(np.bincount(leaf, minlength=len(quota)))[:-1])
    ):
        if quota[cluster]:
            if strategy == "c":
                rows.extend(members[np.argsort(distance[members], kind="stable")[: quota[cluster]]].tolist())
            else:
                rows.extend(rng.choice(members, quota[cluster], replace=False).tolist())
    return rows


def bench_balanced(n: int, target: int, ks: list[int]) -> bool:
    """Ours vs the plain loops; exact: the target hit with distinct rows, and at every level each cluster's
    count within one of the plain loops' (the two hand out the last rows of a tie, at random or not)."""
    hierarchy = synthetic_hierarchy(n, ks)
    paths = hierarchy.paths()
    all_exact = True
    for strategy in ("r", "c"):
        pool = ClusteredPool(hierarchy)
        start = time.perf_counter()
        rows, _ = Compose([BalancedSampler(strategy)])(pool, target, seed=0)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        plain = np.sort(np.asarray(plain_balanced(hierarchy, target, strategy, np.random.default_rng(0))))
        plain_s = time.perf_counter() - start
        ours_counts = cluster_counts(hierarchy, paths[rows])
        plain_counts = cluster_counts(hierarchy, paths[plain])
        diff = max(int(np.abs(a - b).max()) for a, b in zip(ours_counts, plain_counts, strict=True))
        exact = len(rows) == target == len(np.unique(rows)) == len(plain) and diff <= 1
        all_exact &= exact
        print(
            f"RESULT balanced strategy={strategy} n={n} target={target} ours={seconds:.2f} "
            f"plain_loop={plain_s:.2f} speedup={plain_s / seconds:.1f} exact={exact} max_count_diff={diff}"
        )
    return all_exact


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
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="CPU threads, ours and baselines"
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds of the k-means++ comparison")
    parser.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn comparison")
    parser.add_argument(
        "--init-ks", type=int, nargs="+", default=[64, 256, 1024], help="k of the k-means‖ comparison"
    )
    parser.add_argument("--balanced-n", type=int, default=3_000_000)
    parser.add_argument("--balanced-target", type=int, default=200_000)
    parser.add_argument("--balanced-levels", type=int, nargs=3, default=[60000, 4000, 300])
    benches = ["kmeans", "kmeanspp", "init", "hierarchical", "balanced"]
    parser.add_argument("--only", choices=benches, nargs="*")
    args = parser.parse_args()
    only = set(args.only or benches)
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)

    backend = make_backend(args.backend, args.device, args.threads)
    gemm = gemm_gflops(16384, args.dim, args.k, device=backend.device)
    rates = " ".join(f"{name}={rate:.1f}" for name, rate in gemm.items())
    print(
        f"RESULT gemm device={backend.device} threads={args.threads} {rates} shape=16384x{args.dim}x{args.k}"
    )
    # The yardstick is the rate of the products the backend runs: TF32 only where torch is told to use it.
    tf32 = backend.device.startswith("cuda") and torch.backends.cuda.matmul.allow_tf32
    exact = True
    if only & {"kmeans", "kmeanspp", "init", "hierarchical"}:
        x = planted_features(args.n, args.dim, n_true=max(args.k // 4, 2))
        print(f"features: {args.n} x {args.dim} float32 ({x.nbytes / 2**20:.0f} MiB)")
        if "kmeans" in only:
            bench_kmeans(
                x, args.k, args.iters, backend, gemm["tf32" if tf32 else "float32"], not args.no_sklearn
            )
        if "kmeanspp" in only:
            bench_kmeanspp(x, args.k, args.iters, backend, args.seeds)
        if "init" in only:
            bench_init(x, args.init_ks, backend)
        if "hierarchical" in only:
            exact &= bench_hierarchical(x, args.levels, args.iters, args.backend, args.device, args.threads)
        del x
    if "balanced" in only:
        exact &= bench_balanced(args.balanced_n, args.balanced_target, args.balanced_levels)
    if not exact:
        print(
            "FAILED: a hierarchical or balanced result differs from its plain-loop baseline", file=sys.stderr
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
