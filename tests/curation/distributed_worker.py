"""One rank of the distributed hierarchical k-means test, started by torchrun.

``torchrun --nproc_per_node N tests/curation/distributed_worker.py OUT.npz``: every rank clusters its
contiguous share of :data:`POINTS` under each of :data:`CASES`; rank 0 writes every level's assignment,
centroids and objectives to ``OUT.npz``.
"""

from __future__ import annotations

import sys

import numpy as np

from radio_curation.curation.distributed import DistributedBackend
from radio_curation.curation.kmeans import HierarchicalKMeans, select_per_cluster
from radio_curation.curation.sharded import random_keys, smallest_per_cluster
from tests.curation.planted import planted

#: Planted clusters close enough to overlap, so that assignments are not trivially stable.
POINTS = {"sizes": [1500, 600, 300, 120, 60, 30], "dim": 16, "separation": 8.0, "seed": 2}
COMMON = {"n_clusters": [40, 8, 3], "n_resampling_steps": [2, 2, 1], "sample_size": [10, 3, 2], "n_iters": 15}
#: Random init with resampling of the closest points; k-means++ on a training subsample with random
#: resampling; random init on points half of which are one row, so that clusters start empty and take
#: the farthest points; k-means‖ (its rounds' draws and D² sums over the ranks) on a training subsample.
CASES = {
    "random_closest": {"init": "random", "sampling_strategy": "closest"},
    "kmeans++_random": {"init": "kmeans++", "sampling_strategy": "random", "max_points_per_centroid": 5},
    "kmeans_parallel": {
        "init": "kmeans_parallel",
        "sampling_strategy": "closest",
        "max_points_per_centroid": 20,
    },
    "empty_clusters": {"init": "random", "sampling_strategy": "closest"},
}


def points(case: str) -> np.ndarray:
    x = planted(**POINTS)[0]
    if case == "empty_clusters":
        x[::2] = x[0]
    return x


def fit(case: str, x: np.ndarray, backend) -> dict[str, np.ndarray]:
    """The levels of ``case`` on ``x`` (this rank's rows), flattened into named arrays."""
    levels = HierarchicalKMeans(**COMMON, **CASES[case], backend=backend).fit(x, seed=0)
    out = {}
    for i, level in enumerate(levels, start=1):
        for name in ("assignment", "centroids", "sizes", "objective", "resampling_objective"):
            out[f"{case}/level_{i}/{name}"] = getattr(level, name)
    return out


def main(path: str) -> None:
    backend = DistributedBackend("cpu")
    comm = backend.comm
    x = points("")
    lo, hi = len(x) * comm.rank // comm.world_size, len(x) * (comm.rank + 1) // comm.world_size
    out = {}
    for case in CASES:
        out.update(fit(case, points(case)[lo:hi], backend))
    # Resampling's selection with many tied keys (coarse random keys), against the single-process one.
    assignment = np.random.default_rng(5).integers(0, 7, len(x))
    key = np.floor(random_keys(len(x), 0, 9) * 4)
    picked = smallest_per_cluster(assignment[lo:hi], key[lo:hi], 20, 7, comm) + lo
    out["ties/picked"] = np.concatenate(comm.gather(picked))
    out["ties/reference"] = select_per_cluster(assignment, key, 20)
    out["world_size"] = np.array(comm.world_size)
    if comm.rank == 0:
        np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
