"""A synthetic LoTSS-like sky rendered into overlapping DR2-style mosaics.

One sky model (sources with realistic rates and a ground-truth catalogue) is rendered into N mosaics laid
out like LoTSS DR2: each mosaic has its own SIN projection centred on its pointing, 1.5″ pixels, a 6″
Gaussian beam in Jy/beam, NaN-blanked borders, beam-correlated noise whose rms (≈ 83 µJy/beam) differs
between mosaics and rises towards the edges, ripple artefacts around bright sources, and a 4-D
PyBDSF-like island mask. Neighbouring mosaics overlap on the sky, so the same source appears in several.

Rendering: every source is a set of elliptical Gaussian components; unresolved ones are deposited
bilinearly, resolved ones as normalised stamps, and the whole model is convolved once with the beam
(``scipy.ndimage.gaussian_filter``), which keeps a 2048² mosaic well under a second.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy import ndimage

from radio_curation.atomic import atomic_path
from radio_curation.errors import RadioCurationError

__all__ = [
    "CLASS_FRACTIONS",
    "SkyParams",
    "ensure_sky",
    "ensure_truth_peaks",
    "generate_sky",
    "mosaic_header",
    "sky_model",
    "source_peaks",
]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))

#: Fraction of sources per class; ≈ 8 % extended, FRI+FRII a few per cent, bent tails < 1 %.
CLASS_FRACTIONS: dict[str, float] = {
    "compact": 0.9177,
    "resolved": 0.04,
    "fri": 0.018,
    "frii": 0.02,
    "wat": 0.0015,
    "ht": 0.0012,
    "halo": 0.0008,
    "relic": 0.0008,
}

# Total flux range [Jy] and largest angular size range [arcsec] of each class.
_FLUX = {
    "compact": (2.0e-4, 3.0),
    "resolved": (5.0e-4, 0.3),
    "fri": (1.0e-2, 3.0),
    "frii": (1.0e-2, 5.0),
    "wat": (1.0e-2, 2.0),
    "ht": (5.0e-3, 1.0),
    "halo": (5.0e-2, 1.0),
    "relic": (5.0e-2, 1.0),
}
_SIZE = {
    "compact": (0.0, 5.0),
    "resolved": (8.0, 40.0),
    "fri": (40.0, 200.0),
    "frii": (60.0, 300.0),
    "wat": (60.0, 240.0),
    "ht": (40.0, 180.0),
    "halo": (120.0, 400.0),
    "relic": (100.0, 400.0),
}
_SINGLE = ("compact", "resolved")
#: Differential source counts dN/dS ∝ S^-(1 + _COUNT_SLOPE) (integral slope 0.7, faint LoTSS counts).
_COUNT_SLOPE = 0.7
#: Sources brighter than this [Jy] get calibration ripples around them.
_ARTEFACT_FLUX = 0.2


@dataclass(frozen=True)
class SkyParams:
    """Everything that determines a synthetic sky (the same parameters always give the same files).

    Parameters
    ----------
    mosaics
        Number of mosaics.
    size
        Mosaic width and height in pixels (DR2: 8938–10210).
    seed
        Random seed.
    overlap
        Fraction of a mosaic's width shared with its neighbour (DR2 pointings overlap by about a third).
    ra, dec
        Centre of the mosaic layout [deg].
    pixel_scale
        Pixel size [arcsec].
    beam_fwhm
        Beam FWHM [arcsec].
    rms
        Median noise rms [Jy/beam].
    rms_scatter
        Log-normal scatter of the rms between mosaics.
    density
        Sources per square degree (down to the faintest flux of the counts, 0.2 mJy).
    dtype
        ``float64`` (as DR2) or ``float32``.
    class_fractions
        Share of the sources in each class (classes left out get none; shares are normalised); None:
        :data:`CLASS_FRACTIONS`. Experiments about rare morphologies raise the rare classes' shares so that
        a sky of a few square degrees holds enough of them to measure.
    """

    mosaics: int = 4
    size: int = 2048
    seed: int = 0
    overlap: float = 0.35
    ra: float = 180.0
    dec: float = 50.0
    pixel_scale: float = 1.5
    beam_fwhm: float = 6.0
    rms: float = 83e-6
    rms_scatter: float = 0.15
    density: float = 1300.0
    dtype: str = "float64"
    class_fractions: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.mosaics < 1:
            raise RadioCurationError(f"synthetic sky: mosaics={self.mosaics}; use at least 1.")
        if self.size < 64:
            raise RadioCurationError(f"synthetic sky: size={self.size} px is too small; use at least 64.")
        if not 0.0 <= self.overlap < 0.9:
            raise RadioCurationError(f"synthetic sky: overlap={self.overlap} must be in [0, 0.9).")
        if self.dtype not in ("float32", "float64"):
            raise RadioCurationError(f"synthetic sky: dtype={self.dtype!r}; use float64 or float32.")
        if self.class_fractions is not None:
            unknown = sorted(set(self.class_fractions) - set(CLASS_FRACTIONS))
            shares = list(self.class_fractions.values())
            if unknown or any(float(v) < 0 for v in shares) or sum(float(v) for v in shares) <= 0:
                raise RadioCurationError(
                    f"synthetic sky: class_fractions={dict(self.class_fractions)} must give non-negative shares "
                    f"(not all 0) to classes among {list(CLASS_FRACTIONS)}."
                )

    @property
    def fractions(self) -> dict[str, float]:
        """Normalised share of the sources in every class."""
        given = CLASS_FRACTIONS if self.class_fractions is None else self.class_fractions
        total = sum(float(v) for v in given.values())
        return {name: float(given.get(name, 0.0)) / total for name in CLASS_FRACTIONS}

    @property
    def digest(self) -> str:
        """Short hash of all parameters (names the cache directory)."""
        params = asdict(self)
        if self.class_fractions is None:
            del params["class_fractions"]  # skies with the default classes keep their earlier names
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]

    @classmethod
    def from_header(cls, header: fits.Header, **overrides: object) -> SkyParams:
        """Take the geometry (size, pixel scale, centre, beam) from a real mosaic header."""
        geometry = {
            "size": int(header["NAXIS1"]),
            "pixel_scale": abs(float(header["CDELT2"])) * 3600.0,
            "ra": float(header["CRVAL1"]),
            "dec": float(header["CRVAL2"]),
        }
        if "BMAJ" in header:
            geometry["beam_fwhm"] = float(header["BMAJ"]) * 3600.0
        return cls(**{**geometry, **overrides})


@dataclass
class MosaicSpec:
    """Placement and noise level of one mosaic."""

    name: str
    ra: float
    dec: float
    rms: float
    index: int
    header: fits.Header = field(repr=False)


@dataclass
class SkyModel:
    """Sources (one row each) and their Gaussian components."""

    sources: Table
    comp_source: np.ndarray
    comp_ra: np.ndarray
    comp_dec: np.ndarray
    comp_flux: np.ndarray
    comp_major: np.ndarray
    comp_minor: np.ndarray
    comp_pa: np.ndarray


def mosaic_header(name: str, ra: float, dec: float, params: SkyParams, mask: bool = False) -> fits.Header:
    """A DR2-like header: SIN projection centred on the pointing, 4-D (STOKES, FREQ) for masks.

    Parameters
    ----------
    name
        Mosaic (pointing) name, written to OBJECT.
    ra, dec
        Pointing centre [deg].
    params
        Sky parameters (size, pixel scale, beam).
    mask
        Build the 4-D header of ``mosaic.pybdsmmask.fits`` instead of the 2-D image header.

    Returns
    -------
    astropy.io.fits.Header
    """
    header = fits.Header()
    naxis = 4 if mask else 2
    header["BITPIX"] = -32 if mask else (-64 if params.dtype == "float64" else -32)
    header["NAXIS"] = naxis
    header["NAXIS1"] = params.size
    header["NAXIS2"] = params.size
    if mask:
        header["NAXIS3"] = 1
        header["NAXIS4"] = 1
    header["WCSAXES"] = naxis
    header["CTYPE1"] = "RA---SIN"
    header["CTYPE2"] = "DEC--SIN"
    header["CUNIT1"] = "deg"
    header["CUNIT2"] = "deg"
    header["CRPIX1"] = params.size / 2.0
    header["CRPIX2"] = params.size / 2.0
    header["CRVAL1"] = ra
    header["CRVAL2"] = dec
    header["CDELT1"] = -params.pixel_scale / 3600.0
    header["CDELT2"] = params.pixel_scale / 3600.0
    if mask:
        for axis, (ctype, crval, cdelt, cunit) in {
            3: ("STOKES", 1.0, 1.0, ""),
            4: ("FREQ", 143650000.0, 300000000.0, "Hz"),
        }.items():
            header[f"CTYPE{axis}"] = ctype
            header[f"CRVAL{axis}"] = crval
            header[f"CDELT{axis}"] = cdelt
            header[f"CRPIX{axis}"] = 1.0
            header[f"CUNIT{axis}"] = cunit
    header["RADESYS"] = "ICRS"
    header["EQUINOX"] = 2000.0
    header["LONPOLE"] = 180.0
    header["LATPOLE"] = dec
    header["BMAJ"] = params.beam_fwhm / 3600.0
    header["BMIN"] = params.beam_fwhm / 3600.0
    header["BPA"] = 90.0
    header["TELESCOP"] = "LOFAR"
    header["RESTFRQ"] = 143650000.0
    header["BUNIT"] = "" if mask else "JY/BEAM"
    header["BTYPE"] = "Mask" if mask else "Intensity"
    header["OBJECT"] = name
    header["ORIGIN"] = "radio-curation synthetic sky"
    return header


def _layout(params: SkyParams) -> list[tuple[float, float]]:
    """Pointing centres on a near-square grid, neighbours ``overlap`` of a mosaic width apart."""
    ncols = math.ceil(math.sqrt(params.mosaics))
    nrows = math.ceil(params.mosaics / ncols)
    spacing = params.size * params.pixel_scale / 3600.0 * (1.0 - params.overlap)
    centres = []
    for i in range(params.mosaics):
        row, col = divmod(i, ncols)
        dec = params.dec + (row - (nrows - 1) / 2.0) * spacing
        ra = params.ra + (col - (ncols - 1) / 2.0) * spacing / math.cos(math.radians(dec))
        centres.append((ra % 360.0, dec))
    return centres


def _mosaic_name(ra: float, dec: float) -> str:
    return f"P{ra:07.3f}{dec:+07.3f}"


def _pareto(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """Fluxes from dN/dS ∝ S^-(1+slope) truncated to [low, high] (inverse-CDF sampling)."""
    a = _COUNT_SLOPE
    u = rng.random(n)
    return (low**-a - u * (low**-a - high**-a)) ** (-1.0 / a)


def _along(pa_deg: float, t: np.ndarray, perp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """East/north offsets of points ``t`` along position angle ``pa`` and ``perp`` across it [arcsec]."""
    pa = math.radians(pa_deg)
    east = t * math.sin(pa) + perp * math.cos(pa)
    north = t * math.cos(pa) - perp * math.sin(pa)
    return east, north


def _path(
    heading0: float, heading1: float, length: float, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A curved jet: ``n`` points whose heading (deg east of north) turns smoothly from h0 to h1."""
    t = (np.arange(n) + 0.5) / n
    heading = np.radians(heading0 + (heading1 - heading0) * (3 * t**2 - 2 * t**3))
    step = length / n
    east = np.cumsum(step * np.sin(heading))
    north = np.cumsum(step * np.cos(heading))
    return east, north, np.degrees(heading)


