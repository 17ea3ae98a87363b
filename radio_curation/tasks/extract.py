"""``extract.py``: the cutouts, merge and features stages, chosen by the ``stage`` config group."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from radio_curation.runs.stage import run_stage, stage_of


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the stage selected by ``stage=<name>`` (``configs/stage/<name>.yaml`` names its declaration)."""
    return run_stage(cfg, stage_of(cfg))
