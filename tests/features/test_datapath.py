"""The features data path: windows cut from resident mosaics give bitwise the reader-fed features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from radio_curation.backbones import build_backbone
from radio_curation.cutouts.reader import WindowReader
from radio_curation.data.preprocess import Preprocess
from radio_curation.errors import RadioCurationError, instantiate_user
from radio_curation.features.extraction import (
    LOADER_PREFETCH,
    OUTPUT_BUFFERS,
    WindowBatches,
    _keep,
    cpu_threads,
)
from radio_curation.features.io import Plan
from radio_curation.features.matrix import FeatureFile
from radio_curation.runs.store import RunStore
from radio_curation.tasks import features as features_task


def _reader_fed(cfg, reader: WindowReader, plan: Plan) -> np.ndarray:
    """What the stage computed before windows were resident: ``WindowReader.read`` per batch, then the model."""
    extractor = build_backbone(cfg.backbone).eval()
    preprocess = Preprocess(instantiate_user(cfg.normalization), extractor.in_chans, cfg.resize)
    batches = WindowBatches(reader, plan, list(range(plan.n_blocks)), reader.table()["size"], cfg.batch_size)
    out = np.empty((plan.n_rows, extractor.feature_dim), np.float32)
    with torch.no_grad():
        for _, ids in batches.items:
            out[reader.rows(ids)] = extractor(preprocess(torch.from_numpy(reader.read(ids)))).numpy()
    return out


@pytest.mark.parametrize(
    "place",
    [
        ["gather_on=workers", "num_workers=0"],
        ["gather_on=workers", "num_workers=1"],
        # Upsampled in the loader worker by the separable kernel (one thread), in the reference by torch's.
        ["gather_on=workers", "num_workers=1", "resize=80"],
        ["gather_on=device"],
    ],
    ids=["in-process", "worker", "worker-upsampled", "device"],
)
def test_resident_windows_give_bitwise_the_reader_fed_features(
    compose, features_overrides, runs_dir, merge_id, place
):
    cfg = compose("extract", [*features_overrides, *place])
    result = features_task.run(cfg)
    reader = WindowReader(RunStore(runs_dir).resolve(merge_id, stage="merge").artifact("merged.h5"))
    sizes = reader.table()["size"]
    with FeatureFile(
        RunStore(runs_dir).resolve(result["run_id"], stage="features").artifact("features.h5")
    ) as ff:
        assert np.array_equal(ff.cutout_ids, reader.cutout_ids)
        got = ff.read()
    # Both window sizes and both mosaics were fed.
    assert set(np.unique(sizes)) == {32, 64}
    assert len(np.unique(reader.positions(reader.cutout_ids)["mosaic"])) == 2
    plan = Plan(len(reader.cutout_ids), features_task.BATCHES_PER_BLOCK * cfg.batch_size, merge_id)
    assert (
        len(WindowBatches(reader, plan, list(range(plan.n_blocks)), sizes, cfg.batch_size, gather=False)) > 20
    )
    threads = torch.get_num_threads()
    # The model's threads as the stage set them (cores not taken by loader processes).
    torch.set_num_threads(cpu_threads(2 if "num_workers=2" in place else 0))
    try:
        want = _reader_fed(cfg, reader, plan)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(got, want)


def test_positions_items_and_model_ready_items(compose, features_overrides, runs_dir, merge_id):
    cfg = compose("extract", features_overrides)
    reader = WindowReader(RunStore(runs_dir).resolve(merge_id, stage="merge").artifact("merged.h5"))
    sizes = reader.table()["size"]
    plan = Plan(len(reader.cutout_ids), 40, merge_id)
    preprocess = Preprocess(instantiate_user(cfg.normalization), 3, 48)
    positions = WindowBatches(reader, plan, [3, 1], sizes, 16, gather=False)
    ready = WindowBatches(reader, plan, [3, 1], sizes, 16, preprocess=preprocess)
    assert positions.rows == ready.rows == 80
    assert [block for block, _ in positions.items][:1] == [3]
    for index in range(len(positions)):
        where, item = positions[index], ready[index]
        ids = where["cutout_id"]
        assert np.array_equal(ids, item["cutout_id"]) and where["block"] == item["block"]
        pos = reader.positions(ids)
        assert np.array_equal(where["y0"], pos["y0"]) and where["size"] == int(pos["size"][0])
        # One channel, normalised and resized: the model's side repeats it.
        want = preprocess(torch.from_numpy(reader.read(ids)))
        assert item["inputs"].shape == (len(ids), 1, 48, 48)
        assert torch.equal(item["inputs"].expand(-1, 3, -1, -1), want)


def test_loader_workers_hand_out_each_shared_buffer_once_and_the_same_inputs(
    compose, features_overrides, runs_dir, merge_id
):
    cfg = compose("extract", features_overrides)
    reader = WindowReader(RunStore(runs_dir).resolve(merge_id, stage="merge").artifact("merged.h5"))
    plan = Plan(len(reader.cutout_ids), len(reader.cutout_ids), merge_id)
    preprocess = Preprocess(instantiate_user(cfg.normalization), 3, 40)
    ready = WindowBatches(reader, plan, [0], reader.table()["size"], 8, preprocess=preprocess)
    in_process = WindowBatches(reader, plan, [0], reader.table()["size"], 8, preprocess=preprocess)
    loader = DataLoader(
        ready, batch_size=None, num_workers=2, collate_fn=_keep, prefetch_factor=LOADER_PREFETCH
    )
    assert len(ready) > 2 * OUTPUT_BUFFERS + 2
    shared = []
    for index, item in enumerate(loader):
        shared.append("shared" in item)
        got = ready.delivered(item)
        want = in_process[index]
        # Consumed in order, each batch while its buffer is not yet reused: the model-ready windows of
        # the batch made in the model's process, bitwise.
        assert np.array_equal(got["cutout_id"], want["cutout_id"]) and got["block"] == want["block"]
        assert torch.equal(got["inputs"], want["inputs"])
    # Each worker's buffers cross the process boundary once, in its first batches; then only their keys.
    assert shared == [True] * (2 * OUTPUT_BUFFERS) + [False] * (len(ready) - 2 * OUTPUT_BUFFERS)
    # For a DataLoader that pins batches (GPUs), every batch carries its windows.
    ready.keys_only = False
    for index, item in enumerate(loader):
        assert "buffer" not in item and torch.equal(
            ready.delivered(item)["inputs"], in_process[index]["inputs"]
        )


def test_unknown_gather_place_is_a_user_error(compose, features_overrides):
    with pytest.raises(RadioCurationError, match="gather_on=gpu: expected one of auto, device, workers"):
        features_task.run(compose("extract", [*features_overrides, "gather_on=gpu"]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_windows_cut_on_a_cuda_device_give_the_cpu_features(compose, features_overrides, runs_dir):
    cpu = features_task.run(compose("extract", features_overrides))
    gpu_overrides = [o for o in features_overrides if not o.startswith("accelerator=")]
    gpu = features_task.run(
        compose(
            "extract",
            [*gpu_overrides, "accelerator=gpu", "precision=32-true", "gather_on=device", "force=true"],
        )
    )
    store = RunStore(runs_dir)
    with (
        FeatureFile(store.resolve(cpu["run_id"], stage="features").artifact("features.h5")) as want,
        FeatureFile(store.resolve(gpu["run_id"], stage="features").artifact("features.h5")) as got,
    ):
        assert np.array_equal(got.cutout_ids, want.cutout_ids)
        # TF32 and other kernels: equal up to float rounding, not bitwise.
        np.testing.assert_allclose(got.read(), want.read(), rtol=1e-3, atol=1e-3)
