"""The synthetic LoTSS-like sky: geometry, noise, masks, truth catalogue, determinism, concurrency, CLI."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from radio_curation.cli import main
from radio_curation.errors import RadioCurationError
from radio_curation.sky.synthetic import (
    CLASS_FRACTIONS,
    SkyParams,
    _layout,
    ensure_sky,
    ensure_truth_peaks,
    generate_sky,
    sky_model,
)

SMALL = SkyParams(mosaics=2, size=384, seed=3)


@pytest.fixture(scope="module")
def small_sky(tmp_path_factory):
    return generate_sky(tmp_path_factory.mktemp("sky") / "sky", SMALL)


def _mosaic_dirs(root):
    return sorted((root / "mosaics").iterdir())


def test_mosaics_look_like_dr2(small_sky):
    dirs = _mosaic_dirs(small_sky)
    assert len(dirs) == 2
    for directory in dirs:
        with fits.open(directory / "mosaic-blanked.fits") as hdul:
            header, data = hdul[0].header, hdul[0].data
            assert header["BITPIX"] == -64 and data.shape == (384, 384)
            assert (header["CTYPE1"], header["CTYPE2"]) == ("RA---SIN", "DEC--SIN")
            assert abs(header["CDELT2"]) * 3600 == pytest.approx(1.5)
            assert header["BMAJ"] * 3600 == pytest.approx(6.0) and header["BUNIT"] == "JY/BEAM"
            # NaN-blanked corners, covered centre.
            assert np.isnan(data[0, 0]) and np.isnan(data[-1, -1]) and np.isfinite(data[192, 192])
            assert 0.02 < np.isnan(data).mean() < 0.3
        with fits.open(directory / "mosaic.pybdsmmask.fits") as hdul:
            mask = hdul[0].data
            assert mask.shape == (1, 1, 384, 384) and hdul[0].header["CTYPE3"] == "STOKES"
            assert set(np.unique(mask)) <= {0.0, 1.0}


def test_noise_is_beam_correlated_with_the_recorded_rms(small_sky):
    rms = []
    for directory in _mosaic_dirs(small_sky):
        data = fits.getdata(directory / "mosaic-blanked.fits")
        mask = fits.getdata(directory / "mosaic.pybdsmmask.fits")[0, 0]
        noise_rms = fits.getheader(directory / "mosaic-blanked.fits")["NOISE"]
        centre = data[142:242, 142:242]
        free = centre[mask[142:242, 142:242] == 0]
        mad = 1.4826 * np.median(np.abs(free - np.median(free)))
        # The rms rises towards the edges (by up to 40 %); the centre is within a few per cent of NOISE.
        assert mad == pytest.approx(noise_rms, rel=0.15)
        assert 40e-6 < noise_rms < 160e-6
        # Noise is convolved with the 6″ beam (σ = 1.70 px): lag-1 correlation exp(-1 / 4σ²) = 0.917.
        free_pairs = (mask[142:242, 142:241] == 0) & (mask[142:242, 143:242] == 0)
        lag = np.corrcoef(centre[:, :-1][free_pairs], centre[:, 1:][free_pairs])[0, 1]
        assert lag == pytest.approx(0.917, abs=0.03)
        rms.append(noise_rms)
    assert rms[0] != rms[1]


def test_island_mask_marks_bright_sources(small_sky):
    truth = Table.read(small_sky / "truth.fits")
    directory = _mosaic_dirs(small_sky)[0]
    header = fits.getheader(directory / "mosaic-blanked.fits")
    mask = fits.getdata(directory / "mosaic.pybdsmmask.fits")[0, 0]
    data = fits.getdata(directory / "mosaic-blanked.fits")
    bright = truth[(truth["class"] == "compact") & (truth["flux"] > 5e-3)]
    x, y = WCS(header).all_world2pix(bright["ra"], bright["dec"], 0)
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    inside = (ix >= 0) & (iy >= 0) & (ix < 384) & (iy < 384)
    inside[inside] &= np.isfinite(data[iy[inside], ix[inside]])
    assert inside.sum() >= 1
    assert mask[iy[inside], ix[inside]].all()
    assert mask.mean() < 0.2


def test_neighbouring_mosaics_overlap_on_the_sky(small_sky):
    truth = Table.read(small_sky / "truth.fits")
    seen = []
    for directory in _mosaic_dirs(small_sky):
        header = fits.getheader(directory / "mosaic-blanked.fits")
        data = fits.getdata(directory / "mosaic-blanked.fits")
        x, y = WCS(header).all_world2pix(truth["ra"], truth["dec"], 0)
        ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
        ok = (ix >= 0) & (iy >= 0) & (ix < 384) & (iy < 384)
        ok[ok] &= np.isfinite(data[iy[ok], ix[ok]])
        seen.append(ok)
    both = seen[0] & seen[1]
    assert both.sum() > 0 and both.sum() < min(seen[0].sum(), seen[1].sum())


def test_truth_catalogue_columns_and_units(small_sky):
    truth = Table.read(small_sky / "truth.fits")
    assert {"source_id", "ra", "dec", "class", "flux", "size", "pa", "has_artefact", "peak"} <= set(
        truth.colnames
    )
    assert str(truth["size"].unit) == "arcsec" and str(truth["flux"].unit) == "Jy"
    assert set(np.unique(np.asarray(truth["class"]).astype(str))) <= set(CLASS_FRACTIONS)
    meta = json.loads((small_sky / "sky.json").read_text())
    assert meta["sources"] == len(truth) and len(meta["mosaics"]) == 2


def test_truth_peaks_are_the_rendered_peaks_of_isolated_sources(tmp_path):
    # No noise to speak of: the image is the beam-convolved sources (and ripples around bright ones).
    fractions = {"compact": 0.4, "resolved": 0.4, "fri": 0.2}
    params = SkyParams(mosaics=1, size=600, seed=5, rms=1e-9, density=400, class_fractions=fractions)
    sky = generate_sky(tmp_path / "sky", params)
    truth = Table.read(sky / "truth.fits")
    assert truth["peak"].unit == "Jy/beam"
    (mosaic,) = _mosaic_dirs(sky)
    image = np.squeeze(fits.getdata(mosaic / "mosaic-blanked.fits"))
    wcs = WCS(fits.getheader(mosaic / "mosaic-blanked.fits")).celestial
    x, y = wcs.world_to_pixel(SkyCoord(truth["ra"], truth["dec"], unit="deg"))
    reach = (np.asarray(truth["size"]) / 2 + 3 * params.beam_fwhm) / params.pixel_scale  # px
    apart = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :]) - reach[:, None] - reach[None, :]
    np.fill_diagonal(apart, np.inf)
    checked = 0
    for i in np.flatnonzero((apart.min(axis=1) > 0) & ~np.asarray(truth["has_artefact"])):
        r = int(np.ceil(reach[i]))
        xi, yi = round(float(x[i])), round(float(y[i]))
        box = image[max(yi - r, 0) : yi + r + 1, max(xi - r, 0) : xi + r + 1]
        if box.shape != (2 * r + 1, 2 * r + 1) or not np.isfinite(box).all():
            continue  # near the mosaic's edge or its blanked border
        assert box.max() == pytest.approx(truth["peak"][i], rel=0.1), truth[i]
        checked += 1
    assert checked >= 8
    # Resolved sources spread their flux over several beams: per beam they are much fainter than in total.
    resolved = np.asarray(truth["class"]).astype(str) == "resolved"
    ratio = np.asarray(truth["peak"])[resolved] / np.asarray(truth["flux"])[resolved]
    assert ratio.max() < 0.7 and ratio.min() < 0.1


def test_a_sky_cached_before_truth_peaks_gets_them_and_keeps_its_mosaics(tmp_path):
    params = SkyParams(mosaics=1, size=256, seed=2)
    out = ensure_sky(tmp_path / "sky", params)
    fresh = Table.read(out / "truth.fits")
    (mosaic,) = _mosaic_dirs(out)
    before = (mosaic / "mosaic-blanked.fits").stat().st_mtime_ns
    old = fresh.copy()
    old.remove_column("peak")
    old.write(out / "truth.fits", overwrite=True)
    assert ensure_truth_peaks(out) == out / "truth.fits"
    upgraded = Table.read(out / "truth.fits")
    np.testing.assert_array_equal(upgraded["peak"], fresh["peak"])
    np.testing.assert_array_equal(upgraded["ra"], fresh["ra"])
    assert (mosaic / "mosaic-blanked.fits").stat().st_mtime_ns == before


def test_source_rates_are_realistic():
    params = SkyParams(mosaics=1, size=12000)
    sources = sky_model(params, _layout(params)).sources
    classes = np.asarray(sources["class"]).astype(str)
    fraction = {name: float(np.mean(classes == name)) for name in CLASS_FRACTIONS}
    area = (12000 * 1.5 / 3600 + 0.1) ** 2
    assert len(sources) / area == pytest.approx(params.density, rel=0.1)
    assert fraction["compact"] > 0.85
    assert 0.02 < fraction["fri"] + fraction["frii"] < 0.06
    assert 0 < fraction["wat"] + fraction["ht"] < 0.01
    assert 0 < fraction["halo"] + fraction["relic"] < 0.01
    assert 0.05 < 1 - fraction["compact"] < 0.12
    assert 0.001 < np.mean(np.asarray(sources["has_artefact"])) < 0.02


def test_class_fractions_set_the_class_shares_and_name_their_own_sky():
    rare = {"compact": 0.9, "fri": 0.05, "wat": 0.05}
    params = SkyParams(mosaics=1, size=6000, class_fractions=rare)
    classes = np.asarray(sky_model(params, _layout(params)).sources["class"]).astype(str)
    assert np.mean(classes == "wat") == pytest.approx(0.05, abs=0.01)
    assert np.mean(classes == "fri") == pytest.approx(0.05, abs=0.01)
    assert set(np.unique(classes)) == {"compact", "fri", "wat"}
    assert params.digest != SkyParams(mosaics=1, size=6000).digest
    # A sky with the default classes keeps the name it had before class_fractions existed.
    assert SkyParams().digest == SkyParams(class_fractions=None).digest
    with pytest.raises(RadioCurationError, match="class_fractions"):
        SkyParams(class_fractions={"spiral": 1.0})


def test_same_seed_same_files_other_seed_other_sky(tmp_path, small_sky):
    params = SkyParams(mosaics=2, size=384, seed=3)
    again = generate_sky(tmp_path / "again", params)
    for a, b in zip(_mosaic_dirs(small_sky), _mosaic_dirs(again), strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(
            fits.getdata(a / "mosaic-blanked.fits"), fits.getdata(b / "mosaic-blanked.fits")
        )
    # Same geometry, other seed: same mosaics on the sky, other sources, other noise.
    other = generate_sky(tmp_path / "other", SkyParams(mosaics=2, size=384, seed=4))
    assert [d.name for d in _mosaic_dirs(other)] == [d.name for d in _mosaic_dirs(small_sky)]
    ours, theirs = Table.read(small_sky / "truth.fits"), Table.read(other / "truth.fits")
    assert not np.isin(np.asarray(theirs["ra"]), np.asarray(ours["ra"])).any()
    for a, b in zip(_mosaic_dirs(small_sky), _mosaic_dirs(other), strict=True):
        pixels_a = fits.getdata(a / "mosaic-blanked.fits")
        pixels_b = fits.getdata(b / "mosaic-blanked.fits")
        both = np.isfinite(pixels_a) & np.isfinite(pixels_b)
        assert np.mean(pixels_a[both] != pixels_b[both]) > 0.99


def test_concurrent_generation_gives_one_complete_sky(tmp_path):
    out = tmp_path / "shared"
    params = SkyParams(mosaics=2, size=128, seed=1)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: ensure_sky(out, params), range(2)))
    assert results == [out, out]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]
    assert len(_mosaic_dirs(out)) == 2
    before = (out / "sky.json").stat().st_mtime_ns
    ensure_sky(out, params)
    assert (out / "sky.json").stat().st_mtime_ns == before


def test_incomplete_directory_is_not_taken_for_a_sky(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(RadioCurationError, match="no complete synthetic sky"):
        ensure_sky(tmp_path / "half", SkyParams(mosaics=1, size=64))


def test_bad_parameters_are_user_errors():
    with pytest.raises(RadioCurationError, match="mosaics=0"):
        SkyParams(mosaics=0)
    with pytest.raises(RadioCurationError, match="dtype"):
        SkyParams(dtype="int8")


def _cli(argv):
    return main(argv)


def test_cli_synth_writes_a_sky(tmp_path, capsys):
    out = tmp_path / "cli-sky"
    assert _cli(["sky", "synth", "--out", str(out), "--mosaics", "2", "--size", "128", "--seed", "7"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    assert len(_mosaic_dirs(out)) == 2 and (out / "truth.fits").is_file()
    assert _cli(["sky", "synth", "--out", str(out), "--size", "128"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_takes_geometry_from_a_real_header(tmp_path, shared_data):
    header = shared_data / "lotss_dr2_headers" / "P124+62" / "mosaic-blanked.fits.hdr"
    out = tmp_path / "dr2-like"
    assert (
        _cli(["sky", "synth", "--out", str(out), "--mosaics", "1", "--size", "256", "--header", str(header)])
        == 0
    )
    written = fits.getheader(next((out / "mosaics").iterdir()) / "mosaic-blanked.fits")
    centre = SkyCoord(written["CRVAL1"], written["CRVAL2"], unit="deg")
    assert centre.separation(SkyCoord(124.678, 61.9895, unit="deg")).arcsec < 1
    assert written["NAXIS1"] == 256
    assert SkyParams.from_header(fits.Header.fromtextfile(header)).size == 9264
