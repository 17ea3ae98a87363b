"""clustering/backend=distributed: rows sharded over gloo ranks give the single-process clustering."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from radio_curation.curation.backends import FaissBackend, TorchBackend
from radio_curation.curation.distributed import DistributedBackend
from radio_curation.curation.kmeans import init_centroids, select_per_cluster
from radio_curation.curation.sharded import (
    Collective,
    farthest_rows,
    gather_rows,
    random_keys,
    smallest_per_cluster,
)
from radio_curation.runs.manifest import read_manifest
from radio_curation.tasks import curate
from tests.curation import distributed_worker as worker
from tests.curation.planted import planted

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n_ranks: int, *args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node n_ranks`` of ``args`` (a script and its arguments), one thread a rank."""
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n_ranks}",
        f"--master_port={free_port()}", *args,
    ]  # fmt: skip
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Threads(Collective):
    """Ranks as threads of this process, for the sharded steps without a process group."""

    def __init__(self, rank: int, shared: dict, barrier: threading.Barrier) -> None:
        self.rank, self.world_size = rank, barrier.parties
        self.shared, self.barrier = shared, barrier

    def gather(self, a: np.ndarray) -> list[np.ndarray]:
        self.barrier.wait()
        self.shared[self.rank] = a
        self.barrier.wait()
        out = [self.shared[r] for r in range(self.world_size)]
        self.barrier.wait()
        return out

    def sum(self, a: np.ndarray) -> np.ndarray:
        return np.concatenate(self.gather(np.asarray(a)[None])).sum(0)

    def gather_all(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate(self.gather(x))


def on_ranks(n_ranks: int, work) -> list:
    """``work(comm, lo, hi)`` on ``n_ranks`` thread ranks, each holding rows ``lo:hi`` of 1000."""
    barrier, shared, results = threading.Barrier(n_ranks), {}, [None] * n_ranks

    def run(rank: int) -> None:
        lo, hi = 1000 * rank // n_ranks, 1000 * (rank + 1) // n_ranks
        results[rank] = work(Threads(rank, shared, barrier), lo, hi)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(n_ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("n_ranks", [1, 3])
def test_sharded_steps_pick_the_single_process_rows(n_ranks):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 4)).astype(np.float32)
    assignment = rng.integers(0, 9, 1000)
    # Few distinct keys: many ties, which go to the lower global row as in select_per_cluster.
    key = np.floor(rng.random(1000) * 5) - 2.0
    dist = np.floor(rng.random(1000) * 50).astype(np.float32)

    def work(comm, lo, hi):
        picked = smallest_per_cluster(assignment[lo:hi], key[lo:hi], 17, 9, comm) + lo
        return (
            np.concatenate(comm.gather(picked)),
            farthest_rows(x[lo:hi], dist[lo:hi], 12, comm),
            gather_rows(x[lo:hi], np.array([999, 3, 500]), comm),
            np.concatenate(comm.gather(random_keys(hi - lo, lo, 4))),
        )

    for picked, farthest, rows, keys in on_ranks(n_ranks, work):
        np.testing.assert_array_equal(picked, select_per_cluster(assignment, key, 17))
        np.testing.assert_array_equal(farthest, x[np.argsort(-dist, kind="stable")[:12]])
        np.testing.assert_array_equal(rows, x[[999, 3, 500]])
        np.testing.assert_array_equal(keys, np.random.default_rng(4).random(1000))


@pytest.mark.parametrize("n_ranks", [2, 3])
def test_kmeans_parallel_on_ranks_picks_the_single_process_centroids(n_ranks):
    x = planted([500, 250, 120, 80, 50], dim=8, separation=6.0, seed=3)[0][:1000].astype(np.float16)

    def work(comm, lo, hi):
        backend = FaissBackend("cpu", threads=1, block_rows=64)
        backend.comm = comm
        return init_centroids(x[lo:hi], 25, "kmeans_parallel", 7, backend)

    want = init_centroids(x, 25, "kmeans_parallel", 7, FaissBackend("cpu"))
    for got in on_ranks(n_ranks, work):
        np.testing.assert_array_equal(got, want)


