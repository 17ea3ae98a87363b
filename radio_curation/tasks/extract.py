"""``extract.py``: the cutouts, merge and features stages, chosen by the ``stage`` config group."""

from __future__ import annotations

from typing import Any

from hydra.utils import get_method
from omegaconf import DictConfig


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the stage selected by ``stage=<name>`` (``configs/stage/<name>.yaml`` names its task)."""
    return get_method(cfg.stage.task)(cfg)
