"""Merge: global IDs, filters and their counts, cross-mosaic deduplication."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from scipy.spatial import cKDTree

from radio_curation.cutouts.index import WindowIndex
from radio_curation.cutouts.merge import Merger, concatenate, cross_mosaic_duplicates, window_stride
from radio_curation.cutouts.strategies import SlidingWindow
from radio_curation.errors import RadioCurationError
from radio_curation.sky.fitsio import MosaicFiles
from radio_curation.sky.survey import SyntheticSurvey
from radio_curation.suppression import greedy_keep, settle
from tests.cutouts.helpers import cutout_index
from tests.sky.helpers import sin_header, write_image

SHIFT = 128  # B starts 128 px (4 strides of 32) to the right of A on one tangent plane


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory):
    """Two 224 × 256 mosaics cut from one projection plane, overlapping by 128 columns; B is noisier."""
    root = tmp_path_factory.mktemp("overlap")
    rng = np.random.default_rng(0)
    plane = rng.normal(0.0, 1e-4, (224, 256 + SHIFT))
    a = plane[:, :256]
    b = plane[:, SHIFT:] + rng.normal(0.0, 2e-4, (224, 256))
    crpix = (200.0, 112.0)
    write_image(root / "A.fits", a, sin_header(224, 256, crpix=crpix))
    write_image(root / "B.fits", b, sin_header(224, 256, crpix=(crpix[0] - SHIFT, crpix[1])))
    files = [MosaicFiles("A", root / "A.fits"), MosaicFiles("B", root / "B.fits")]
    return cutout_index(root / "run", files, SlidingWindow(64, 0.5))


def test_dedup_removes_exactly_the_windows_both_mosaics_hold(overlapping):
    merged, counts = Merger().merge([overlapping])
    rows_per_column = (224 - 64) // 32 + 1
    # A's windows with x0 in {128, 160, 192} are B's windows with x0 in {0, 32, 64}.
    assert counts["removed_cross_mosaic"] == 3 * rows_per_column
    assert counts["windows"] == counts["input"] - 3 * rows_per_column
    names = merged.mosaic_names()
    removed_b = set(
        zip(
            overlapping.columns["y0"][overlapping.columns["mosaic"] == 1].tolist(),
            overlapping.columns["x0"][overlapping.columns["mosaic"] == 1].tolist(),
            strict=True,
        )
    ) - set(
        zip(
            merged.columns["y0"][names == "B"].tolist(),
            merged.columns["x0"][names == "B"].tolist(),
            strict=True,
        )
    )
    # B is noisier, so lowest_rms keeps A's copies and drops B's.
    assert removed_b == {(y, x) for y in range(0, 161, 32) for x in (0, 32, 64)}
    assert (names == "A").sum() == ((224 - 64) // 32 + 1) * ((256 - 64) // 32 + 1)


def test_without_dedup_nothing_is_removed(overlapping):
    merged, counts = Merger(dedup=False).merge([overlapping])
    assert "removed_cross_mosaic" not in counts and len(merged) == len(overlapping)


def _index(ra_deg, mosaic, rms, edge):
    n = len(ra_deg)
    return WindowIndex(
        {
            "name": ["A", "B", "C"],
            "path": ["a", "b", "c"],
            "mask_path": ["", "", ""],
            "pixel_scale": [1.5] * 3,
        },
        {
            "ra": np.asarray(ra_deg, dtype=float),
            "dec": np.zeros(n),
            "size": np.full(n, 64),
            "y0": np.zeros(n, dtype=np.int64),  # one corner per mosaic: no grid, so the stride is the side
            "x0": np.zeros(n, dtype=np.int64),
            "mosaic": np.asarray(mosaic),
            "rms": np.asarray(rms, dtype=np.float32),
            "edge_distance": np.asarray(edge, dtype=np.float32),
            "cutout_id": np.arange(n),
        },
    )


def test_preference_chooses_which_copy_stays():
    step = 10 / 3600  # 10″ apart: well within 0.36 × 64 × 1.5″ = 34.6″
    index = _index([0.0, step, 1.0], [0, 1, 0], rms=[2.0, 1.0, 5.0], edge=[100.0, 20.0, 5.0])
    rows = np.arange(3)
    assert cross_mosaic_duplicates(index, rows, 0.36, "lowest_rms").tolist() == [0]
    assert cross_mosaic_duplicates(index, rows, 0.36, "farthest_from_edge").tolist() == [1]
    # 40″ apart is beyond the tolerance: both stay.
    far = _index([0.0, 40 / 3600], [0, 1], rms=[1.0, 2.0], edge=[1.0, 1.0])
    assert cross_mosaic_duplicates(far, np.arange(2), 0.36, "lowest_rms").size == 0


def test_chains_keep_every_position_covered():
    # A0 – B – A1 in a row, 30″ apart: B matches both A windows, which do not match each other (same mosaic,
    # and 60″ apart). B is best: it stays and both A windows go. If B is worst, both A windows stay.
    step = 30 / 3600
    best_b = _index([0.0, step, 2 * step], [0, 1, 0], rms=[2.0, 1.0, 3.0], edge=[0, 0, 0])
    assert cross_mosaic_duplicates(best_b, np.arange(3), 0.36, "lowest_rms").tolist() == [0, 2]
    worst_b = _index([0.0, step, 2 * step], [0, 1, 0], rms=[1.0, 3.0, 2.0], edge=[0, 0, 0])
    assert cross_mosaic_duplicates(worst_b, np.arange(3), 0.36, "lowest_rms").tolist() == [1]
    # A0 (best) – B – C: B goes because of A0, so C (which only matches B) stays.
    chain = _index([0.0, step, 2 * step], [0, 1, 2], rms=[1.0, 2.0, 3.0], edge=[0, 0, 0])
    assert cross_mosaic_duplicates(chain, np.arange(3), 0.36, "lowest_rms").tolist() == [1]


def _unit(table):
    ra, dec = np.radians(table["ra"]), np.radians(table["dec"])
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)


def test_synthetic_overlap_keeps_one_window_per_sky_position(data_dir, tmp_path):
    mosaics = SyntheticSurvey(str(data_dir), mosaics=2, size=512, seed=0).mosaics()
    index = cutout_index(tmp_path, mosaics, SlidingWindow(64, 0.5))
    merged, counts = Merger().merge([index])
    assert counts["removed_cross_mosaic"] > 10
    chord = 2 * math.sin(math.radians(0.75 * 32 * 1.5 / 3600) / 2)  # 0.75 × the 32-px stride
    kept = merged.columns
    tree = cKDTree(_unit(kept))
    # No two kept windows of different mosaics are centred within the tolerance ...
    pairs = tree.query_pairs(chord, output_type="ndarray")
    assert len(pairs) == 0 or not (kept["mosaic"][pairs[:, 0]] != kept["mosaic"][pairs[:, 1]]).any()
    # ... and every removed window has a kept copy from the other mosaic with a lower rms.
    every = concatenate([index]).columns
    gone = ~np.isin(every["cutout_id"], kept["cutout_id"])
    assert gone.sum() == counts["removed_cross_mosaic"]
    gone_table = {key: values[gone] for key, values in every.items()}
    for vector, mosaic, rms in zip(_unit(gone_table), gone_table["mosaic"], gone_table["rms"], strict=True):
        partners = tree.query_ball_point(vector, chord)
        assert any(kept["mosaic"][p] != mosaic and kept["rms"][p] <= rms for p in partners)


def test_filters_count_what_they_remove_and_ids_are_stable(overlapping):
    everything, _ = Merger(dedup=False).merge([overlapping])
    median_snr = float(np.median(everything.columns["peak_snr"]))
    rms_cut = float(np.quantile(everything.columns["rms"], 0.9))
    merged, counts = Merger(min_peak_snr=median_snr, rms_max=rms_cut, grid=True).merge([overlapping])
    col = everything.columns
    snr_fail = col["peak_snr"] < median_snr
    rms_fail = ~snr_fail & (col["rms"] > rms_cut)
    grid_fail = ~snr_fail & ~rms_fail & ((col["y0"] % 64 != 0) | (col["x0"] % 64 != 0))
    assert counts["removed_peak_snr"] == snr_fail.sum()
    assert counts["removed_rms"] == rms_fail.sum()
    assert counts["removed_grid"] == grid_fail.sum()
    removed = sum(v for k, v in counts.items() if k.startswith("removed_"))
    assert counts["input"] == len(everything) == removed + counts["windows"]
    assert (merged.columns["y0"] % 64 == 0).all() and (merged.columns["x0"] % 64 == 0).all()
    # Filters never renumber: each surviving ID points at the same window as without filters.
    position = np.searchsorted(col["cutout_id"], merged.columns["cutout_id"])
    for key in ("mosaic", "y0", "x0", "size"):
        np.testing.assert_array_equal(col[key][position], merged.columns[key])


def test_same_window_in_two_runs_is_kept_once(overlapping):
    merged, counts = Merger(dedup=False).merge([overlapping, overlapping])
    assert counts["removed_duplicate_rows"] == len(overlapping)
    assert len(merged) == len(overlapping)
    assert set(np.unique(merged.columns["parent"]).tolist()) == {0}


def test_inconsistent_inputs_are_user_errors(overlapping):
    moved = WindowIndex(
        {**overlapping.mosaics, "path": ["/elsewhere/A.fits", "/elsewhere/B.fits"]},
        overlapping.columns,
        overlapping.attrs,
    )
    with pytest.raises(RadioCurationError, match="mosaic A is"):
        concatenate([overlapping, moved])
    refilled = WindowIndex(overlapping.mosaics, overlapping.columns, {**overlapping.attrs, "nan_fill": 1.0})
    with pytest.raises(RadioCurationError, match="different values"):
        concatenate([overlapping, refilled])


def test_grid_windows_a_full_side_apart_find_their_overlap_zone_copies(tmp_path):
    # B starts 96 px (1.5 sides) right of A, so B's grid windows sit half a side off A's: every B window
    # centre within A's footprint is 32 px (0.5 side) from an A centre, beyond the 0.36-side radius that
    # suits 50% overlap only.
    shift = 96
    rng = np.random.default_rng(1)
    plane = rng.normal(0.0, 1e-4, (224, 256 + shift))
    b = plane[:, shift:] + rng.normal(0.0, 2e-4, (224, 256))
    write_image(tmp_path / "A.fits", plane[:, :256], sin_header(224, 256, crpix=(200.0, 112.0)))
    write_image(tmp_path / "B.fits", b, sin_header(224, 256, crpix=(200.0 - shift, 112.0)))
    files = [MosaicFiles("A", tmp_path / "A.fits"), MosaicFiles("B", tmp_path / "B.fits")]
    index = cutout_index(tmp_path / "run", files, SlidingWindow(64, 0.5))
    merged, counts = Merger(grid=True).merge([index])
    names = merged.mosaic_names()
    kept_b = set(merged.columns["x0"][names == "B"].tolist())
    # B's columns at x0 0, 64 (inside A) and 128 (half inside) go; x0 192 (outside A) stays; 3 rows each.
    assert kept_b == {192} and counts["removed_cross_mosaic"] == 3 * 3
    assert (names == "A").sum() == 3 * 4
    # The radius follows the stride: at 50% overlap the same tolerance is 0.375 of the side.
    assert window_stride(index.columns["y0"], index.columns["x0"], index.columns["mosaic"], 64) == 32


def _four_mosaics(side: int, seed: int = 0) -> WindowIndex:
    """Four mosaics of side × side windows (32-px stride, 1.5″ pixels) on a 2 × 2 layout, each overlapping
    its neighbours by half its width, their grids shifted by random sub-stride offsets; every fifth window
    128 px wide, rms values with ties and NaNs."""
    rng = np.random.default_rng(seed)
    i, j = np.divmod(np.arange(side * side), side)
    parts = []
    for m in range(4):
        oy, ox = (m // 2) * side * 16 + rng.integers(0, 32), (m % 2) * side * 16 + rng.integers(0, 32)
        dec = 40 + (oy + 32 * i + 32) * 1.5 / 3600
        ra = 180 + (ox + 32 * j + 32) * 1.5 / 3600 / np.cos(np.radians(dec))
        edge = np.minimum.reduce([i, j, side - 1 - i, side - 1 - j]) * 32
        parts.append((ra, dec, 32 * i, 32 * j, np.full(side * side, m, dtype=np.int32), edge))
    columns = dict(
        zip(
            ("ra", "dec", "y0", "x0", "mosaic", "edge_distance"),
            map(np.concatenate, zip(*parts, strict=True)),
            strict=True,
        )
    )
    n = len(columns["ra"])
    columns["size"] = np.where(rng.random(n) < 0.2, 128, 64).astype(np.int32)
    columns["rms"] = rng.choice([1.0, 2.0, 3.0, np.nan], n).astype(np.float32)
    columns["cutout_id"] = np.arange(n)
    mosaics = {"name": list("ABCD"), "path": [""] * 4, "mask_path": [""] * 4, "pixel_scale": [1.5] * 4}
    return WindowIndex(mosaics, columns)


def _one_search(index, rows, tolerance, prefer):
    """The deduplication rule with one KD-tree over all windows and every pair at once."""
    col = index.columns
    bad = col["rms"].astype(float) if prefer == "lowest_rms" else -col["edge_distance"].astype(float)
    bad = np.where(np.isnan(bad), np.inf, bad)
    rank = np.empty(len(bad), dtype=np.int64)
    rank[np.lexsort((col["cutout_id"], bad))] = np.arange(len(bad))
    removed = []
    for size in np.unique(col["size"][rows]):
        group = rows[col["size"][rows] == size]
        stride = window_stride(col["y0"][group], col["x0"][group], col["mosaic"][group], int(size))
        chord = 2 * math.sin(math.radians(tolerance * stride * 1.5 / 3600) / 2)
        table = {key: col[key][group] for key in ("ra", "dec")}
        a, b = cKDTree(_unit(table)).query_pairs(chord, output_type="ndarray").T
        other = col["mosaic"][group[a]] != col["mosaic"][group[b]]
        a, b = a[other], b[other]
        first = rank[group[a]] < rank[group[b]]
        removed.append(group[~greedy_keep(np.where(first, a, b), np.where(first, b, a), len(group))])
    return np.unique(np.concatenate(removed))


@pytest.mark.parametrize("prefer", ["lowest_rms", "farthest_from_edge"])
@pytest.mark.parametrize("block_rows", [31, 997, 1 << 16])
def test_dedup_swept_in_declination_blocks_equals_one_search_over_all_windows(prefer, block_rows):
    index = _four_mosaics(60)
    rows = np.sort(np.random.default_rng(1).choice(len(index), len(index) * 4 // 5, replace=False))
    expected = _one_search(index, rows, 0.75, prefer)
    assert len(expected) > len(rows) // 4  # most of the sky is in two to four mosaics
    assert np.array_equal(cross_mosaic_duplicates(index, rows, 0.75, prefer, block_rows=block_rows), expected)


def test_dedup_holds_a_few_bytes_per_window_not_the_match_graph():
    # Besides the index and the rows, the dedup holds the declination order while sorting it (12 bytes per
    # window), then the order and a byte of decision per window, one block's matches and the rows returned
    # (3.7 bytes per window here): 12 bytes per window at its peak. Holding the whole match graph (8 bytes
    # per match, 1.3 matches per window here, and the order besides) peaked at 18.8; small blocks make the
    # per-block part negligible.
    index = _four_mosaics(225)
    index.columns["size"][:] = 64
    rows = np.arange(len(index))
    tracemalloc.start()
    try:
        cross_mosaic_duplicates(index, rows, 0.75, "lowest_rms", block_rows=4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(index) == 202_500
    assert peak / len(index) < 15


def _sequential_greedy(better: np.ndarray, worse: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """The greedy pass itself, one node at a time in order of ``priority`` (lowest first)."""
    kept = np.zeros(len(priority), dtype=bool)
    above: list[list[int]] = [[] for _ in priority]
    for b, w in zip(better.tolist(), worse.tolist(), strict=True):
        above[w].append(b)
    for node in np.argsort(priority).tolist():
        kept[node] = not any(kept[b] for b in above[node])
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_settle_as_the_graph_grows_decides_as_the_greedy_pass(seed):
    # Edges join nodes at most 6 apart and priorities are random: the edges arrive a block of their first
    # node at a time, as in the declination sweep, and chains of decisions cross blocks.
    rng = np.random.default_rng(seed)
    n = 400
    first = rng.integers(0, n - 1, 1500)
    second = np.minimum(first + rng.integers(1, 7, len(first)), n - 1)
    pairs = np.unique(np.stack([first, second], axis=1), axis=0)
    priority = rng.permutation(n)
    a_first = priority[pairs[:, 0]] < priority[pairs[:, 1]]
    better = np.where(a_first, pairs[:, 0], pairs[:, 1])
    worse = np.where(a_first, pairs[:, 1], pairs[:, 0])
    expected = _sequential_greedy(better, worse, priority)
    assert np.array_equal(greedy_keep(better, worse, n), expected)

    state = np.zeros(n, dtype=np.int8)
    pending_b = pending_w = np.zeros(0, dtype=np.intp)
    lo = start = 0
    for end in (37, 38, 150, 290, 301, n):
        new = (pairs[:, 0] >= start) & (pairs[:, 0] < end)
        pending_b, pending_w = settle(
            np.concatenate([pending_b, better[new]]), np.concatenate([pending_w, worse[new]]), state, lo, end
        )
        undecided = np.flatnonzero(state[:end] == 0)
        lo, start = (int(undecided[0]) if len(undecided) else end), end
    assert len(pending_b) == 0 and (state != 0).all()
    assert np.array_equal(state == 1, expected)
