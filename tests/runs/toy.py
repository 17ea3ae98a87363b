"""A toy stage for testing the run store: real runs, tiny work."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from radio_curation.runs.settings import NonNegativeInt, PositiveInt
from radio_curation.runs.stage import Run, Stage, run_stage


def toy_cfg(runs_dir: Path, force: bool = False, source_id: str | None = None, **params: Any) -> DictConfig:
    cfg = OmegaConf.create(
        {
            "paths": {"runs_dir": str(runs_dir)},
            "force": force,
            "experiment_name": "tests",
            "logger": {"csv": {"_target_": "radio_curation.tracking.csv.CsvTracker", "_partial_": True}},
            "stage": {"declaration": "tests.runs.toy.TOY"},
            "source_id": source_id,
            "params": {"a": 1, "workers": 1, **params},
        }
    )
    OmegaConf.set_struct(cfg, True)
    return cfg


def write_numbers(run: Run) -> None:
    """Write ``params.a`` numbers to numbers.txt and count them."""
    with run.artifact("numbers.txt") as tmp:
        tmp.write_text("\n".join(str(i) for i in range(run.cfg.params.a)))
    run.counts["numbers"] = int(run.cfg.params.a)
    run.metrics["sum"] = float(sum(range(run.cfg.params.a)))


TOY = Stage(
    name="toy",
    work=write_numbers,
    settings={"params": {"a": NonNegativeInt, "workers": PositiveInt}},
    parents={"source_id": "toy"},
    execution={"params.workers": PositiveInt},
    headline="metrics.sum",
)


def toy_run(runs_dir: Path, work=write_numbers, resumable=("partial*",), **kwargs: Any) -> dict[str, Any]:
    """A toy run; files named ``partial*`` are the partial work a failed run keeps to resume."""
    cfg = toy_cfg(runs_dir, **kwargs)
    return run_stage(cfg, replace(TOY, work=work, resumable=tuple(resumable)))


def toy_run_in_process(runs_dir: str, force: bool, a: int, marker_dir: str) -> str:
    """Entry for multiprocessing tests: returns the run ID; leaves one marker file per executed work."""
    import os
    import time

    def work(run: Run) -> None:
        Path(marker_dir, f"{run.run_id}.{os.getpid()}").touch()
        time.sleep(0.3)
        write_numbers(run)

    return toy_run(Path(runs_dir), work=work, force=force, a=a)["run_id"]
