"""Reading features in chunks: one copy in the stored dtype, non-finite rows counted or dropped."""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest

from radio_curation.curation.loading import load_features
from radio_curation.errors import RadioCurationError
from radio_curation.features.matrix import FeatureArray, FeatureFile


def _features_with_bad_rows():
    x = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float16)
    x[[3, 500, 999]] = np.nan
    x[700, 2] = np.inf
    return x, np.arange(1000, dtype=np.int64) * 2


def test_nonfinite_rows_are_counted_in_the_error():
    x, ids = _features_with_bad_rows()
    with pytest.raises(
        RadioCurationError, match=r"4 rows with NaN or Inf.*\[6, 1000, 1400, 1998\].*drop_nonfinite=true"
    ):
        load_features(FeatureArray(x, ids), chunk_rows=128)


def test_drop_nonfinite_drops_and_counts_them():
    x, ids = _features_with_bad_rows()
    loaded = load_features(FeatureArray(x, ids), drop_nonfinite=True, chunk_rows=128)
    keep = np.isfinite(x.astype(np.float32)).all(1)
    assert loaded.n_nonfinite == 4
    assert loaded.x.dtype == np.float16 and loaded.x.shape == (996, 8)
    np.testing.assert_array_equal(loaded.x, x[keep])
    np.testing.assert_array_equal(loaded.cutout_id, ids[keep])


def test_keep_ids():
    x = np.random.default_rng(1).standard_normal((300, 4)).astype(np.float32) * 5
    ids = np.arange(300, dtype=np.int64)
    keep = np.array([1, 7, 150, 299])
    loaded = load_features(FeatureArray(x, ids), keep_ids=keep, chunk_rows=64)
    np.testing.assert_array_equal(loaded.cutout_id, keep)
    np.testing.assert_array_equal(loaded.x, x[keep])
    with pytest.raises(RadioCurationError, match="lack 1 of the 2 cutouts"):
        load_features(FeatureArray(x, ids), keep_ids=np.array([5, 1000]))


def test_a_float16_file_is_held_as_float16_below_the_float32_size(tmp_path):
    n, dim = 20000, 64
    x = np.random.default_rng(2).standard_normal((n, dim)).astype(np.float16)
    path = tmp_path / "features.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=x)
        f.create_dataset("cutout_id", data=np.arange(n, dtype=np.int64))
    with FeatureFile(path) as source:
        source.cutout_ids  # noqa: B018 (the IDs are read once; not what is measured)
        tracemalloc.start()
        loaded = load_features(source, chunk_rows=1024)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    np.testing.assert_array_equal(loaded.x, x)
    assert loaded.x.dtype == np.float16
    assert peak < 0.75 * n * dim * 4  # the float32 matrix would be 5.1 MB; float16 + a chunk is ~2.9 MB
