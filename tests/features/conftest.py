"""A small merged index on the synthetic sky (two window sizes) and a tiny saved backbone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from omegaconf import DictConfig

from radio_curation.tasks import cutouts as cutouts_task
from radio_curation.tasks import merge as merge_task

SKY = ["survey.mosaics=2", "survey.size=256"]


@pytest.fixture
def merge_id(compose: Callable[..., DictConfig]) -> str:
    """A merge run of 32 px and 64 px sliding windows over a two-mosaic synthetic sky."""
    ids = [
        cutouts_task.run(compose("extract", ["stage=cutouts", *SKY, f"cutouts.window_size={size}"]))["run_id"]
        for size in (32, 64)
    ]
    return merge_task.run(compose("extract", ["stage=merge", f"cutouts_ids=[{','.join(ids)}]"]))["run_id"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights of timm's ``test_vit`` (one input channel), so every build gives the same model."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "test_vit.pth"
    torch.save(timm.create_model("test_vit", pretrained=False, num_classes=0, in_chans=1).state_dict(), path)
    return path


@pytest.fixture
def features_overrides(merge_id: str, tiny_checkpoint: Path) -> list[str]:
    """Overrides for a fast features run of the merged index with the tiny backbone."""
    return [
        "stage=features",
        f"source_id={merge_id}",
        "backbone=timm",
        "backbone.name=test_vit",
        f"backbone.checkpoint={tiny_checkpoint}",
        "normalization=minmax",
        "resize=32",
        "batch_size=16",
        "num_workers=0",
        "accelerator=cpu",
    ]
