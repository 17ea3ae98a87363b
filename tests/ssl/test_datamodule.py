"""The training DataModule: batched raw windows from the reader or from the pixel cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from radio_curation.cutouts.reader import WindowReader
from radio_curation.data.augmentation import RadioAugmentation
from radio_curation.data.datamodule import (
    ReaderWindows,
    ResidentWindows,
    TrainingWindows,
    WindowRows,
    write_cache,
)
from radio_curation.errors import RadioCurationError
from radio_curation.runs.store import RunStore
from tests.curation.test_distributed_kmeans import torchrun
from tests.ssl import resident_worker


@pytest.fixture
def merged(merge_id, runs_dir):
    return RunStore(runs_dir).resolve(merge_id, stage="merge").artifact("merged.h5")


def _epoch(dm: TrainingWindows) -> list[torch.Tensor]:
    dm.setup("fit")
    return list(dm.train_dataloader())


@pytest.mark.parametrize(("cache", "resident_gb"), [(False, 0), (True, 0), (False, 1), (True, 1)])
def test_an_epoch_is_full_shuffled_batches_of_distinct_raw_windows(merged, tmp_path, cache, resident_gb):
    reader = WindowReader(merged)
    ids = reader.cutout_ids[::2]
    dm = TrainingWindows(
        merged, ids, batch_size=16, cache_path=tmp_path / "c.h5" if cache else None, resident_gb=resident_gb
    )
    dm.prepare_data()
    batches = _epoch(dm)
    assert len(batches) == len(ids) // 16
    assert all(b.shape == (16, 1, 32, 32) and b.dtype == torch.float32 for b in batches)
    # Every window delivered is one of the source's, none twice in an epoch.
    pixels = reader.read(ids).reshape(len(ids), -1)
    lookup = {row.tobytes(): i for i, row in enumerate(pixels)}
    seen = [lookup[w.numpy().reshape(-1).tobytes()] for b in batches for w in b]
    assert len(set(seen)) == len(seen) == len(batches) * 16
    # The order of an epoch depends on (seed, epoch) only, not on the global RNG a resumed run re-seeds.
    torch.manual_seed(1)
    assert [lookup[w.numpy().reshape(-1).tobytes()] for b in _epoch(dm) for w in b] == seen
    loader = dm.train_dataloader()
    loader.batch_sampler.sampler.set_epoch(1)
    again = [lookup[w.numpy().reshape(-1).tobytes()] for b in loader for w in b]
    assert len(set(again)) == len(seen) and again != seen  # reshuffled every epoch


def test_cache_is_rewritten_when_the_windows_change(merged, tmp_path):
    ids = WindowReader(merged).cutout_ids
    path = write_cache(merged, ids[:40], tmp_path / "c.h5")
    dm = TrainingWindows(merged, ids[:48], batch_size=16, cache_path=path)
    assert not dm._cache_is_current()
    dm.prepare_data()
    assert dm._cache_is_current()
    assert not list(tmp_path.glob(".*tmp*"))


def test_batch_larger_than_the_source_is_a_clear_error(merged):
    ids = WindowReader(merged).cutout_ids[:10]
    with pytest.raises(RadioCurationError, match=r"data\.batch_size=16"):
        TrainingWindows(merged, ids, batch_size=16)


def test_readers_work_in_dataloader_workers(merged):
    reader = WindowReader(merged)
    ids = reader.cutout_ids[:64]
    dm = TrainingWindows(merged, ids, batch_size=16, num_workers=2)
    batches = _epoch(dm)
    assert len(batches) == 4
    # The two workers between them deliver each window once, pixel for pixel.
    delivered = sorted(w.numpy().tobytes() for b in batches for w in b)
    assert delivered == sorted(w.astype(np.float32).tobytes() for w in reader.read(ids))


def test_views_can_be_made_in_the_workers(merged):
    reader = WindowReader(merged)
    ids = reader.cutout_ids[:64]
    # Whole-window crops and no random photometric change: every global view is the window resized.
    augmentation = RadioAugmentation(
        torch.nn.Identity(),
        3,
        global_size=24,
        local_size=12,
        n_local=1,
        global_scale=(1.0, 1.0),
        rotate=False,
        flip=False,
        blur_prob=0.0,
        noise_prob=0.0,
        contrast_prob=0.0,
    )
    dm = TrainingWindows(merged, ids, batch_size=16, num_workers=2, augmentation=augmentation)
    batches = _epoch(dm)
    assert len(batches) == 4
    windows = torch.from_numpy(reader.read(ids).astype(np.float32))
    resized = torch.nn.functional.interpolate(windows, size=24, mode="bilinear", antialias=True)
    matched = []
    for batch in batches:
        shapes = [tuple(v.shape) for v in batch["views"]]
        assert shapes == [(16, 3, 24, 24)] * 2 + [(16, 3, 12, 12)]
        first, second = batch["views"][:2]
        torch.testing.assert_close(first, second)
        assert torch.equal(first[:, :1].expand_as(first), first)  # three identical channels
        error = (first[:, None, 0] - resized[None, :, 0]).abs().amax(dim=(-2, -1))  # [16, 64]
        matched += error.argmin(dim=1).tolist()
        scale = resized.abs().amax()
        assert (error.amin(dim=1) < 0.05 * scale).all()
    assert sorted(matched) == list(range(64))  # each window made into views once


def test_resident_windows_are_bitwise_the_reader_batches(merged):
    ids = WindowReader(merged).cutout_ids[1::3]
    read = TrainingWindows(merged, ids, batch_size=16, resident_gb=0)
    resident = TrainingWindows(merged, ids, batch_size=16, resident_gb=1)
    read.setup("fit")
    resident.setup("fit")
    assert isinstance(resident.dataset, ResidentWindows) and isinstance(read.dataset, ReaderWindows)
    assert resident.resident_bytes() == len(ids) * 32 * 32 * 4
    # Too large for the budget: read a batch at a time.
    small = TrainingWindows(merged, ids, batch_size=16, resident_gb=1e-6)
    small.setup("fit")
    assert isinstance(small.dataset, ReaderWindows)
    torch.manual_seed(3)
    want = list(read.train_dataloader())
    torch.manual_seed(3)
    got = list(resident.train_dataloader())
    assert len(got) == len(want) and all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    # Workers read the shared tensor in place.
    resident.num_workers = 2
    torch.manual_seed(3)
    assert all(torch.equal(g, w) for g, w in zip(resident.train_dataloader(), want, strict=True))
    # On a CPU the rows never go to a device: the batches are the windows themselves.
    assert resident._on_device is None


def test_rows_gathered_after_the_transfer_are_the_windows(merged):
    ids = WindowReader(merged).cutout_ids[:40]
    dm = TrainingWindows(merged, ids, batch_size=8, resident_gb=1)
    dm.setup("fit")
    rows = WindowRows(len(ids)).__getitems__([7, 2, 30])
    assert rows.tolist() == [2, 7, 30]
    dm._on_device = dm._pixels
    np.testing.assert_array_equal(
        dm.on_after_batch_transfer(rows, 0).numpy(), WindowReader(merged).read(ids[[2, 7, 30]])
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resident_windows_move_to_the_gpu_that_makes_the_views(merged):
    ids = WindowReader(merged).cutout_ids[:64]
    dm = TrainingWindows(merged, ids, batch_size=16, num_workers=2, resident_gb=1)
    dm.trainer = pl.Trainer(accelerator="gpu", devices=1, logger=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert dm._on_device is not None and dm._on_device.is_cuda and loader.num_workers == 0
    rows = next(iter(loader))
    batch = dm.on_after_batch_transfer(rows.cuda(), 0)
    assert batch.is_cuda and torch.equal(
        batch.cpu(), torch.from_numpy(WindowReader(merged).read(ids[rows.numpy()]))
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loader_resumed_mid_epoch_hands_out_the_rest_of_that_epoch_with_the_same_views(merged, workers):
    ids = WindowReader(merged).cutout_ids[:64]
    augmentation = RadioAugmentation(torch.nn.Identity(), in_chans=1, global_size=16)
    dm = TrainingWindows(merged, ids, batch_size=8, num_workers=workers, augmentation=augmentation, seed=3)
    dm.setup("fit")
    full = dm.train_dataloader()
    full.batch_sampler.sampler.set_epoch(2)
    torch.manual_seed(0)
    want, state = [], None
    for i, batch in enumerate(full):
        want.append(batch["views"])
        if i == 2:
            state = full.state_dict()
    assert state == {"epoch": 2, "batches": 3}

    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    resumed.batch_sampler.sampler.set_epoch(2)
    torch.manual_seed(1)  # the global RNG of a fresh process plays no part
    got = [batch["views"] for batch in resumed]
    assert len(got) == len(want) - 3
    assert all(
        torch.equal(g, w) for gs, ws in zip(got, want[3:], strict=True) for g, w in zip(gs, ws, strict=True)
    )
    # The position applies to its epoch only: the next epoch is whole, with other batches and views.
    resumed.batch_sampler.sampler.set_epoch(3)
    later = [batch["views"][0] for batch in resumed]
    assert len(later) == len(want) and not torch.equal(later[0], want[0][0])


def test_the_ranks_of_a_node_share_one_copy_of_the_resident_windows(merged, tmp_path):
    shared, out = tmp_path / "shm", tmp_path / "out"
    shared.mkdir()
    out.mkdir()
    n = 16384  # 64 MiB of 32 px windows: far above the noise of a process's RSS
    done = torchrun(2, str(Path(resident_worker.__file__)), str(merged), str(shared), str(out), str(n))
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    ids = np.resize(WindowReader(merged).cutout_ids, n)
    want = hashlib.sha256(WindowReader(merged).read(ids).tobytes()).hexdigest()
    assert [r["sha256"] for r in ranks] == [want, want]
    assert ranks[0]["bytes"] == n * 32 * 32 * 4 and ranks[0]["batch_shape"] == [16, 1, 32, 32]
    # One copy: both ranks map the same file, and the second rank's memory did not grow by the windows.
    assert ranks[1]["rss_growth"] < 0.1 * ranks[0]["bytes"]
    assert ranks[0]["filename"] == ranks[1]["filename"]
    assert Path(ranks[0]["filename"]).parent == shared
    # The file is gone as soon as every rank has mapped it; a folder without room fails on every rank.
    assert [r["files_after_setup"] for r in ranks] == [[], []] and not list(shared.iterdir())
    assert all("failed on rank 0" in r["error"] and "missing" in r["error"] for r in ranks)
