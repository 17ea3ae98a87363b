"""OmegaConf resolvers: Hydra's output directory is the run directory; rows a limited features run takes."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from radio_curation.runs.identity import stage_identity
from radio_curation.runs.store import RunStore, first_open_run_id


def expected_run_dir(cfg: DictConfig) -> Path:
    """The directory of the run ``cfg.stage`` describes, the one rank 0 will lease (other ranks work there)."""
    store = RunStore(cfg.paths.runs_dir)
    identity = stage_identity(cfg, cfg.stage)
    return store.run_dir(first_open_run_id(store, identity.base_id, bool(cfg.force)))


def run_dir(*, _root_: DictConfig) -> str:
    """``${rc_run_dir:}``: Hydra's output directory is the run's directory."""
    return str(expected_run_dir(_root_))


def limit_rows(limit_batches: int | None, batch_size: int) -> int | None:
    """``${rc_limit_rows:${limit_batches},${batch_size}}``: windows a ``limit_batches`` run extracts (None: all).

    Part of a features run's identity, so that two runs that differ only in ``batch_size`` (otherwise
    execution-only) but extract different numbers of rows never share an ID.
    """
    return None if limit_batches is None else int(limit_batches) * int(batch_size)


def register_resolvers() -> None:
    """Register the project's resolvers (idempotent)."""
    if not OmegaConf.has_resolver("rc_run_dir"):
        OmegaConf.register_new_resolver("rc_run_dir", run_dir)
    if not OmegaConf.has_resolver("rc_limit_rows"):
        OmegaConf.register_new_resolver("rc_limit_rows", limit_rows)
