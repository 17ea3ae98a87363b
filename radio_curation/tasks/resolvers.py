"""OmegaConf resolvers: ``${rc_run_dir:}``, the directory of the run a config describes."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def run_dir(*, _root_: DictConfig) -> str:
    """``${rc_run_dir:}``: the run's directory; Hydra's output directory, and the checkpoint callback's."""
    # Imported when a run starts: the stage framework brings Lightning, which --help does not need.
    from radio_curation.runs.stage import expected_run_dir

    return str(expected_run_dir(_root_))


def register_resolvers() -> None:
    """Register the project's resolvers (idempotent)."""
    if not OmegaConf.has_resolver("rc_run_dir"):
        OmegaConf.register_new_resolver("rc_run_dir", run_dir)
