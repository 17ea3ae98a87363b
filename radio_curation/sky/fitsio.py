"""Memory-mapped access to FITS mosaics.

Mosaics are opened with ``astropy.io.fits`` in memory-mapped mode and exposed as a 2-D image whose pixels
are read only when a strip or a batch of windows is requested. Degenerate STOKES/FREQ axes are squeezed,
integer images with ``BSCALE``/``BZERO``/``BLANK`` stay memory-mapped (scaling is applied to what is read),
and the celestial WCS is built from a header cleaned of the non-ASCII commentary cards that real archive
files carry.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from numpy.lib.stride_tricks import sliding_window_view

from radio_curation.errors import RadioCurationError

__all__ = [
    "ImageData",
    "Mosaic",
    "MosaicFiles",
    "MosaicReadError",
    "celestial_wcs",
    "clean_header",
    "open_image",
    "open_mosaic",
]


class MosaicReadError(RadioCurationError):
    """A FITS file that cannot be used as a mosaic (not FITS, truncated, no image, no celestial WCS)."""


@dataclass(frozen=True)
class MosaicFiles:
    """Where one mosaic lives on disk.

    Parameters
    ----------
    name
        Mosaic name (the DR2 pointing name, or the file stem for arbitrary FITS images).
    image
        Path of the image (``mosaic-blanked.fits`` in the DR2 layout).
    mask
        Optional island mask with the same pixel grid (``mosaic.pybdsmmask.fits``).
    """

    name: str
    image: Path
    mask: Path | None = None


def clean_header(header: fits.Header) -> fits.Header:
    """Return a copy of ``header`` without commentary cards and without cards astropy cannot print.

    Archive files (e.g. SkyView cut-outs) carry tabs and other non-printable characters in COMMENT cards;
    astropy refuses to serialise those, which breaks WCS construction. None of them matter for the image.

    Parameters
    ----------
    header
        Header as read from the file.

    Returns
    -------
    astropy.io.fits.Header
        Header with printable value cards only.
    """
    clean = fits.Header()
    for card in header.cards:
        if card.keyword in ("COMMENT", "HISTORY", ""):
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = card.value
        if caught or (isinstance(value, str) and not (value.isascii() and value.isprintable())):
            continue
        clean.append((card.keyword, value))
    return clean


def celestial_wcs(header: fits.Header, source: str = "header") -> WCS:
    """Build the 2-D celestial WCS of an image whose first two axes are longitude and latitude.

    Parameters
    ----------
    header
        Image header (cleaned with :func:`clean_header`).
    source
        Name used in error messages (usually the file path).

    Returns
    -------
    astropy.wcs.WCS
        Two-axis celestial WCS (pixel axis 0 = x/RA, 1 = y/Dec).

    Raises
    ------
    MosaicReadError
        If the header has no celestial WCS on its first two axes.
    """
    # FITSFixedWarning only reports normalisations astropy applied (e.g. unit 'HZ' -> 'Hz' in DR2 headers).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            full = WCS(header)
        except (ValueError, KeyError, MemoryError) as err:
            raise MosaicReadError(f"{source}: invalid WCS in header ({err}).") from err
    if not full.has_celestial or full.wcs.lng != 0 or full.wcs.lat != 1:
        ctypes = [header.get(f"CTYPE{i}", "") for i in (1, 2)]
        raise MosaicReadError(
            f"{source}: no celestial WCS on the first two image axes (CTYPE1/CTYPE2 = {ctypes}); "
            "mosaics need RA/Dec axes, e.g. CTYPE1='RA---SIN', CTYPE2='DEC--SIN'."
        )
    return full.celestial


class ImageData:
    """A 2-D view of a FITS image that reads pixels on demand.

    Parameters
    ----------
    raw
        The 2-D memory-mapped array as stored in the file (big-endian, possibly integer).
    bscale, bzero, blank
        Integer scaling (``physical = raw * bscale + bzero``) and the raw value marking blank pixels;
        ``None`` when the image is stored as floating point.
    """

    def __init__(
        self,
        raw: np.ndarray,
        bscale: float | None = None,
        bzero: float | None = None,
        blank: int | None = None,
    ) -> None:
        self.raw = raw
        self.bscale = bscale
        self.bzero = bzero
        self.blank = blank
        self.scaled = bscale is not None
        if self.scaled:
            self.dtype = np.dtype(np.float32 if raw.dtype.itemsize <= 2 else np.float64)
        else:
            self.dtype = raw.dtype.newbyteorder("=")

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(ny, nx)``."""
        return self.raw.shape

    def _physical(self, raw: np.ndarray) -> np.ndarray:
        if not self.scaled:
            return raw.astype(self.dtype, copy=False)
        out = raw.astype(self.dtype)
        out *= self.bscale
        out += self.bzero
        if self.blank is not None:
            out[raw == self.blank] = np.nan
        return out

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Read rows ``start:stop`` (all columns) as a native-endian float array."""
        return self._physical(np.asarray(self.raw[start:stop]))

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Read rows ``start:stop`` into ``out`` (shape ``(stop - start, nx)``, :attr:`dtype`) and return it.

        Reusing one buffer for a streaming pass avoids allocating (and page-faulting) a new array per strip.
        """
        raw = self.raw[start:stop]
        np.copyto(out, raw, casting="unsafe")
        if self.scaled:
            out *= self.bscale
            out += self.bzero
            if self.blank is not None:
                out[raw == self.blank] = np.nan
        return out

    def positive(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """``rows(start, stop) > 0`` written into the boolean array ``out`` (one pass, no float copy)."""
        source = self.rows(start, stop) if self.scaled else self.raw[start:stop]
        return np.greater(source, 0, out=out)

    def gather(self, y0: np.ndarray, x0: np.ndarray, size: int, dtype: np.dtype | None = None) -> np.ndarray:
        """Read ``len(y0)`` square windows of ``size`` pixels with top-left corners ``(y0, x0)``.

        One advanced-indexing operation on a strided view of the memory map (no loop over windows);
        callers sort windows by position so the pages are touched in file order.

        Parameters
        ----------
        y0, x0
            Top-left corners.
        size
            Window side [px].
        dtype
            Output dtype (default: the image's float dtype); converted in the same pass as the byte swap.

        Returns
        -------
        numpy.ndarray
            ``[B, size, size]`` physical pixel values.
        """
        view = sliding_window_view(self.raw, (size, size))
        picked = view[np.asarray(y0), np.asarray(x0)]
        if self.scaled:
            return self._physical(picked).astype(dtype or self.dtype, copy=False)
        return picked.astype(dtype or self.dtype, copy=False)


_FLOAT_BITPIX = (-32, -64)


def open_image(path: str | Path) -> tuple[fits.HDUList, ImageData, fits.Header]:
    """Open the first image HDU of a FITS file memory-mapped.

    Parameters
    ----------
    path
        FITS file.

    Returns
    -------
    tuple
        The open ``HDUList`` (close it when done), the 2-D :class:`ImageData` and the cleaned header.

    Raises
    ------
    MosaicReadError
        If the file is missing, not FITS, truncated, holds no image, or has non-degenerate extra axes.
    """
    path = Path(path)
    if not path.is_file():
        raise MosaicReadError(f"{path}: file not found.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, memmap=True, do_not_scale_image_data=True, mode="readonly")
        except (OSError, ValueError, IndexError, TypeError) as err:
            raise MosaicReadError(f"{path}: not a readable FITS file ({err}).") from err
    try:
        hdu = next(
            (
                h
                for h in hdul
                if isinstance(h, fits.PrimaryHDU | fits.ImageHDU) and h.header.get("NAXIS", 0) >= 2
            ),
            None,
        )
        if hdu is None:
            raise MosaicReadError(f"{path}: no image HDU with at least two axes.")
        header = hdu.header
        with warnings.catch_warnings(record=True) as caught_data:
            warnings.simplefilter("always")
            try:
                data = hdu.data
                problems = []
            except (TypeError, ValueError, OSError) as err:
                data, problems = None, [str(err)]
        problems += [str(w.message) for w in (*caught, *caught_data) if "truncated" in str(w.message)]
        if problems or data is None:
            reason = problems[-1] if problems else "no data"
            raise MosaicReadError(f"{path}: the file is truncated or damaged ({reason}); re-download it.")
        if data.ndim > 2:
            if any(n != 1 for n in data.shape[:-2]):
                raise MosaicReadError(
                    f"{path}: image has shape {data.shape}; only 2-D images or images whose extra axes "
                    "(e.g. STOKES, FREQ) have length 1 are supported."
                )
            data = data[(0,) * (data.ndim - 2)]
        bitpix = header["BITPIX"]
        scaling = {}
        if bitpix not in _FLOAT_BITPIX:
            scaling = {
                "bscale": float(header.get("BSCALE", 1.0)),
                "bzero": float(header.get("BZERO", 0.0)),
                "blank": header.get("BLANK"),
            }
        image = ImageData(data, **scaling)
        clean = clean_header(header)
    except BaseException:
        hdul.close()
        raise
    return hdul, image, clean


class Mosaic:
    """An open mosaic: memory-mapped image, optional island mask and celestial WCS.

    Use as a context manager, or call :meth:`close`.

    Parameters
    ----------
    files
        Where the image and mask live.
    """

    def __init__(self, files: MosaicFiles) -> None:
        self.files = files
        self.name = files.name
        self._hduls: list[fits.HDUList] = []
        hdul, self.image, self.header = open_image(files.image)
        self._hduls.append(hdul)
        try:
            self.wcs = celestial_wcs(self.header, str(files.image))
            self.mask: ImageData | None = None
            if files.mask is not None:
                mask_hdul, self.mask, _ = open_image(files.mask)
                self._hduls.append(mask_hdul)
                if self.mask.shape != self.image.shape:
                    raise MosaicReadError(
                        f"{files.mask}: mask shape {self.mask.shape} differs from image shape "
                        f"{self.image.shape} of {files.image}."
                    )
        except BaseException:
            self.close()
            raise

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(ny, nx)``."""
        return self.image.shape

    @property
    def pixel_scale_arcsec(self) -> float:
        """Mean pixel size in arcseconds (from the WCS)."""
        return float(u.Quantity(self.wcs.proj_plane_pixel_scales()).to_value("arcsec").mean())

    def pixel_to_world(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Convert 0-based pixel coordinates to ICRS/FK5 RA, Dec in degrees."""
        ra, dec = self.wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
        return np.mod(ra, 360.0), dec

    def world_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Convert RA, Dec in degrees to 0-based pixel coordinates ``(x, y)``; NaN where not projectable."""
        x, y = self.wcs.all_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0, quiet=True)
        return x, y

    def close(self) -> None:
        """Close the underlying files (the memory maps stay valid until garbage-collected)."""
        for hdul in self._hduls:
            hdul.close()
        self._hduls.clear()

    def __enter__(self) -> Mosaic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_mosaic(files: MosaicFiles) -> Mosaic:
    """Open a mosaic; see :class:`Mosaic`."""
    return Mosaic(files)
