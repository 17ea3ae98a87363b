"""Adjacent-window pairs, the Mann–Whitney distance test, nearest-neighbour galleries, cosine search."""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation import blocked, similarity
from radio_curation.evaluation.neighbours import (
    adjacent_pairs,
    distance_test,
    gallery_neighbours,
    random_pairs,
)
from radio_curation.evaluation.similarity import BLOCK_BYTES, cosine_knn, nearest_other_similarity
from radio_curation.features.matrix import FeatureArray, FeatureFile


def _grid(ny: int, nx: int, size: int = 64, step: int = 32, mosaic: str = "P1"):
    y0, x0 = np.meshgrid(np.arange(ny) * step, np.arange(nx) * step, indexing="ij")
    n = ny * nx
    return np.full(n, mosaic), y0.ravel(), x0.ravel(), np.full(n, size)


def test_adjacent_pairs_on_a_half_overlap_grid():
    mosaic, y0, x0, size = _grid(3, 3)
    # 0.5 × size = one grid step: the 8-neighbourhood; a 3×3 grid has 12 straight + 8 diagonal pairs.
    assert len(adjacent_pairs(mosaic, y0, x0, size, max_offset=0.5)) == 20
    # 1.0 × size = two grid steps: every pair of a 3×3 grid.
    assert len(adjacent_pairs(mosaic, y0, x0, size, max_offset=1.0)) == 36


def test_adjacent_pairs_never_cross_mosaics_or_sizes():
    m1, y1, x1, s1 = _grid(2, 2, mosaic="A")
    m2, y2, x2, s2 = _grid(2, 2, mosaic="B")
    m3, y3, x3, _ = _grid(2, 2, mosaic="A")
    mosaic = np.concatenate([m1, m2, m3])
    y0, x0 = np.concatenate([y1, y2, y3]), np.concatenate([x1, x2, x3])
    size = np.concatenate([s1, s2, np.full(4, 128)])
    pairs = adjacent_pairs(mosaic, y0, x0, size, max_offset=0.5)
    assert len(pairs) == 18  # 6 per 2×2 group, three groups
    assert (mosaic[pairs[:, 0]] == mosaic[pairs[:, 1]]).all()
    assert (size[pairs[:, 0]] == size[pairs[:, 1]]).all()
    assert (pairs[:, 0] < pairs[:, 1]).all()


def test_adjacent_pairs_take_integer_mosaic_codes_and_sample_each_mosaic_to_its_share():
    grids = [_grid(20, 20, mosaic=name) for name in ("A", "B", "C")]
    mosaic_names, y0, x0, size = (np.concatenate(parts) for parts in zip(*grids, strict=True))
    codes = np.repeat(np.array([7, 3, 5]), 400)  # integer mosaic columns (merged.h5) group the same way
    every = adjacent_pairs(mosaic_names, y0, x0, size, max_offset=0.5)
    assert len(every) == 3 * (2 * 19 * 20 + 2 * 19 * 19)
    assert set(map(tuple, adjacent_pairs(codes, y0, x0, size, max_offset=0.5))) == set(map(tuple, every))
    sampled = adjacent_pairs(codes, y0, x0, size, max_offset=0.5, max_pairs=300, seed=1)
    assert len(sampled) == 3 * 200  # twice each mosaic's third of 300
    assert set(map(tuple, sampled)) <= set(map(tuple, every))
    assert np.bincount(codes[sampled[:, 0]]).tolist() == [0, 0, 0, 200, 0, 200, 0, 200]
    np.testing.assert_array_equal(sampled, adjacent_pairs(codes, y0, x0, size, 0.5, max_pairs=300, seed=1))


def test_adjacent_pairs_group_windows_in_blocks_with_eight_bytes_per_window(monkeypatch):
    # 40 mosaics × 2 sizes of scattered windows, 200,000 rows. Grouping them by (mosaic, size) with
    # np.unique's inverses, int64 keys, an int64 argsort and a float64 copy of the positions held ~73 bytes
    # per window at the peak; the counting sort holds int32 keys and an int32 order (8) plus one block.
    rng = np.random.default_rng(2)
    n = 200_000
    mosaic = rng.integers(0, 40, n).astype(np.int32)
    size = rng.choice([64, 128], n).astype(np.int32)
    y0, x0 = (rng.integers(0, 150, (2, n)) * 32).astype(np.int32)
    whole = adjacent_pairs(mosaic, y0, x0, size, 1.0, max_pairs=4000, seed=5)
    monkeypatch.setattr(blocked, "ROW_BLOCK", 4096)
    tracemalloc.start()
    in_blocks = adjacent_pairs(mosaic, y0, x0, size, 1.0, max_pairs=4000, seed=5)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * n
    np.testing.assert_array_equal(in_blocks, whole)  # the same groups in the same order: the same sample
    assert 8000 <= len(whole) <= 8000 + 80  # twice each group's share of 4000, rounded up in 80 groups
    assert (mosaic[whole[:, 0]] == mosaic[whole[:, 1]]).all() and (
        size[whole[:, 0]] == size[whole[:, 1]]
    ).all()
    offset = np.maximum(np.abs(y0[whole[:, 0]] - y0[whole[:, 1]]), np.abs(x0[whole[:, 0]] - x0[whole[:, 1]]))
    assert (offset <= size[whole[:, 0]]).all()


