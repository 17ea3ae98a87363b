"""Reading mosaics: memory maps, scaled integers, 4-D squeezing, WCS, real headers, broken files."""

from __future__ import annotations

import mmap

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits

from radio_curation.sky.fitsio import (
    MosaicFiles,
    MosaicReadError,
    celestial_wcs,
    clean_header,
    open_image,
    open_mosaic,
)
from tests.sky.helpers import noise_image, sin_header, write_image

DR2 = ("P000+23", "P002+18", "P005+21", "P124+62")


def _is_mapped(array: np.ndarray) -> bool:
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return isinstance(base, mmap.mmap)


def test_float_image_is_memory_mapped_with_its_wcs(tmp_path):
    data = noise_image(40, 50)
    path = write_image(tmp_path / "m.fits", data)
    hdul, image, header = open_image(path)
    try:
        assert image.shape == (40, 50)
        assert _is_mapped(image.raw)
        np.testing.assert_array_equal(image.rows(3, 7), data[3:7])
        assert header["CTYPE1"] == "RA---SIN"
    finally:
        hdul.close()


def test_scaled_integers_stay_mapped_and_read_as_physical_values(tmp_path):
    rng = np.random.default_rng(1)
    raw = rng.integers(-3000, 3000, (30, 40)).astype(np.int16)
    raw[5, 6] = -32768
    hdu = fits.PrimaryHDU(raw, header=sin_header(30, 40))
    hdu.header["BSCALE"] = 0.25
    hdu.header["BZERO"] = 10.0
    hdu.header["BLANK"] = -32768
    hdu.writeto(tmp_path / "scaled.fits")
    hdul, image, _ = open_image(tmp_path / "scaled.fits")
    try:
        assert image.raw.dtype.kind == "i" and _is_mapped(image.raw)
        expected = raw * 0.25 + 10.0
        expected[5, 6] = np.nan
        np.testing.assert_allclose(image.rows(0, 30), expected)
        windows = image.gather(np.array([0, 4]), np.array([2, 5]), 8)
        np.testing.assert_allclose(windows[1], expected[4:12, 5:13])
        assert np.isnan(windows[1, 1, 1])
    finally:
        hdul.close()


def test_four_dimensional_image_and_mask_are_squeezed(tmp_path):
    data = noise_image(32, 48)
    mask = (data > 0).astype(np.float32)
    header = sin_header(32, 48)
    header["CTYPE3"], header["CTYPE4"] = "STOKES", "FREQ"
    write_image(tmp_path / "img.fits", data[None, None], header)
    write_image(tmp_path / "mask.fits", mask[None, None], header)
    with open_mosaic(MosaicFiles("m", tmp_path / "img.fits", tmp_path / "mask.fits")) as mosaic:
        assert mosaic.shape == (32, 48) and mosaic.mask.shape == (32, 48)
        np.testing.assert_array_equal(mosaic.mask.rows(0, 32), mask)
        assert mosaic.wcs.naxis == 2


def test_extra_axis_longer_than_one_is_an_error(tmp_path):
    write_image(tmp_path / "cube.fits", np.zeros((3, 16, 16)))
    with pytest.raises(MosaicReadError, match=r"cube\.fits.*shape \(3, 16, 16\)"):
        open_image(tmp_path / "cube.fits")


