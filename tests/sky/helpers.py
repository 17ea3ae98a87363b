"""Small FITS mosaics with real SIN WCS for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

PIXEL_DEG = 1.5 / 3600.0


def sin_header(
    ny: int, nx: int, crpix: tuple[float, float] | None = None, crval=(180.0, 50.0)
) -> fits.Header:
    """A DR2-like 2-D header: RA---SIN/DEC--SIN, 1.5″ pixels, CRPIX (x, y) 1-based."""
    header = fits.Header()
    cx, cy = crpix if crpix is not None else (nx / 2.0, ny / 2.0)
    for key, value in {
        "CTYPE1": "RA---SIN",
        "CTYPE2": "DEC--SIN",
        "CUNIT1": "deg",
        "CUNIT2": "deg",
        "CRPIX1": cx,
        "CRPIX2": cy,
        "CRVAL1": crval[0],
        "CRVAL2": crval[1],
        "CDELT1": -PIXEL_DEG,
        "CDELT2": PIXEL_DEG,
        "RADESYS": "ICRS",
        "BUNIT": "JY/BEAM",
    }.items():
        header[key] = value
    return header


def write_image(path: Path, data: np.ndarray, header: fits.Header | None = None) -> Path:
    """Write ``data`` (2-D, or 4-D with leading length-1 axes) with a SIN header."""
    ny, nx = data.shape[-2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data, header=header if header is not None else sin_header(ny, nx)).writeto(path)
    return path


def noise_image(ny: int, nx: int, seed: int = 0, rms: float = 1e-4) -> np.ndarray:
    """Gaussian noise (float64) with a few bright pixels."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, rms, (ny, nx))
    data[rng.integers(0, ny, 20), rng.integers(0, nx, 20)] += 0.01
    return data
