"""Cutout strategies: window geometry, statistics against direct NumPy, NaN policies, catalogue windows."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from radio_curation.cutouts import stats
from radio_curation.cutouts.stats import robust_rms
from radio_curation.cutouts.strategies import CatalogWindows, SlidingWindow
from radio_curation.errors import RadioCurationError
from radio_curation.sky.fitsio import MosaicFiles, open_mosaic
from radio_curation.sky.synthetic import SkyParams, generate_sky
from tests.sky.helpers import noise_image, sin_header, write_image


@pytest.fixture(scope="module")
def blanked(tmp_path_factory):
    """A 260 × 300 mosaic with NaN borders and a 4-D island mask."""
    root = tmp_path_factory.mktemp("blanked")
    data = noise_image(260, 300, seed=2)
    data[:, :20] = np.nan
    data[230:, :] = np.nan
    data[96:112, 144:168] = np.nan
    mask = (np.abs(data) > 2e-4).astype(np.float32)
    header = sin_header(260, 300)
    write_image(root / "img.fits", data, header)
    write_image(root / "mask.fits", mask[None, None], header)
    return MosaicFiles("blanked", root / "img.fits", root / "mask.fits"), data, np.nan_to_num(mask)


def _direct(data, mask, y0, x0, size, step):
    window = data[y0 : y0 + size, x0 : x0 + size]
    samples = window[::step, ::step]
    samples = samples[np.isfinite(samples)]
    med = np.median(samples)
    return {
        "nan_fraction": np.isnan(window).mean(),
        "peak": np.nanmax(window),
        "rms": 1.4826 * np.median(np.abs(samples - med)),
        "mask_fraction": (mask[y0 : y0 + size, x0 : x0 + size] > 0).mean(),
    }


@pytest.mark.parametrize(("size", "overlap", "stride"), [(64, 0.5, 32), (64, 0.0, 64), (48, 0.75, 12)])
def test_grid_counts_and_positions(tmp_path, size, overlap, stride):
    write_image(tmp_path / "m.fits", noise_image(260, 300))
    with open_mosaic(MosaicFiles("m", tmp_path / "m.fits")) as mosaic:
        rows, counts = SlidingWindow(size, overlap, rms_step=4).windows(mosaic)
        ny, nx = (260 - size) // stride + 1, (300 - size) // stride + 1
        assert counts == {"candidates": ny * nx, "dropped_nan": 0}
        assert len(rows["y0"]) == ny * nx
        assert sorted(set(rows["y0"].tolist())) == list(range(0, stride * ny, stride))
        assert sorted(set(rows["x0"].tolist())) == list(range(0, stride * nx, stride))
        assert (rows["size"] == size).all() and (rows["catalog_row"] == -1).all()
        # Row-major order; RA/Dec are the sky position of the window centre.
        assert rows["y0"][1] == 0 and rows["x0"][1] == stride
        ra, dec = mosaic.wcs.all_pix2world(rows["x0"] + (size - 1) / 2, rows["y0"] + (size - 1) / 2, 0)
        np.testing.assert_allclose(rows["ra"], ra, atol=1e-9)
        np.testing.assert_allclose(rows["dec"], dec, atol=1e-9)
        assert np.isnan(rows["mask_fraction"]).all()


@pytest.mark.parametrize("rms_step", [1, 4])
def test_sliding_statistics_equal_direct_numpy(blanked, rms_step):
    files, data, mask = blanked
    strategy = SlidingWindow(64, 0.5, nan_policy="max_fraction", max_nan_fraction=0.6, rms_step=rms_step)
    with open_mosaic(files) as mosaic:
        rows, _ = strategy.windows(mosaic)
    assert (rows["nan_fraction"] > 0).any() and (rows["mask_fraction"] > 0).any()
    rng = np.random.default_rng(0)
    for i in rng.choice(len(rows["y0"]), 25, replace=False):
        expected = _direct(data, mask, rows["y0"][i], rows["x0"][i], 64, rms_step)
        for key, value in expected.items():
            assert rows[key][i] == pytest.approx(value, rel=1e-5), key
        assert rows["peak_snr"][i] == pytest.approx(expected["peak"] / expected["rms"], rel=1e-5)


def test_strips_and_threads_do_not_change_the_statistics(blanked, monkeypatch):
    files, data, mask = blanked
    strategy = SlidingWindow(64, 0.5, nan_policy="max_fraction", max_nan_fraction=0.6)
    with open_mosaic(files) as mosaic:
        whole, _ = strategy.windows(mosaic)
        # Strips of 64 rows (the smallest the grid allows) read by three threads.
        monkeypatch.setattr(stats, "_STRIP_BYTES", 1)
        monkeypatch.setattr(stats, "_BATCH", 7)
        striped, _ = strategy.windows(mosaic, threads=3)
    for key, values in whole.items():
        np.testing.assert_array_equal(values, striped[key], err_msg=key)
    for i in range(0, len(whole["y0"]), 5):
        expected = _direct(data, mask, whole["y0"][i], whole["x0"][i], 64, strategy.rms_step_for(64, 32))
        assert whole["rms"][i] == pytest.approx(expected["rms"], rel=1e-5)
        assert whole["mask_fraction"][i] == pytest.approx(expected["mask_fraction"])


def test_nan_policies(blanked):
    files, data, _ = blanked
    with open_mosaic(files) as mosaic:
        dropped, drop_counts = SlidingWindow(64, 0.5).windows(mosaic)
        kept, keep_counts = SlidingWindow(64, 0.5, nan_policy="max_fraction", max_nan_fraction=0.5).windows(
            mosaic
        )
    assert (dropped["nan_fraction"] == 0).all()
    assert (
        drop_counts["candidates"]
        == keep_counts["candidates"]
        == len(dropped["y0"]) + drop_counts["dropped_nan"]
    )
    assert (kept["nan_fraction"] <= 0.5).all() and (kept["nan_fraction"] > 0).any()
    every = [
        np.isnan(data[y : y + 64, x : x + 64]).mean()
        for y in range(0, 260 - 63, 32)
        for x in range(0, 300 - 63, 32)
    ]
    assert len(dropped["y0"]) == sum(f == 0 for f in every)
    assert len(kept["y0"]) == sum(f <= 0.5 for f in every)


def test_all_nan_windows_are_always_dropped(tmp_path):
    data = noise_image(128, 128)
    data[:64] = np.nan
    write_image(tmp_path / "half.fits", data)
    with open_mosaic(MosaicFiles("half", tmp_path / "half.fits")) as mosaic:
        rows, counts = SlidingWindow(64, 0.0, nan_policy="max_fraction", max_nan_fraction=0.99).windows(
            mosaic
        )
    assert sorted(rows["y0"].tolist()) == [64, 64] and counts["dropped_nan"] == 2


def test_robust_rms_handles_nan_and_both_parities():
    rng = np.random.default_rng(3)
    samples = rng.normal(size=(6, 9))
    samples[1, :3] = np.nan
    samples[2, :4] = np.nan
    samples[3] = np.nan
    result = robust_rms(samples)
    for row, value in zip(samples, result, strict=True):
        finite = row[np.isfinite(row)]
        if finite.size == 0:
            assert np.isnan(value)
        else:
            assert value == pytest.approx(1.4826 * np.median(np.abs(finite - np.median(finite))))


def test_automatic_rms_step_gives_about_16_samples_per_side(blanked):
    assert SlidingWindow(128, 0.5).rms_step_for(128, 64) == 8
    assert SlidingWindow(64, 0.5).rms_step_for(64, 32) == 4
    # 100 // 16 = 6 does not divide the stride of 50: the largest divisor below is used.
    assert SlidingWindow(100, 0.5).rms_step_for(100, 50) == 5
    assert CatalogWindows("x.fits").rms_step_for(256) == 16
    files, data, mask = blanked
    with open_mosaic(files) as mosaic:
        rows, _ = SlidingWindow(96, 0.5).windows(mosaic)
    for i in range(0, len(rows["y0"]), 3):
        expected = _direct(data, mask, rows["y0"][i], rows["x0"][i], 96, 6)
        assert rows["rms"][i] == pytest.approx(expected["rms"], rel=1e-5)


def test_invalid_options_are_user_errors():
    with pytest.raises(RadioCurationError, match="rms_step=3 must divide the window stride 64"):
        SlidingWindow(128, 0.5, rms_step=3)


def test_edge_distance_grows_towards_the_covered_centre(blanked):
    files, _, _ = blanked
    with open_mosaic(files) as mosaic:
        rows, _ = SlidingWindow(32, 0.0).windows(mosaic)
    centre_y = rows["y0"] + 15.5
    centre_x = rows["x0"] + 15.5
    # Blanked: columns < 20, rows >= 230, and the hole at rows 96-111, columns 144-167; distances are
    # measured on an 8-px grid, so they are good to about one grid step.
    truth = np.minimum.reduce([centre_x - 19.5, 229.5 - centre_y, centre_y + 0.5, 299.5 - centre_x])
    hole = np.hypot(np.clip(centre_y, 96, 111) - centre_y, np.clip(centre_x, 144, 167) - centre_x)
    np.testing.assert_allclose(rows["edge_distance"], np.minimum(truth, hole), atol=12)
    assert rows["edge_distance"].max() > 40


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    return generate_sky(tmp_path_factory.mktemp("catalog") / "sky", SkyParams(mosaics=1, size=512, seed=11))


def test_catalogue_windows_are_centred_on_their_sources(sky):
    truth = Table.read(sky / "truth.fits")
    files = MosaicFiles("m", next((sky / "mosaics").iterdir()) / "mosaic-blanked.fits")
    with open_mosaic(files) as mosaic:
        rows, counts = CatalogWindows(str(sky / "truth.fits"), window_size=64).windows(mosaic)
        data = np.asarray(mosaic.image.raw)
    assert len(rows["y0"]) > 20 and counts["candidates"] == len(rows["y0"]) + counts["dropped_nan"]
    source = truth[rows["catalog_row"]]
    x, y = mosaic.wcs.all_world2pix(source["ra"], source["dec"], 0)
    # The source lies within half a pixel (per axis) of the window centre.
    assert np.abs(rows["x0"] + 31.5 - x).max() <= 0.5 + 1e-6
    assert np.abs(rows["y0"] + 31.5 - y).max() <= 0.5 + 1e-6
    # Compact sources (intrinsic FWHM ≤ 5″ against a 6″ beam) peak at the window centre near their flux.
    bright = np.flatnonzero((np.asarray(source["class"]).astype(str) == "compact") & (source["flux"] > 2e-3))
    assert bright.size > 0
    for i in bright:
        y0, x0 = rows["y0"][i], rows["x0"][i]
        centre = data[y0 + 30 : y0 + 34, x0 + 30 : x0 + 34]
        assert np.nanmax(centre) > 0.5 * source["flux"][i]
    for i in range(0, len(rows["y0"]), 17):
        expected = _direct(data, np.zeros_like(data), rows["y0"][i], rows["x0"][i], 64, 4)
        assert rows["rms"][i] == pytest.approx(expected["rms"], rel=1e-5)
        assert rows["peak"][i] == pytest.approx(expected["peak"], rel=1e-5)


def test_catalogue_from_csv_with_sizes(tmp_path, sky):
    truth = Table.read(sky / "truth.fits")
    table = Table({"RAJ2000": truth["ra"], "DEJ2000": truth["dec"], "LAS": np.asarray(truth["size"]) / 60.0})
    table.write(tmp_path / "sources.csv", format="ascii.csv")
    files = MosaicFiles("m", next((sky / "mosaics").iterdir()) / "mosaic-blanked.fits")
    strategy = CatalogWindows(
        str(tmp_path / "sources.csv"), size_factor=2.0, size_choices=[32, 64, 256], size_unit="arcmin"
    )
    with open_mosaic(files) as mosaic:
        rows, _ = strategy.windows(mosaic)
    size_px = np.asarray(truth["size"])[rows["catalog_row"]] / 1.5
    expected = np.select([2 * size_px <= 32, 2 * size_px <= 64], [32, 64], 256)
    np.testing.assert_array_equal(rows["size"], expected)
    assert set(rows["size"].tolist()) >= {32, 64}


def test_catalogue_errors_name_the_problem(tmp_path):
    Table({"x": [1.0], "y": [2.0]}).write(tmp_path / "bad.csv", format="ascii.csv")
    strategy = CatalogWindows(str(tmp_path / "bad.csv"))
    with pytest.raises(RadioCurationError, match="no ra column"):
        strategy.sources()
    with pytest.raises(RadioCurationError, match="file not found"):
        CatalogWindows(str(tmp_path / "none.fits")).sources()
    with pytest.raises(RadioCurationError, match="catalog is not set"):
        CatalogWindows(None)
