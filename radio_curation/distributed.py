"""Which process of a multi-process launch this is, before Lightning has set anything up.

Under DDP every rank runs the stage's task: rank 0 owns the run (store lease, manifest, trackers) and the
other ranks work in its run directory. Lightning's DDP children and torchrun set ``RANK``/``LOCAL_RANK``/
``NODE_RANK``; ``srun`` with several tasks sets ``SLURM_PROCID``.
"""

from __future__ import annotations

import os

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")


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