def test_two_gloo_ranks_give_the_single_process_hierarchy(tmp_path):
    done = torchrun(2, str(Path(worker.__file__)), str(tmp_path / "two.npz"))
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "two.npz")
    assert int(got["world_size"]) == 2
    np.testing.assert_array_equal(got["ties/picked"], got["ties/reference"])
    for case in worker.CASES:
        want = worker.fit(case, worker.points(case), FaissBackend("cpu"))
        for name, value in want.items():
            if name.endswith(("assignment", "sizes")):
                np.testing.assert_array_equal(got[name], value, err_msg=name)
            else:
                np.testing.assert_allclose(got[name], value, rtol=1e-3, err_msg=name)
    # The repair case really had empty clusters to fill: half the points are one row.
    assert len(np.unique(got["empty_clusters/level_1/centroids"], axis=0)) == worker.COMMON["n_clusters"][0]


def test_one_process_alone_is_a_single_rank_without_a_process_group(monkeypatch):
    for key in ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    backend = DistributedBackend("cpu")
    assert backend.comm.world_size == 1 and backend.describe()["process_group"] is None
    assert backend.replicated is backend.local


SMALL = [
    "target_size=300",
    "clustering.n_clusters=[30,8,3]",
    "clustering.n_resampling_steps=[1,2,2]",
    "clustering.sample_size=[5,2,2]",
    "clustering.n_iters=10",
]


def _levels(clusters_h5: Path) -> dict[str, np.ndarray]:
    with h5py.File(clusters_h5, "r") as f:
        return {
            f"{level}/{name}": f[level][name][()]
            for level in ("level_1", "level_2", "level_3")
            for name in ("assignment", "sizes", "resampling_objective")
        } | {"cutout_id": f["cutout_id"][()]}


@pytest.mark.slow
def test_curate_on_two_ranks_killed_after_level_one_resumes_in_one_process_to_the_single_process_result(
    compose, features_run, runs_dir, data_dir, tmp_path
):
    x, _ = planted([1200, 500, 100, 60, 40], dim=12, separation=20.0, seed=0)
    features_id = features_run(x.astype(np.float16))
    reference = curate.run(compose("curate", [f"features_id={features_id}", *SMALL]))
    want = _levels(runs_dir / "cluster" / reference["clusters_id"] / "clusters.h5")
    # The same clustering on the distributed backend: two ranks under torchrun; rank 0 dies (SIGKILL) once
    # it has saved level 1, and torchrun stops rank 1.
    overrides = [f"features_id={features_id}", *SMALL, "clustering/backend=distributed"]
    store = [f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}", "logger=csv"]
    killer = str(ROOT / "tests" / "kill_after.py")
    target = "radio_curation.tasks.curate:save_level"
    done = torchrun(2, killer, target, "1", str(ROOT / "curate.py"), *overrides, *store, cwd=tmp_path)
    assert done.returncode != 0
    (run_dir,) = (p for p in (runs_dir / "cluster").iterdir() if p.name != reference["clusters_id"])
    assert sorted(p.name for p in (run_dir / "levels").iterdir()) == ["conditioning.h5", "level_1.h5"]
    # One process resumes after level 1: the ranks' level 1, then levels 2 and 3 here.
    resumed = curate.run(compose("curate", overrides))
    manifest = read_manifest(run_dir)
    assert resumed["clusters_id"] == run_dir.name and manifest["status"] == "complete"
    assert manifest["info"]["resumed_after_level"] == 1 and manifest["attempts"] == 2
    got = _levels(run_dir / "clusters.h5")
    for name, value in want.items():
        if "objective" in name:
            np.testing.assert_allclose(got[name], value, rtol=1e-3, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize("spherical", [False, True])
@pytest.mark.parametrize(
    "backend", [FaissBackend("cpu", threads=1), TorchBackend("cpu")], ids=["faiss", "torch"]
)
def test_assignment_of_a_row_does_not_depend_on_the_rows_around_it(backend, spherical):
    # What makes 2 ranks equal 1 process: the products round a row differently in different blocks.
    x = np.random.default_rng(1).standard_normal((20000, 384)).astype(np.float32)
    if spherical:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    centroids = x[:: 20000 // 300][:300] + 0.01
    labels, dist = backend.assign(x, centroids, spherical)
    cuts = [0, 1237, 9001, 20000]
    parts = [backend.assign(x[a:b], centroids, spherical) for a, b in itertools.pairwise(cuts)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), labels)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), dist)
