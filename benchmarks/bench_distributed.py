"""Distributed hierarchical k-means (``clustering/backend=distributed``) on gloo ranks vs one process.

The baseline, in the same run: the single-process faiss backend on the CPU with as many threads as there are
ranks (``--baseline-threads``), on the same ``features.h5`` (float16, Zipf-sized planted clusters) and the
same seed. Each rank reads only its slice of the file; the clustering must come out the same (on CPU ranks
assignments equal at every level; on GPUs, whose float32 sums round differently, the share of equal
assignments is reported), with the objective within 0.1 %, or the script exits non-zero.

Usage::

    python benchmarks/bench_distributed.py                          # 100,000 x 384, [500, 50, 5], 2 ranks
    python benchmarks/bench_distributed.py --n 1000000 --ranks 4 --n-clusters 5000 500 50
    python benchmarks/bench_distributed.py --device cuda --ranks 1 --n 1000000 --baseline-threads 16

Prints one ``RESULT distributed`` line: fit seconds and rows per second of both, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from benchmarks.bench_curation import bench_hierarchy, planted_features
from radio_curation.curation.backends import FaissBackend
from radio_curation.curation.distributed import DistributedBackend
from radio_curation.curation.loading import load_features
from radio_curation.features.matrix import FeatureFile

ROOT = Path(__file__).resolve().parents[1]


def worker(path: str, out: str, n_clusters: list[int], iters: int, device: str) -> None:
    """One rank (under torchrun): read this rank's rows, fit, and (rank 0) save the levels and timings."""
    import torch.distributed as dist

    start = time.perf_counter()
    backend = DistributedBackend(device)
    comm = backend.comm
    joined = time.perf_counter()
    n = FeatureFile(path).n
    rows = np.arange(n * comm.rank // comm.world_size, n * (comm.rank + 1) // comm.world_size)
    with FeatureFile(path, rows=rows) as source:
        x = load_features(source).x
    dist.barrier()
    read = time.perf_counter()
    levels = bench_hierarchy(n_clusters, iters, backend).fit(x, seed=0)
    dist.barrier()
    end = time.perf_counter()
    if comm.rank == 0:
        np.savez(
            out,
            join_s=joined - start,
            read_s=read - joined,
            fit_s=end - read,
            **{f"assignment_{i}": lv.assignment for i, lv in enumerate(levels)},
            **{f"objective_{i}": lv.resampling_objective for i, lv in enumerate(levels)},
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--n-clusters", type=int, nargs="+", default=[500, 50, 5])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument(
        "--ranks", type=int, default=2, help="ranks: gloo on CPUs (one thread each), NCCL on GPUs"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="the ranks' device")
    parser.add_argument(
        "--baseline-threads", type=int, default=None, help="threads of the faiss baseline (default: --ranks)"
    )
    parser.add_argument("--worker", nargs=2, metavar=("FEATURES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.n_clusters, args.iters, args.device)
        return
    threads = args.baseline_threads or args.ranks
    if args.device == "cuda":
        import torch

        if args.ranks > torch.cuda.device_count():
            sys.exit(
                f"--ranks {args.ranks} on --device cuda needs a GPU per rank (NCCL refuses two ranks on one GPU); "
                f"torch sees {torch.cuda.device_count()}: pass --ranks {torch.cuda.device_count()} or fewer"
            )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("features", data=planted_features(args.n, args.dim, 200).astype(np.float16))
            f.create_dataset("cutout_id", data=np.arange(args.n, dtype=np.int64))
        start = time.perf_counter()
        with FeatureFile(path) as source:
            x = load_features(source).x
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        want = bench_hierarchy(args.n_clusters, args.iters, FaissBackend("cpu", threads=threads)).fit(
            x, seed=0
        )
        base_s = time.perf_counter() - start
        del x
        out = Path(tmp) / "ranks.npz"
        command = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.ranks}",
            f"--master_port={free_port()}", __file__, "--worker", str(path), str(out),
            "--n-clusters", *map(str, args.n_clusters), "--iters", str(args.iters), "--device", args.device,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        start = time.perf_counter()
        ran = subprocess.run(command, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
        if ran.returncode != 0:
            sys.exit(f"the ranks failed (exit {ran.returncode}):\n{ran.stderr[-4000:]}")
        launch_s = time.perf_counter() - start
        got = np.load(out)
    agree = min(float(np.mean(got[f"assignment_{i}"] == lv.assignment)) for i, lv in enumerate(want))
    equal = agree == 1.0
    rel = max(
        float(np.max(np.abs(got[f"objective_{i}"] / lv.resampling_objective - 1)))
        for i, lv in enumerate(want)
    )
    fit_s = float(got["fit_s"])
    print(
        f"RESULT distributed ranks={args.ranks} device={args.device} n={args.n} dim={args.dim} "
        f"n_clusters={','.join(map(str, args.n_clusters))} iters={args.iters} "
        f"fit_s={fit_s:.2f} rows_per_s={args.n / fit_s:.0f} read_s={float(got['read_s']):.2f} "
        f"join_s={float(got['join_s']):.2f} torchrun_total_s={launch_s:.2f} "
        f"baseline=faiss_cpu_1_process_{threads}_threads baseline_fit_s={base_s:.2f} "
        f"baseline_rows_per_s={args.n / base_s:.0f} baseline_read_s={read_s:.2f} "
        f"ratio_fit={fit_s / base_s:.2f} assignments_equal={equal} assignments_agree_min={agree:.4f} "
        f"objective_max_rel_diff={rel:.2e}",
        flush=True,
    )
    if (args.device == "cpu" and not equal) or rel > 1e-3:
        sys.exit(1)


if __name__ == "__main__":
    main()
