"""Shared fixtures: compose the project's real root configs into temporary stores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from radio_curation.tasks.resolvers import register_resolvers

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

register_resolvers()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the whole session, so generated skies are made once and reused."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """A fresh run store for each test."""
    return tmp_path / "runs"


@pytest.fixture
def compose(runs_dir: Path, data_dir: Path) -> Callable[..., DictConfig]:
    """``compose("extract", ["stage=merge", ...])``: a root config with this test's store and data dir."""

    def _compose(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(
                config_name,
                overrides=[
                    f"paths.runs_dir={runs_dir}",
                    f"paths.data_dir={data_dir}",
                    "logger=csv",
                    *overrides,
                ],
            )

    return _compose


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data beside the checkout (MiraBest, LoTSS DR2 headers)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not there")
    return SHARED_DATA
