"""The ``distributed`` k-means backend: level 1's rows sharded over the processes of ``torchrun`` or of a
SLURM job's tasks, upper levels replicated on every rank.

Each rank assigns its own rows (faiss on the CPU, torch on its GPU); every Lloyd iteration all-reduces the
float64 centroid sums, counts and objective (:mod:`radio_curation.curation.sharded`), so every rank holds
the same centroids. Processes talk over gloo on CPUs and NCCL on GPUs. One process alone (no launcher)
is a single rank and needs no process group.
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Any, Literal

import numpy as np
import torch
from lightning_fabric.plugins.environments import (
    ClusterEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

from radio_curation.curation.backends import FaissBackend, KMeansBackend, TorchBackend
from radio_curation.curation.sharded import LOCAL, Collective, TorchCollective
from radio_curation.distributed import in_srun_task
from radio_curation.errors import RadioCurationError
from radio_curation.runs.settings import PositiveFloat


def launch_environment() -> ClusterEnvironment | None:
    """The launcher that started this process as one of several (torchrun, or ``srun`` with several tasks),
    or ``None`` for a process on its own."""
    if TorchElasticEnvironment.detect():
        return TorchElasticEnvironment()
    if in_srun_task() and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return SLURMEnvironment(auto_requeue=False)
    return None


def cpu_threads() -> int:
    """This rank's share of the cores: a SLURM task's ``cpus_per_task``, else the cores this process may
    use divided by the ranks on this machine (torchrun leaves every rank all of them)."""
    if "SLURM_CPUS_PER_TASK" in os.environ and in_srun_task():
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    return max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


class DistributedBackend(KMeansBackend):
    """k-means over the ranks of a ``torch.distributed`` launch (see the module docstring).

    Parameters
    ----------
    device
        ``auto`` (this rank's GPU, ``cuda:<local rank>``, when torch sees one, else the CPU), ``cpu`` or
        ``cuda``.
    timeout_min
        Minutes a rank waits in a collective for the others before the run fails.
    max_gather_gb
        Largest training set copied onto every rank for k-means++ initialisation of level 1; above it the
        run stops before it starts, naming the settings that fit.
    """

    name = "distributed"

    def __init__(
        self,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        timeout_min: PositiveFloat = 30.0,
        max_gather_gb: PositiveFloat = 4.0,
    ) -> None:
        self.environment = launch_environment()
        self.world_size = self.environment.world_size() if self.environment else 1
        local_rank = self.environment.local_rank() if self.environment else 0
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            if not torch.cuda.is_available():
                raise RadioCurationError("clustering.backend.device=cuda but torch sees no CUDA device")
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
            self.local: KMeansBackend = TorchBackend(device)
        else:
            self.local = FaissBackend("cpu", threads=cpu_threads())
        self.device = device
        self.timeout = timedelta(minutes=float(timeout_min))
        self.max_gather_bytes = float(max_gather_gb) * 1e9
        self._comm: Collective | None = None

    @property
    def comm(self) -> Collective:  # type: ignore[override]
        """The ranks' collective, the process group started on first use."""
        if self._comm is None:
            self._comm = LOCAL if self.environment is None or self.world_size == 1 else self._join()
        return self._comm

    def _join(self) -> Collective:
        import torch.distributed as dist

        env = self.environment
        if not dist.is_initialized():
            if self.device.startswith("cuda"):
                torch.cuda.set_device(self.device)
            dist.init_process_group(
                "nccl" if self.device.startswith("cuda") else "gloo",
                init_method=f"tcp://{env.main_address}:{env.main_port}",
                rank=env.global_rank(),
                world_size=self.world_size,
                timeout=self.timeout,
            )
            atexit.register(dist.destroy_process_group)
        return TorchCollective(self.device, self.max_gather_bytes)

    @property
    def replicated(self) -> KMeansBackend:
        return self.local

    @property
    def init_device(self) -> str:
        return self.local.init_device

    def assign(self, x: np.ndarray, centroids: np.ndarray, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
        return self.local.assign(x, centroids, spherical)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "ranks": self.world_size,
            "process_group": None if self.world_size == 1 else ("nccl" if "cuda" in self.device else "gloo"),
            "per_rank": self.local.describe(),
        }