def test_random_pairs_are_distinct_rows():
    pairs = random_pairs(5, 1000, np.random.default_rng(0))
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert pairs.min() >= 0 and pairs.max() < 5


def test_distance_test_detects_spatially_smooth_features():
    mosaic, y0, x0, size = _grid(20, 20)
    rng = np.random.default_rng(0)
    # Features vary smoothly across the sky plus noise: neighbours are similar, random pairs are not.
    phase = np.stack([np.sin(y0 / 90.0), np.cos(y0 / 90.0), np.sin(x0 / 90.0), np.cos(x0 / 90.0)], axis=1)
    smooth = FeatureArray(np.hstack([phase, 0.05 * rng.normal(size=(400, 4))]))
    pairs = adjacent_pairs(mosaic, y0, x0, size, max_offset=0.5)
    result = distance_test(smooth, pairs, seed=0)
    metrics = result.metrics()
    assert result.p_value < 1e-10
    assert metrics["neighbours/prob_adjacent_closer"] > 0.8
    assert metrics["neighbours/n_adjacent_pairs"] == len(pairs) == metrics["neighbours/n_random_pairs"]

    noise = FeatureArray(rng.normal(size=(400, 8)))
    null = distance_test(noise, pairs, seed=0)
    assert null.p_value > 1e-3
    assert 0.4 < null.metrics()["neighbours/prob_adjacent_closer"] < 0.6


def test_cosine_knn_streams_chunks_like_one_search():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(300, 6)).astype(np.float32)
    queries = rng.normal(size=(7, 6)).astype(np.float32)
    sim_all, idx_all = cosine_knn(queries, base, 5)
    sim_chunked, idx_chunked = cosine_knn(queries, FeatureArray(base).iter_chunks(64), 5)
    np.testing.assert_array_equal(idx_all, idx_chunked)
    np.testing.assert_allclose(sim_all, sim_chunked, rtol=1e-6)
    brute = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        base / np.linalg.norm(base, axis=1, keepdims=True)
    ).T
    np.testing.assert_array_equal(idx_all[:, 0], brute.argmax(axis=1))


def test_nearest_other_skips_the_query_but_not_its_duplicate():
    points = np.array([[2, 0], [1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    sim = nearest_other_similarity(points, np.arange(4), points)
    np.testing.assert_allclose(sim, [1.0, 1.0, 0.8, 0.8], atol=1e-6)
    assert points[0, 0] == 2  # the database given is not normalised in place


def test_gallery_excludes_the_query_itself():
    features = FeatureArray(np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]], dtype=np.float32))
    rows, sim = gallery_neighbours(features, np.array([0, 2]), k=2, chunk_rows=2)
    np.testing.assert_array_equal(rows, [[1, 4], [3, 4]])
    assert sim.shape == (2, 2)
    assert (np.diff(sim, axis=1) <= 0).all()


def test_random_pairs_need_two_rows():
    with pytest.raises(RadioCurationError, match="at least two"):
        random_pairs(1, 3, np.random.default_rng(0))


def _feature_file(path, n: int, dim: int, seed: int = 3) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float16)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=x, chunks=(1024, dim))
        f.create_dataset("cutout_id", data=np.arange(n, dtype=np.int64))
    return x.astype(np.float32)


def test_gallery_streams_blocks_bounded_in_bytes(tmp_path):
    # 40,000 float32 rows of 384 are 61 MB: read in 262,144-row blocks they were one block, normalised in
    # a copy (123 MB at the peak); in BLOCK_BYTES blocks normalised in place, one block (34 MB).
    x = _feature_file(tmp_path / "features.h5", 40_000, 384)
    queries = np.array([0, 17, 39_999])
    with FeatureFile(tmp_path / "features.h5") as features:
        tracemalloc.start()
        rows, sim = gallery_neighbours(features, queries, k=5)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 1.5 * BLOCK_BYTES
    expected_sim, expected_idx = cosine_knn(x[queries], x, 6)
    np.testing.assert_array_equal(rows, expected_idx[:, 1:])
    np.testing.assert_allclose(sim, expected_sim[:, 1:], rtol=1e-5)


def test_in_place_normalisation_leaves_an_in_memory_matrix_alone():
    x = np.random.default_rng(4).normal(size=(50, 8)).astype(np.float32)
    features = FeatureArray(x.copy())
    gallery_neighbours(features, np.array([1, 2]), k=3, chunk_rows=16)
    distance_test(features, np.array([[0, 1], [2, 3]]), seed=0)
    np.testing.assert_array_equal(features.features, x)


def test_nearest_other_blocks_match_one_product(monkeypatch):
    rng = np.random.default_rng(5)
    base = rng.normal(size=(90, 6)).astype(np.float32)
    base[40] = base[3]  # an exact duplicate of a query
    query_rows = np.array([0, 3, 40, 89])
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    brute = unit[query_rows] @ unit.T
    brute[np.arange(len(query_rows)), query_rows] = -np.inf
    monkeypatch.setattr(similarity, "SIMILARITY_BLOCK", 4 * 7)  # 7 database rows a product
    sim = nearest_other_similarity(base[query_rows], query_rows, FeatureArray(base).iter_chunks(16))
    np.testing.assert_allclose(sim, brute.max(axis=1), rtol=1e-6)
    assert sim[1] == pytest.approx(1.0) and sim[2] == pytest.approx(1.0)
