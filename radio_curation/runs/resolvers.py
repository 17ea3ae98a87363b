"""OmegaConf resolvers that let Hydra's output directory be the run directory."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from radio_curation.runs.identity import stage_identity
from radio_curation.runs.store import RunStore, first_open_run_id


def run_dir(*, _root_: DictConfig) -> str:
    """``${rc_run_dir:}``: the directory of the run the root config's ``stage`` spec describes."""
    store = RunStore(_root_.paths.runs_dir)
    identity = stage_identity(_root_, _root_.stage)
    return str(store.run_dir(first_open_run_id(store, identity.base_id, bool(_root_.force))))


def register_resolvers() -> None:
    """Register the project's resolvers (idempotent)."""
    if not OmegaConf.has_resolver("rc_run_dir"):
        OmegaConf.register_new_resolver("rc_run_dir", run_dir)
