from __future__ import annotations

import pytest

from radio_curation.distributed import RANK_VARIABLES, launched_rank


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, 0),
        ({"RANK": "3"}, 3),
        ({"LOCAL_RANK": "1"}, 1),
        ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, 1),
        ({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"}, 2),
        ({"SLURM_NTASKS": "1", "SLURM_PROCID": "5"}, 0),
    ],
)
def test_launched_rank(monkeypatch, env, rank):
    for key in (*RANK_VARIABLES, "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launched_rank() == rank
