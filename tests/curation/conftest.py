"""Fixtures for the curation stages: features runs in the contract format, made through the run store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from omegaconf import OmegaConf

from radio_curation.runs.stage import Run, Stage, run_stage


def write_features_run(runs_dir: Path, x: np.ndarray, ids: np.ndarray | None = None, tag: str = "x") -> str:
    """A complete features run whose ``features.h5`` holds ``x`` (float32 or float16) and ``ids``."""
    ids = np.arange(len(x), dtype=np.int64) * 7 + 3 if ids is None else ids
    cfg = OmegaConf.create(
        {
            "paths": {"runs_dir": str(runs_dir)},
            "force": False,
            "experiment_name": "tests",
            "logger": None,
            "data": {"tag": tag, "n": len(x), "dim": int(x.shape[1])},
        }
    )

    def work(run: Run) -> None:
        with run.artifact("features.h5") as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=x, chunks=(min(len(x), 256), x.shape[1]))
            f.create_dataset("cutout_id", data=ids)
            f.attrs.update(
                backbone="planted", tap="none", pooling="none", normalization="none", resize=0, dim=x.shape[1]
            )
        run.counts["features"] = len(x)

    stage = Stage(name="features", work=work, settings={"data": dict}, headline="counts.features")
    return run_stage(cfg, stage)["run_id"]


@pytest.fixture
def features_run(runs_dir: Path) -> Callable[..., str]:
    """``features_run(x, ids=None, tag="x")`` → the ID of a features run holding ``x``."""

    def _make(x: np.ndarray, ids: np.ndarray | None = None, tag: str = "x") -> str:
        return write_features_run(runs_dir, x, ids, tag)

    return _make
