"""The features file the ranks fill in place: blocks written in parallel, joined by a rename."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from radio_curation.errors import RadioCurationError
from radio_curation.features.io import BlockShards, join
from radio_curation.features.matrix import FeatureFile


def _planned(tmp_path, n=1000, dim=24, block_rows=96, dtype=np.float16):
    shards = BlockShards(tmp_path / "shards")
    plan = shards.load_or_create_plan(n, block_rows, "merge-0123456789")
    ids = np.arange(n, dtype=np.int64) * 3 + 7
    shards.create_data(plan, ids, dim, dtype, {"tap": "output"})
    rows = np.random.default_rng(0).standard_normal((n, dim)).astype(dtype)
    return shards, plan, ids, rows


def test_two_ranks_write_their_blocks_in_place_and_the_join_copies_no_row(tmp_path):
    shards, plan, ids, rows = _planned(tmp_path)
    inode = os.stat(shards.data_path).st_ino

    def rank(r: int) -> None:
        own = BlockShards(shards.directory)  # as another process would: its own view of the folder
        for block in range(r, plan.n_blocks, 2):
            start, stop = plan.block_range(block)
            own.write(block, start, ids[start:stop], rows[start:stop], rank=r)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = tmp_path / "features.h5"
    assert join(shards, plan, ids, out) == {0: 6, 1: 5}
    # The file the ranks wrote is the features file: renamed, not copied.
    assert os.stat(out).st_ino == inode and not shards.data_path.exists()
    with FeatureFile(out) as ff:
        np.testing.assert_array_equal(ff.read(), rows.astype(np.float32))
        np.testing.assert_array_equal(ff.cutout_ids, ids)
        assert (ff.n, ff.dim, ff.dtype, ff.attrs["tap"]) == (1000, 24, np.float16, "output")


def test_a_missing_block_or_another_width_is_refused_and_stale_markers_go(tmp_path):
    shards, plan, ids, rows = _planned(tmp_path)
    for block in range(plan.n_blocks - 1):
        start, stop = plan.block_range(block)
        shards.write(block, start, ids[start:stop], rows[start:stop], rank=0)
    with pytest.raises(RadioCurationError, match=r"1 of 11 feature blocks are missing .*\[10\]"):
        join(shards, plan, ids, tmp_path / "features.h5")
    with pytest.raises(RadioCurationError, match=r"another|remove"):
        shards.create_data(plan, ids, 32, np.float16, {})
    with pytest.raises(RadioCurationError, match="features per row"):
        shards.write(10, 960, ids[960:], rows[960:, :8], rank=0)
    # Markers without the file hold no rows: a new file starts with no block done.
    shards.data_path.unlink()
    shards.create_data(plan, ids, 24, np.float16, {})
    assert shards.done() == set()
