"""A small merged index on the synthetic sky and the overrides of a tiny, fast training run."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from omegaconf import DictConfig

from radio_curation.tasks import cutouts as cutouts_task
from radio_curation.tasks import merge as merge_task

SKY = ["survey.mosaics=2", "survey.size=256"]

#: Per-method head widths small enough for 2 CPU cores.
TINY_HEADS = {
    "byol": ["ssl.projection_hidden_dim=64", "ssl.projection_dim=32", "ssl.prediction_hidden_dim=64"],
    "simclr": ["ssl.projection_hidden_dim=64", "ssl.projection_dim=32"],
    "vicreg": ["ssl.projection_hidden_dim=64", "ssl.projection_dim=64"],
    "dino": ["ssl.hidden_dim=64", "ssl.bottleneck_dim=16", "ssl.output_dim=128", "ssl.n_local_views=2"],
}


def tiny(method: str = "byol", *extra: str) -> list[str]:
    """Overrides for a tiny timm ResNet on 32 px views, a few small batches, on the CPU."""
    return [
        f"ssl={method}",
        *TINY_HEADS[method],
        "backbone=timm",
        "backbone.name=test_resnet",
        "backbone.input_size=32",
        "augmentation.global_size=32",
        "augmentation.local_size=16",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "ssl.warmup_epochs=0",
        *extra,
    ]


@pytest.fixture
def merge_id(compose: Callable[..., DictConfig]) -> str:
    """A merge run of 32 px sliding windows over a two-mosaic, 256 px synthetic sky."""
    cutouts = cutouts_task.run(compose("extract", ["stage=cutouts", *SKY, "cutouts.window_size=32"]))[
        "run_id"
    ]
    return merge_task.run(compose("extract", ["stage=merge", f"cutouts_ids=[{cutouts}]"]))["run_id"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny models gain nothing from two, and lose a lot when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
