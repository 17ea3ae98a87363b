"""Which process of a multi-process launch this is, before Lightning has set anything up.

Under DDP every rank runs the stage's task: rank 0 owns the run (store lease, manifest, trackers) and the
other ranks work in its run directory. Lightning's DDP children and torchrun set ``RANK``/``LOCAL_RANK``/
``NODE_RANK``; ``srun`` with several tasks sets ``SLURM_PROCID``. Lightning's cluster environment and
its warning about an unused ``srun`` are decided here too.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from lightning_fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
#: Lightning's warning when a process on a machine with ``srun`` runs outside it.
SRUN_UNUSED = r"The `srun` command is available on your system but is not used"


def launched_rank() -> int:
    """A rank above 0 when this is not the launch's first process, else 0.

    The value is the first non-zero of ``RANK``, ``LOCAL_RANK``, ``NODE_RANK``, ``GROUP_RANK``, then
    ``SLURM_PROCID`` when SLURM started several tasks; only "0 or not" is meant to be relied on.
    """
    for key in RANK_VARIABLES:
        if int(os.environ.get(key, "0") or 0) > 0:
            return int(os.environ[key])
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(os.environ.get("SLURM_PROCID", "0") or 0)
    return 0


def in_srun_task() -> bool:
    """True in a task that ``srun`` started: a step of a SLURM job (submitit starts every job's tasks so).

    Lightning's own test: ``SLURM_NTASKS`` is set and the job is not an interactive shell.
    """
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def cluster_plugins() -> list[ClusterEnvironment]:
    """The cluster environment to give a stage's Lightning ``Trainer``.

    Inside a SLURM job: SLURM's (ranks from ``srun``) without Lightning's own requeue on signal, since
    submitit requeues the job. Elsewhere: none, Lightning picks (its own DDP launcher, or torchrun's).
    """
    return [SLURMEnvironment(auto_requeue=False)] if in_srun_task() else []


@contextmanager
def lightning_outside_srun() -> Iterator[None]:
    """Run Lightning in this process, outside ``srun``, on purpose.

    A stage started by hand (a workstation, a cluster's login node, the test suite) runs Lightning right
    here; on a machine where SLURM is installed Lightning then warns, at every ``Trainer`` and every
    ``fit``/``predict``, that ``srun`` is available but unused, as if a SLURM job had forgotten it. A SLURM
    job of this project always runs under ``srun`` (submitit's launchers), so that warning is dropped here,
    and only outside ``srun``, where it cannot mean a misconfigured job.
    """
    with warnings.catch_warnings():
        if not in_srun_task():
            warnings.filterwarnings("ignore", message=SRUN_UNUSED)
        yield
