"""The two feature matrices: a features.h5 on disk and an array in memory answer every read alike."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from radio_curation.curation.conditioning import FeatureConditioning
from radio_curation.curation.loading import load_features
from radio_curation.errors import RadioCurationError
from radio_curation.features.matrix import FeatureArray, FeatureFile

N, DIM = 300, 6


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A float16 features.h5 with gaps in its ascending cutout IDs, stored in small HDF5 chunks."""
    x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float16)
    ids = np.arange(N, dtype=np.int64) * 3 + 7
    path = tmp_path / "features.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=x, chunks=(32, DIM))
        f.create_dataset("cutout_id", data=ids)
        f.attrs["backbone"] = "resnet18"
    return path, x, ids


def _both(stored):
    path, x, ids = stored
    return FeatureFile(path), FeatureArray(x, ids)


def test_file_and_array_read_the_same_float32_rows(stored):
    _, x, ids = stored
    for matrix in _both(stored):
        assert (matrix.n, matrix.dim) == (N, DIM)
        np.testing.assert_array_equal(matrix.cutout_ids, ids)
        rows = np.array([299, 0, 17, 0, 150])
        got = matrix.read(rows)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, x[rows].astype(np.float32))
        np.testing.assert_array_equal(matrix.read(), x.astype(np.float32))
        np.testing.assert_array_equal(matrix.rows_of(ids[[5, 2]]), [5, 2])
        with pytest.raises(RadioCurationError, match="not in"):
            matrix.rows_of([8])
        with pytest.raises(RadioCurationError, match="out of range"):
            matrix.read([N])
        with pytest.raises(RadioCurationError, match="out of range"):
            matrix.read([-1])


@pytest.mark.parametrize("chunk", [1, 64, 299, 300, 1000])
def test_chunks_cover_the_rows_in_order(stored, chunk):
    _, x, _ = stored
    for matrix in _both(stored):
        chunks = list(matrix.iter_chunks(chunk))
        assert [start for start, _ in chunks] == list(range(0, N, chunk))
        assert all(len(c) <= chunk and c.dtype == np.float32 for _, c in chunks)
        np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), x.astype(np.float32))


def test_subsets_expose_ascending_rows_as_a_matrix_of_their_own(stored):
    _, x, ids = stored
    rows = np.array([1, 4, 9, 10, 200, 299])
    for matrix in _both(stored):
        sub = matrix.subset(rows)
        assert type(sub) is type(matrix) and (sub.n, sub.dim) == (len(rows), DIM)
        np.testing.assert_array_equal(sub.cutout_ids, ids[rows])
        np.testing.assert_array_equal(sub.read([5, 0, 0]), x[rows[[5, 0, 0]]].astype(np.float32))
        np.testing.assert_array_equal(sub.read(), x[rows].astype(np.float32))
        np.testing.assert_array_equal(np.concatenate([c for _, c in sub.iter_chunks(4)]), x[rows])
        np.testing.assert_array_equal(sub.rows_of(ids[[200, 4]]), [4, 1])
        # A subset of a subset is rows of the original.
        np.testing.assert_array_equal(sub.subset([0, 5]).read(), x[[1, 299]].astype(np.float32))
        with pytest.raises(RadioCurationError, match="ascending"):
            matrix.subset([4, 1])
        with pytest.raises(RadioCurationError, match="out of range"):
            sub.read([len(rows)])


def test_loading_and_conditioning_take_either_matrix(stored):
    _, x, ids = stored
    keep = ids[[3, 100, 250]]
    fit = FeatureConditioning(center=True, normalize=True).fit(x.astype(np.float32))
    results = []
    for matrix in _both(stored):
        loaded = load_features(matrix, keep_ids=keep, chunk_rows=50)
        conditioned = fit.source(matrix)
        np.testing.assert_array_equal(conditioned.cutout_ids, ids)
        results.append((loaded.x, loaded.cutout_id, conditioned.read([3, 100])))
    for got, want in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(results[0][1], keep)


def _held_open(path: Path) -> bool:
    """Whether this process holds ``path`` open read-only (HDF5 then refuses to open it for writing)."""
    try:
        h5py.File(path, "a").close()
    except OSError:
        return True
    return False


def test_a_feature_file_is_open_only_while_read_or_inside_a_with_block(stored):
    path, x, _ = stored
    ff = FeatureFile(path)
    assert ff.attrs["backbone"] == "resnet18" and ff.dtype == np.float16
    assert not _held_open(path)
    chunks = ff.iter_chunks(100)
    next(chunks)
    assert _held_open(path)  # a chunked read holds the file until it ends
    assert len(list(chunks)) == 2 and not _held_open(path)
    ff.read([1, 2])
    assert not _held_open(path)
    with ff:
        ff.read([1, 2])
        with ff:
            pass
        assert _held_open(path)  # the outer block still holds it
        np.testing.assert_array_equal(ff.read([7]), x[[7]].astype(np.float32))
    assert not _held_open(path)
    np.testing.assert_array_equal(ff.read([7]), x[[7]].astype(np.float32))


def test_an_array_needs_one_ascending_id_per_row():
    with pytest.raises(RadioCurationError, match="ascending"):
        FeatureArray(np.zeros((3, 2)), np.array([1, 1, 2]))
    with pytest.raises(RadioCurationError, match="ascending"):
        FeatureArray(np.zeros((3, 2)), np.array([1, 2]))
    with pytest.raises(RadioCurationError, match=r"\[rows, dim\]"):
        FeatureArray(np.zeros(3))