def _components(cls: str, flux: float, size: float, pa: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Components of one extended source: arrays (east, north [arcsec], flux [Jy], major, minor FWHM [arcsec], pa)."""
    parts: list[tuple] = []
    if cls == "fri":
        parts.append((0.0, 0.0, 0.08, 3.0, 3.0, pa))
        bend = rng.uniform(-0.2, 0.2, size=2)
        for side, brightness in zip((1.0, -1.0), (1.0, rng.uniform(0.5, 1.0)), strict=True):
            t = (np.arange(10) + 0.5) / 10 * size / 2
            perp = bend[int(side < 0)] * t**2 / size
            east, north = _along(pa, side * t, perp)
            decay = np.exp(-2.5 * t / (size / 2))
            weight = 0.46 * brightness * decay / decay.sum()
            width = 4.0 + 0.35 * t
            for e, n, w, wd in zip(east, north, weight, width, strict=True):
                parts.append((e, n, w, wd, 0.7 * wd, pa))
    elif cls == "frii":
        parts.append((0.0, 0.0, 0.03, 3.0, 3.0, pa))
        for side in (1.0, -1.0):
            arm = size / 2 * (1.0 if side > 0 else rng.uniform(0.8, 1.0))
            lobe_flux = 0.485 * rng.uniform(0.7, 1.0)
            east, north = _along(pa, np.array([side * arm]), np.zeros(1))
            parts.append((east[0], north[0], 0.35 * lobe_flux, rng.uniform(3.0, 6.0), 3.0, pa))
            t = np.linspace(0.5, 0.95, 5) * arm
            weight = 0.65 * lobe_flux * t / t.sum()
            east, north = _along(pa, side * t, np.zeros(5))
            for e, n, w in zip(east, north, weight, strict=True):
                parts.append((e, n, w, 0.22 * size, 0.16 * size, pa))
    elif cls in ("wat", "ht"):
        tail = pa + 180.0 + rng.uniform(-20.0, 20.0)
        core = 0.3 if cls == "ht" else 0.05
        parts.append((0.0, 0.0, core, 3.0, 3.0, pa))
        spread = (90.0, 90.0) if cls == "wat" else (25.0, 25.0)
        for side in (1.0, -1.0):
            east, north, heading = _path(
                tail + side * spread[0], tail + side * rng.uniform(0.0, 10.0), size, 12
            )
            weight = np.exp(-np.arange(12) / 6.0)
            weight *= (1.0 - core) / 2.0 / weight.sum()
            width = 5.0 + 0.08 * size * np.arange(12) / 12
            for e, n, w, wd, h in zip(east, north, weight, width, heading, strict=True):
                parts.append((e, n, w, 1.6 * wd, wd, h))
    elif cls == "halo":
        for frac, weight in ((0.3, 0.2), (0.6, 0.35), (1.0, 0.45)):
            parts.append((0.0, 0.0, weight, frac * size, frac * size * rng.uniform(0.8, 1.0), pa))
    elif cls == "relic":
        radius = size * rng.uniform(0.7, 1.5)
        span = size / radius
        angles = np.linspace(-span / 2, span / 2, 16)
        width = rng.uniform(10.0, 30.0)
        east, north = _along(pa, radius * (np.cos(angles) - 1.0), radius * np.sin(angles))
        weight = 1.0 + 0.3 * rng.standard_normal(16).clip(-2, 2)
        weight /= weight.sum()
        for e, n, w, a in zip(east, north, weight, angles, strict=True):
            parts.append((e, n, w, 1.5 * radius * span / 16, width, pa + 90.0 + math.degrees(a)))
    arr = np.array(parts, dtype=float)
    arr[:, 2] *= flux / arr[:, 2].sum()
    return [arr[:, i] for i in range(6)]


def sky_model(params: SkyParams, centres: list[tuple[float, float]]) -> SkyModel:
    """Draw the sources over the union of the mosaics' footprints.

    Parameters
    ----------
    params
        Sky parameters.
    centres
        Pointing centres of the mosaics [deg].

    Returns
    -------
    SkyModel
        Source table (``source_id, ra, dec, class, flux, size, pa, has_artefact, peak``) and components.
    """
    rng = np.random.default_rng([params.seed, 0])
    half = params.size * params.pixel_scale / 3600.0 / 2.0 + 0.05
    ras = np.array([c[0] for c in centres])
    decs = np.array([c[1] for c in centres])
    dec_lo = max(float(decs.min()) - half, -89.0)
    dec_hi = min(float(decs.max()) + half, 89.0)
    widen = half / math.cos(math.radians(max(abs(dec_lo), abs(dec_hi))))
    # Pointing RAs are continuous across 0° within a layout only if unwrapped around the first one.
    ras = params.ra + ((ras - params.ra + 180.0) % 360.0 - 180.0)
    ra_lo, ra_hi = float(ras.min()) - widen, float(ras.max()) + widen
    area = math.radians(ra_hi - ra_lo) * (math.sin(math.radians(dec_hi)) - math.sin(math.radians(dec_lo)))
    area_deg2 = area * (180.0 / math.pi) ** 2
    n = int(rng.poisson(params.density * area_deg2))
    ra = (ra_lo + (ra_hi - ra_lo) * rng.random(n)) % 360.0
    sin_dec = math.sin(math.radians(dec_lo)) + rng.random(n) * (
        math.sin(math.radians(dec_hi)) - math.sin(math.radians(dec_lo))
    )
    dec = np.degrees(np.arcsin(sin_dec))
    fractions = params.fractions
    names = list(fractions)
    probs = np.array([fractions[k] for k in names])
    cls_index = rng.choice(len(names), size=n, p=probs / probs.sum())
    flux = np.empty(n)
    size = np.empty(n)
    for i, name in enumerate(names):
        sel = cls_index == i
        flux[sel] = _pareto(rng, int(sel.sum()), *_FLUX[name])
        lo, hi = _SIZE[name]
        size[sel] = lo + (hi - lo) * rng.random(int(sel.sum())) ** 1.5
    pa = rng.uniform(0.0, 180.0, n)
    classes = np.array(names)[cls_index]
    # Compact and resolved sources are one Gaussian each (vectorised); extended ones are built per source.
    single = np.isin(classes, _SINGLE)
    axis_ratio = np.where(classes == "resolved", rng.uniform(0.4, 1.0, n), 1.0)
    comps: list[list[np.ndarray]] = [
        [np.zeros(int(single.sum()))],
        [np.zeros(int(single.sum()))],
        [flux[single]],
        [size[single]],
        [(size * axis_ratio)[single]],
        [pa[single]],
    ]
    owners = [np.flatnonzero(single)]
    for i in np.flatnonzero(~single):
        parts = _components(str(classes[i]), float(flux[i]), float(size[i]), float(pa[i]), rng)
        for store, part in zip(comps, parts, strict=True):
            store.append(part)
        owners.append(np.full(len(parts[0]), i))
    east, north, cflux, major, minor, cpa = (np.concatenate(c) for c in comps)
    owner = np.concatenate(owners)
    cdec = dec[owner] + north / 3600.0
    cra = (ra[owner] + east / 3600.0 / np.cos(np.radians(cdec))) % 360.0
    peak = source_peaks(n, owner, east, north, cflux, major, minor, cpa, params.beam_fwhm)
    sources = Table(
        {
            "source_id": np.arange(n, dtype=np.int64),
            "ra": ra,
            "dec": dec,
            "class": classes.astype("U8"),
            "flux": flux,
            "size": size,
            "pa": pa,
            "has_artefact": flux > _ARTEFACT_FLUX,
            "peak": peak,
        }
    )
    sources["ra"].unit = "deg"
    sources["dec"].unit = "deg"
    sources["flux"].unit = "Jy"
    sources["size"].unit = "arcsec"
    sources["pa"].unit = "deg"
    sources["peak"].unit = "Jy/beam"
    return SkyModel(sources, owner, cra, cdec, cflux, major, minor, cpa)


def source_peaks(
    n: int,
    owner: np.ndarray,
    east: np.ndarray,
    north: np.ndarray,
    flux: np.ndarray,
    major: np.ndarray,
    minor: np.ndarray,
    pa: np.ndarray,
    beam_fwhm: float,
) -> np.ndarray:
    """Peak brightness [Jy/beam] of each source on its own, after convolution with the beam.

    Every component is an elliptical Gaussian (FWHM ``major``, ``minor`` [arcsec] at position angle ``pa``
    [deg], offset ``east``, ``north`` [arcsec] from its source ``owner``); convolved with a circular beam
    its FWHMs add in quadrature and its peak is ``flux × beam² / (major' × minor')``. A source's peak is the
    largest sum of its convolved components at any of their centres. This is what says whether a source can
    be seen above the noise: a faint resolved source spreads its flux over many beams. (Rendering deposits
    point sources bilinearly on the pixel grid, so a rendered peak can be a few per cent lower.)
    """
    conv_major = np.hypot(major, beam_fwhm)
    conv_minor = np.hypot(minor, beam_fwhm)
    amplitude = flux * beam_fwhm**2 / (conv_major * conv_minor)
    peaks = np.zeros(n)
    counts = np.bincount(owner, minlength=n)
    single = counts[owner] == 1
    peaks[owner[single]] = amplitude[single]
    order = np.argsort(owner, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    theta = np.radians(pa)
    for i in np.flatnonzero(counts > 1):
        c = order[bounds[i] : bounds[i + 1]]
        de = east[c][:, None] - east[c][None, :]  # row: where it is evaluated, column: which component
        dn = north[c][:, None] - north[c][None, :]
        along = de * np.sin(theta[c]) + dn * np.cos(theta[c])
        across = de * np.cos(theta[c]) - dn * np.sin(theta[c])
        sx, sy = conv_major[c] * FWHM_TO_SIGMA, conv_minor[c] * FWHM_TO_SIGMA
        brightness = amplitude[c] * np.exp(-0.5 * ((along / sx) ** 2 + (across / sy) ** 2))
        peaks[i] = brightness.sum(axis=1).max()
    return peaks


def _deposit_points(model: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray) -> None:
    """Add point fluxes at sub-pixel positions, split bilinearly over the four nearest pixels."""
    ny, nx = model.shape
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = x - x0
    fy = y - y0
    for dy, dx, w in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy = y0 + dy
        xx = x0 + dx
        ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        np.add.at(model, (yy[ok], xx[ok]), (flux * w)[ok])


def _add_gaussian(
    model: np.ndarray, x: float, y: float, flux: float, sx: float, sy: float, theta: float
) -> None:
    """Add an elliptical Gaussian of total ``flux`` (sigmas in px, ``theta`` rad from +y towards -x)."""
    ny, nx = model.shape
    half = math.ceil(4.0 * max(sx, sy)) + 1
    xs = np.arange(max(int(x) - half, 0), min(int(x) + half + 1, nx))
    ys = np.arange(max(int(y) - half, 0), min(int(y) + half + 1, ny))
    if xs.size == 0 or ys.size == 0:
        return
    dx = xs[None, :] - x
    dy = ys[:, None] - y
    # Major axis along position angle: north is +y, east is -x (RA increases to the left).
    u = -dx * math.sin(theta) + dy * math.cos(theta)
    v = dx * math.cos(theta) + dy * math.sin(theta)
    stamp = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    norm = 2.0 * math.pi * sx * sy
    model[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1] += (flux / norm) * stamp


def _ripples(image: np.ndarray, x: float, y: float, peak: float, rng: np.random.Generator) -> None:
    """Calibration-error ripples and spokes around a bright source (added in the image plane)."""
    ny, nx = image.shape
    half = 128
    xs = np.arange(max(int(x) - half, 0), min(int(x) + half + 1, nx))
    ys = np.arange(max(int(y) - half, 0), min(int(y) + half + 1, ny))
    if xs.size == 0 or ys.size == 0:
        return
    dx = xs[None, :] - x
    dy = ys[:, None] - y
    r = np.hypot(dx, dy)
    az = np.arctan2(dy, dx)
    spokes = 0.6 + 0.4 * np.cos(rng.integers(3, 8) * az + rng.uniform(0, 2 * np.pi))
    pattern = np.exp(-r / 30.0) * np.cos(2 * np.pi * r / 10.0 + rng.uniform(0, 2 * np.pi)) * spokes
    pattern[r < 4.0] = 0.0
    image[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1] += 0.004 * peak * pattern


def _coverage(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Covered pixels (a wobbly rounded square, corners blanked) and the squared normalised radius."""
    c = (size - 1) / 2.0
    coords = (np.arange(size) - c) / (0.5 * size)
    u = coords[None, :]
    v = coords[:, None]
    r2 = u**2 + v**2
    angle = np.arctan2(v, u)
    edge = 0.97 * (1.0 + 0.015 * np.sin(5 * angle + rng.uniform(0, 2 * np.pi)))
    covered = (np.abs(u) ** 4 + np.abs(v) ** 4) ** 0.25 <= edge
    return covered, r2.astype(np.float32)


def island_mask(
    image: np.ndarray, rms_map: np.ndarray, thresh_isl: float = 3.0, thresh_pix: float = 5.0
) -> np.ndarray:
    """PyBDSF-like islands: connected pixels above ``thresh_isl``·rms holding a peak above ``thresh_pix``·rms.

    Parameters
    ----------
    image, rms_map
        Image and local noise [Jy/beam]; NaN pixels are outside every island.
    thresh_isl, thresh_pix
        Island and peak thresholds in units of the rms (PyBDSF defaults).

    Returns
    -------
    numpy.ndarray
        Boolean island mask.
    """
    with np.errstate(invalid="ignore"):
        snr = image / rms_map
        above = snr > thresh_isl
    labels, n = ndimage.label(above, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return above
    sel = labels > 0
    peaks = np.zeros(n + 1)
    np.maximum.at(peaks, labels[sel], snr[sel])
    keep = peaks > thresh_pix
    keep[0] = False
    return keep[labels]


def render_mosaic(sky: SkyModel, spec: MosaicSpec, params: SkyParams) -> tuple[np.ndarray, np.ndarray]:
    """Render one mosaic of the sky: image [Jy/beam] with NaN borders, and the island mask.

    Parameters
    ----------
    sky
        The sky model shared by all mosaics.
    spec
        The mosaic's pointing, noise level and header.
    params
        Sky parameters.

    Returns
    -------
    tuple of numpy.ndarray
        ``image`` (``params.dtype``) and ``mask`` (bool), both ``[size, size]``.
    """
    rng = np.random.default_rng([params.seed, 1, spec.index])
    size = params.size
    wcs = WCS(spec.header)
    beam_sigma = params.beam_fwhm / params.pixel_scale * FWHM_TO_SIGMA
    beam_area = 2.0 * math.pi * beam_sigma**2
    x, y = wcs.all_world2pix(sky.comp_ra, sky.comp_dec, 0)
    margin = 4.0 * beam_sigma
    inside = np.isfinite(x) & (x > -margin) & (x < size + margin) & (y > -margin) & (y < size + margin)
    model = np.zeros((size, size), dtype=np.float32)
    sx = sky.comp_major * FWHM_TO_SIGMA / params.pixel_scale
    sy = sky.comp_minor * FWHM_TO_SIGMA / params.pixel_scale
    point = inside & (sx < 0.5)
    _deposit_points(model, x[point], y[point], sky.comp_flux[point])
    for i in np.flatnonzero(inside & ~point):
        _add_gaussian(
            model, x[i], y[i], sky.comp_flux[i], sx[i], max(sy[i], 0.3), math.radians(sky.comp_pa[i])
        )
    image = ndimage.gaussian_filter(model, beam_sigma, mode="constant", truncate=4.0)
    image *= beam_area
    del model

    bright = np.flatnonzero(np.asarray(sky.sources["has_artefact"]))
    if bright.size:
        bx, by = wcs.all_world2pix(
            np.asarray(sky.sources["ra"])[bright], np.asarray(sky.sources["dec"])[bright], 0
        )
        for j, xb, yb in zip(bright, bx, by, strict=True):
            if -128 < xb < size + 128 and -128 < yb < size + 128:
                _ripples(image, xb, yb, float(sky.sources["flux"][j]), rng)

    covered, r2 = _coverage(size, rng)
    rms_map = spec.rms * (1.0 + 0.4 * r2)
    noise = rng.standard_normal((size, size), dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, beam_sigma, mode="wrap", truncate=4.0)
    # A unit-sum Gaussian kernel scales white noise by 1 / (2 σ √π); undo it so the rms is exact.
    noise *= 2.0 * beam_sigma * math.sqrt(math.pi)
    noise *= rms_map
    image += noise
    del noise
    image[~covered] = np.nan
    mask = island_mask(image, rms_map)
    return image.astype(params.dtype, copy=False), mask


def _mosaic_specs(params: SkyParams) -> list[MosaicSpec]:
    rng = np.random.default_rng([params.seed, 2])
    specs = []
    for i, (ra, dec) in enumerate(_layout(params)):
        name = _mosaic_name(ra, dec)
        rms = params.rms * float(np.exp(params.rms_scatter * rng.standard_normal()))
        specs.append(MosaicSpec(name, ra, dec, rms, i, mosaic_header(name, ra, dec, params)))
    return specs


def _write(out: Path, params: SkyParams, report: Callable[[str], None] | None = None) -> None:
    specs = _mosaic_specs(params)
    sky = sky_model(params, [(s.ra, s.dec) for s in specs])
    for spec in specs:
        image, mask = render_mosaic(sky, spec, params)
        directory = out / "mosaics" / spec.name
        directory.mkdir(parents=True)
        header = spec.header.copy()
        header["NOISE"] = (spec.rms, "synthetic noise rms at the centre [Jy/beam]")
        fits.PrimaryHDU(image, header=header).writeto(directory / "mosaic-blanked.fits")
        mask_header = mosaic_header(spec.name, spec.ra, spec.dec, params, mask=True)
        fits.PrimaryHDU(mask.astype(np.float32)[None, None], header=mask_header).writeto(
            directory / "mosaic.pybdsmmask.fits"
        )
        if report is not None:
            report(spec.name)
    _write_truth(out / "truth.fits", sky, params)
    meta = {
        "params": asdict(params),
        "mosaics": [{"name": s.name, "ra": s.ra, "dec": s.dec, "rms": s.rms} for s in specs],
        "sources": len(sky.sources),
    }
    (out / "sky.json").write_text(json.dumps(meta, indent=2))


def _write_truth(path: Path, sky: SkyModel, params: SkyParams) -> None:
    sky.sources.meta["SEED"] = params.seed
    with atomic_path(path) as tmp:
        sky.sources.write(tmp, format="fits")


def generate_sky(out: str | Path, params: SkyParams, report: Callable[[str], None] | None = None) -> Path:
    """Render the sky ``params`` describes into ``out`` (which must not exist yet).

    Files are written to a temporary sibling directory that is renamed to ``out`` at the end, so ``out``
    either does not exist or is complete, even when several processes generate the same sky at once
    (the first rename wins and the others discard their copy).

    Parameters
    ----------
    out
        Directory to create: ``mosaics/<name>/mosaic-blanked.fits`` and ``mosaic.pybdsmmask.fits``,
        ``truth.fits`` (the ground-truth catalogue) and ``sky.json`` (parameters and mosaic list).
    params
        Sky parameters.
    report
        Optional callable called with each mosaic name once it is written (progress).

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    out = Path(out)
    if out.exists():
        raise RadioCurationError(f"{out} already exists; choose another output directory or delete it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(out) as tmp:
            _write(tmp, params, report)
    except OSError:
        # A concurrent process renamed its complete sky into place first.
        if not (out / "sky.json").is_file():
            raise
    return out


def ensure_sky(out: str | Path, params: SkyParams, report: Callable[[str], None] | None = None) -> Path:
    """Return ``out``, generating the sky there first if it is not there yet (safe under concurrency)."""
    out = Path(out)
    if not (out / "sky.json").is_file():
        if out.exists():
            raise RadioCurationError(
                f"{out} exists but holds no complete synthetic sky (no sky.json); delete it to regenerate."
            )
        try:
            generate_sky(out, params, report)
        except RadioCurationError:
            if not (out / "sky.json").is_file():
                raise
    return out


def ensure_truth_peaks(out: str | Path) -> Path:
    """The truth catalogue of the sky in ``out``, given its ``peak`` column first if it lacks one.

    Skies written before truth catalogues had a peak column get it here, when a labelling asks for it: the
    parameters in ``sky.json`` give the same sources again, so only ``truth.fits`` is rewritten
    (atomically) and the mosaics, and the runs made from them, stay valid.
    """
    out = Path(out)
    truth = out / "truth.fits"
    if "peak" not in Table.read(truth).colnames:
        params = SkyParams(**json.loads((out / "sky.json").read_text())["params"])
        _write_truth(truth, sky_model(params, [(s.ra, s.dec) for s in _mosaic_specs(params)]), params)
    return truth