def _broken(tmp_path, kind):
    path = tmp_path / f"{kind}.fits"
    good = tmp_path / "good.fits"
    write_image(good, noise_image(64, 64))
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: 2880 + 8000])
    elif kind == "header_only":
        path.write_bytes(good.read_bytes()[:2880])
    elif kind == "not_fits":
        path.write_text("this is a text file\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no_image":
        fits.PrimaryHDU().writeto(path)
    elif kind == "no_celestial_wcs":
        header = fits.Header({"CTYPE1": "LINEAR", "CTYPE2": "LINEAR"})
        fits.PrimaryHDU(np.zeros((16, 16)), header=header).writeto(path)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", "truncated"),
        ("header_only", "truncated"),
        ("not_fits", "not a readable FITS file"),
        ("empty", "not a readable FITS file"),
        ("no_image", "no image HDU"),
        ("no_celestial_wcs", "no celestial WCS"),
    ],
)
def test_unusable_file_gives_one_clear_error_naming_it(tmp_path, kind, message):
    path = _broken(tmp_path, kind)
    with pytest.raises(MosaicReadError, match=message) as caught:
        with open_mosaic(MosaicFiles(kind, path)) as mosaic:
            mosaic.image.rows(0, mosaic.shape[0])
    assert str(path) in str(caught.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(MosaicReadError, match=r"nowhere\.fits: file not found"):
        open_image(tmp_path / "nowhere.fits")


def test_archive_files_with_non_ascii_cards_open(shared_data):
    files = sorted((shared_data / "mirabest" / "raw_examples").glob("*.fits"))
    assert files
    for path in files:
        with open_mosaic(MosaicFiles(path.stem, path)) as mosaic:
            assert mosaic.shape == (300, 300)
            ra, dec = mosaic.pixel_to_world(np.array([149.5]), np.array([149.5]))
            assert (
                abs(ra[0] - mosaic.header["CRVAL1"]) < 1e-3 and abs(dec[0] - mosaic.header["CRVAL2"]) < 1e-3
            )
            assert np.isfinite(mosaic.image.rows(0, 300)).any()


def _footprint(header: fits.Header) -> SkyCoord:
    wcs = celestial_wcs(clean_header(header))
    n1, n2 = header["NAXIS1"], header["NAXIS2"]
    x = np.array([0, n1 - 1, n1 - 1, 0, (n1 - 1) / 2])
    y = np.array([0, 0, n2 - 1, n2 - 1, (n2 - 1) / 2])
    ra, dec = wcs.all_pix2world(x, y, 0)
    return SkyCoord(ra, dec, unit="deg")


def test_real_dr2_headers_give_the_published_sky_coverage(shared_data):
    headers = {}
    for name in DR2:
        image = fits.Header.fromtextfile(shared_data / "lotss_dr2_headers" / name / "mosaic-blanked.fits.hdr")
        mask = fits.Header.fromtextfile(
            shared_data / "lotss_dr2_headers" / name / "mosaic.pybdsmmask.fits.hdr"
        )
        corners = _footprint(image)
        width = image["NAXIS1"] * 1.5 / 3600.0
        assert 8938 <= image["NAXIS1"] <= 10210
        # The edges span NAXIS × 1.5″ (SIN is nearly flat over 4°), and the centre is the pointing.
        assert corners[0].separation(corners[1]).deg == pytest.approx(width, rel=2e-3)
        centre = SkyCoord(image["CRVAL1"], image["CRVAL2"], unit="deg")
        assert corners[4].separation(centre).arcsec < 3.0
        # The 4-D mask header has the same celestial grid.
        assert _footprint(mask).separation(corners).arcsec.max() < 1e-6
        headers[name] = corners
    # P002+18 and P005+21 overlap on the sky; P124+62 is far from both.
    a, b = headers["P002+18"], headers["P005+21"]
    assert a[4].separation(b[4]).deg < 0.5 * (a[0].separation(a[1]).deg + b[0].separation(b[1]).deg)
    assert headers["P124+62"][4].separation(a[4]).deg > 50


def test_full_size_dr2_mosaic_opens_memory_mapped(tmp_path, shared_data):
    """A sparse file with the real P002+18 header: opening maps 834 MB without reading it."""
    header = fits.Header.fromtextfile(
        shared_data / "lotss_dr2_headers" / "P002+18" / "mosaic-blanked.fits.hdr"
    )
    path = tmp_path / "mosaic-blanked.fits"
    block = header.tostring().encode()
    with path.open("wb") as f:
        f.write(block)
        data_bytes = header["NAXIS1"] * header["NAXIS2"] * 8
        f.truncate(len(block) + -(-data_bytes // 2880) * 2880)
    with open_mosaic(MosaicFiles("P002+18", path)) as mosaic:
        assert mosaic.shape == (10210, 10210)
        assert mosaic.pixel_scale_arcsec == pytest.approx(1.5, rel=1e-6)
        ra, dec = mosaic.pixel_to_world(np.array([5104.0]), np.array([5104.0]))
        assert ra[0] == pytest.approx(2.1779, abs=1e-6) and dec[0] == pytest.approx(18.3938, abs=1e-6)
        np.testing.assert_array_equal(mosaic.image.gather(np.array([5000]), np.array([100]), 4), 0.0)
