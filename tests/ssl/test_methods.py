"""The SSL LightningModules on a tiny stand-in backbone: losses, momentum, optimiser and schedules."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from radio_curation.distributed import lightning_outside_srun
from radio_curation.errors import RadioCurationError
from radio_curation.ssl import momentum as momentum_module
from radio_curation.ssl.byol import BYOL
from radio_curation.ssl.dino import DINO
from radio_curation.ssl.simclr import SimCLR
from radio_curation.ssl.vicreg import VICReg
from tests.ssl.tiny import HEADS, TinyBackbone, augmentation, lars

METHODS = {"byol": BYOL, "simclr": SimCLR, "dino": DINO, "vicreg": VICReg}


@pytest.fixture(autouse=True)
def _lightning_in_the_test_process():
    """These tests run Lightning's trainer right here, outside srun, also where SLURM is installed."""
    with lightning_outside_srun():
        yield


def _model(name: str, **kwargs):
    n_local = HEADS[name].get("n_local_views", 0)
    return METHODS[name](TinyBackbone(), augmentation(n_local), lars(), **{**HEADS[name], **kwargs})


def _loader(n: int = 32, batch_size: int = 8) -> DataLoader:
    torch.manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 1, 24, 24)), batch_size=batch_size, drop_last=True)


def _trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**{**defaults, **kwargs})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_fast_dev_run_trains_the_backbone_and_logs_the_monitors(name):
    model = _model(name, warmup_epochs=0)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    trainer = _trainer(fast_dev_run=2)
    trainer.fit(model, _loader())
    after = list(model.backbone.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"])
    assert {"train/lr", "train/embedding_std", "train/images_per_sec", "train/rankme"} <= set(metrics)
    assert metrics["train/images_per_sec"] > 0
    # RankMe of the 2 × 8 embeddings of the run: at most the 16 rows, and not collapsed to one direction.
    assert 1.5 < metrics["train/rankme"] <= 16


@pytest.mark.parametrize("name", ["byol", "dino"])
def test_momentum_network_is_frozen_and_follows_the_online_network(name):
    model = _model(name, momentum=(0.5, 0.5))
    teacher = model.backbone_momentum if name == "byol" else model.teacher_backbone
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(id(p) not in {id(q) for q in teacher.parameters()} for p in model.backbone.parameters())
    start = [p.detach().clone() for p in teacher.parameters()]
    trainer = _trainer(max_steps=3)
    trainer.fit(model, _loader())
    # The teacher moved (EMA of a changing student) but is not the student.
    moved = [not torch.equal(a, b) for a, b in zip(start, teacher.parameters(), strict=True)]
    same = [torch.equal(a, b) for a, b in zip(model.backbone.parameters(), teacher.parameters(), strict=True)]
    assert any(moved) and not all(same)
    # The optimizer holds no momentum-network parameters.
    held = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not held & {id(p) for p in teacher.parameters()}


def _record_momentum_updates(monkeypatch) -> list[tuple[nn.Module, float]]:
    calls: list[tuple[nn.Module, float]] = []
    real = momentum_module.update_momentum

    def update(online, copy, m):
        calls.append((copy, float(m)))
        real(online, copy, m)

    monkeypatch.setattr(momentum_module, "update_momentum", update)
    return calls


def test_byol_momentum_follows_a_cosine_schedule_to_one(monkeypatch):
    model = _model("byol", momentum=(0.9, 1.0))
    calls = _record_momentum_updates(monkeypatch)
    trainer = _trainer(max_epochs=3)
    trainer.fit(model, _loader())
    seen = [m for copy, m in calls if copy is model.backbone_momentum]
    assert len(seen) == trainer.global_step == 12
    assert seen[0] == pytest.approx(0.9)
    assert seen[-1] == pytest.approx(1.0)
    assert all(a <= b for a, b in itertools.pairwise(seen))


@pytest.mark.parametrize("name", ["byol", "dino"])
def test_momentum_copies_are_updated_once_per_optimiser_step_with_accumulation(name, monkeypatch):
    model = _model(name, momentum=(0.5, 0.9))
    calls = _record_momentum_updates(monkeypatch)
    seen_batches = []

    class Count(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen_batches.append(batch_idx)

    trainer = _trainer(max_steps=3, accumulate_grad_batches=2, callbacks=[Count()])
    trainer.fit(model, _loader())
    assert len(seen_batches) == 6 and trainer.global_step == 3
    copies = [copy for copy, _ in calls]
    teacher = model.backbone_momentum if name == "byol" else model.teacher_backbone
    # Two copies (backbone and head) per optimiser step, with the scheduled factor of that step.
    assert len(calls) == 2 * 3 and sum(c is teacher for c in copies) == 3
    assert [m for c, m in calls if c is teacher] == pytest.approx([0.5, 0.5 + 0.4 * 0.5, 0.9])
    assert float(trainer.callback_metrics["train/momentum"]) == pytest.approx(0.9)


def test_dino_exports_the_teacher_and_freezes_the_last_layer_in_the_first_epoch():
    model = _model("dino", freeze_last_layer=1)
    assert model.export_backbone() is model.teacher_backbone
    last = model.head.last_layer.weight_v.detach().clone()
    _trainer(max_epochs=1).fit(model, _loader())
    assert torch.equal(model.head.last_layer.weight_v, last)
    _trainer(max_epochs=2).fit(model, _loader())
    assert not torch.equal(model.head.last_layer.weight_v, last)


def test_optimizer_groups_schedule_and_batch_scaled_learning_rate():
    model = _model("simclr", warmup_epochs=1, min_lr_ratio=0.01, lr_batch_size=16)
    lrs = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    class WithBatchSize(pl.LightningDataModule):
        batch_size = 8

        def train_dataloader(self):
            return _loader(batch_size=self.batch_size)

    trainer = _trainer(max_epochs=4, callbacks=[Record()])
    trainer.fit(model, datamodule=WithBatchSize())
    groups = trainer.optimizers[0].param_groups
    assert [g["name"] for g in groups] == ["default", "no_weight_decay"]
    assert groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] > 0
    bn_and_bias = {id(p) for n, p in model.named_parameters() if n.endswith("bias") or ".1." in n}
    assert bn_and_bias <= {id(p) for p in groups[1]["params"]}
    peak = 0.2 * 8 / 16  # lr for 16 images, global batch 8
    # 4 batches per epoch: warm-up over the first epoch, then cosine decay to 1% of the peak.
    assert lrs[:4] == pytest.approx([peak * k / 4 for k in (1, 2, 3, 4)])
    assert max(lrs) == pytest.approx(peak)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    assert lrs[-1] == pytest.approx(0.01 * peak)


def test_warm_up_epochs_are_the_datamodule_s_when_max_steps_bounds_the_fit():
    model = _model("simclr", warmup_epochs=1, min_lr_ratio=0.01, lr_batch_size=8)
    lrs = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    class Windows(pl.LightningDataModule):
        batch_size = 8
        cutout_ids = np.arange(32)

        def train_dataloader(self):
            return _loader(n=len(self.cutout_ids), batch_size=self.batch_size)

    trainer = _trainer(max_steps=12, callbacks=[Record()])  # max_epochs=-1: Lightning counts no epochs
    trainer.fit(model, datamodule=Windows())
    # 32 windows in batches of 8: the one-epoch warm-up is 4 steps of the 12.
    assert lrs[:4] == pytest.approx([0.2 * k / 4 for k in (1, 2, 3, 4)])
    assert lrs[4] == pytest.approx(0.2) and lrs[5] < lrs[4] and len(lrs) == 12


def test_learning_rate_scales_with_the_global_batch_including_accumulation():
    model = _model("byol", warmup_epochs=0, lr_batch_size=256)

    class WithBatchSize(pl.LightningDataModule):
        batch_size = 8

        def train_dataloader(self):
            return _loader(batch_size=self.batch_size)

    trainer = _trainer(max_steps=1, accumulate_grad_batches=4)
    trainer.fit(model, datamodule=WithBatchSize())
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == pytest.approx(0.2 * 8 * 4 / 256)


def test_adamw_is_a_drop_in_optimizer():
    adamw = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05)
    model = BYOL(TinyBackbone(), augmentation(), adamw, **HEADS["byol"])
    trainer = _trainer(max_steps=2)
    trainer.fit(model, _loader())
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    default, no_decay = optimizer.param_groups
    assert (default["name"], no_decay["name"]) == ("default", "no_weight_decay")
    assert default["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert default["initial_lr"] == no_decay["initial_lr"] == 1e-3  # no batch scaling without a datamodule
    # Weights decay, biases and normalisation parameters do not; every trainable parameter in one group.
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(not names[id(p)].endswith("bias") and p.ndim > 1 for p in default["params"])
    assert all(names[id(p)].endswith("bias") or p.ndim == 1 for p in no_decay["params"])
    trainable = {id(p) for m in model.trainable_modules() for p in m.parameters() if p.requires_grad}
    assert {id(p) for p in default["params"] + no_decay["params"]} == trainable
    assert all(optimizer.state[p]["step"] == 2 for p in default["params"])  # Adam moments after 2 steps


def test_unbounded_training_is_a_clear_error():
    model = _model("byol")
    with pytest.raises(RadioCurationError, match="max_epochs"):
        _trainer(max_epochs=-1, max_steps=-1).fit(model, _loader())


@pytest.mark.parametrize(
    ("name", "n_local"),
    [("byol", 2), ("simclr", 1), ("dino", 0), ("vicreg", 2)],
)
def test_view_count_must_match_the_method(name, n_local):
    kwargs = {k: v for k, v in HEADS[name].items()}
    with pytest.raises(RadioCurationError, match="views"):
        METHODS[name](TinyBackbone(), augmentation(n_local), lars(), **kwargs)


def test_optimizer_without_lr_is_a_clear_error():
    no_lr = functools.partial(torch.optim.SGD, momentum=0.9)
    with pytest.raises(RadioCurationError, match="lr"):
        SimCLR(TinyBackbone(), augmentation(), no_lr, **HEADS["simclr"])
