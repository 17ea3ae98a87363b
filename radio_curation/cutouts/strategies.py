"""Cutout strategies: which windows of a mosaic become rows of the cutout index.

Built from the ``cutouts`` config group. A strategy is a small picklable object; ``windows(mosaic)``
returns the index rows of one open mosaic (no pixels) and counts of what it left out.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Ge, Gt, Interval
from astropy import units as u
from astropy.table import Table

from radio_curation.cutouts.stats import coverage_grid, gathered_window_stats, grid_window_stats
from radio_curation.errors import RadioCurationError
from radio_curation.runs.settings import PositiveInt
from radio_curation.sky.fitsio import Mosaic

__all__ = ["CatalogWindows", "CutoutStrategy", "SlidingWindow", "load_catalog"]

NanPolicy = Literal["drop", "max_fraction"]
#: A window side in pixels.
WindowSize = Annotated[int, Ge(2)]
#: A share of a window, from 0 up to (not including) all of it.
Fraction = Annotated[float, Interval(ge=0, lt=1)]
#: With ``rms_step`` null, the robust rms uses about this many samples along each side of a window.
RMS_SAMPLES_PER_SIDE = 16

#: Row columns every strategy returns (besides ``mosaic``, added by the stage).
COLUMNS = {
    "y0": np.int32,
    "x0": np.int32,
    "size": np.int32,
    "ra": np.float64,
    "dec": np.float64,
    "nan_fraction": np.float32,
    "rms": np.float32,
    "peak": np.float32,
    "peak_snr": np.float32,
    "mask_fraction": np.float32,
    "edge_distance": np.float32,
    "catalog_row": np.int64,
}


class CutoutStrategy(ABC):
    """Common options: the NaN policy and the rms sub-grid.

    Parameters
    ----------
    nan_policy
        ``drop``: drop any window with a NaN (as the per-cutout .npy scripts this project replaces did);
        ``max_fraction``: keep windows with at most ``max_nan_fraction`` NaN pixels (the reader fills them
        with ``nan_fill``).
    max_nan_fraction
        Largest NaN fraction kept under ``max_fraction``. Windows that are entirely NaN are always dropped.
    nan_fill
        Value the window reader puts in NaN pixels (recorded in the index).
    rms_step
        Step [px] of the sub-grid the robust rms is computed on (see :mod:`radio_curation.cutouts.stats`);
        ``None``: about ``window_size / RMS_SAMPLES_PER_SIDE`` (16 × 16 samples per window, 8 px for 128-px
        windows: two beams apart, so nearly independent), the largest divisor of the stride not above it.
    """

    def __init__(
        self,
        nan_policy: NanPolicy = "drop",
        max_nan_fraction: Fraction = 0.0,
        nan_fill: float = 0.0,
        rms_step: PositiveInt | None = None,
    ) -> None:
        self.nan_policy = nan_policy
        self.max_nan_fraction = float(max_nan_fraction) if nan_policy == "max_fraction" else 0.0
        self.nan_fill = float(nan_fill)
        self.rms_step = None if rms_step is None else int(rms_step)

    def rms_step_for(self, size: int, stride: int | None = None) -> int:
        """The rms sub-grid step for windows of ``size`` px placed ``stride`` px apart (if on a grid)."""
        if self.rms_step is not None:
            return self.rms_step
        step = max(1, size // RMS_SAMPLES_PER_SIDE)
        while stride is not None and stride % step:
            step -= 1
        return step

    def _nan_ok(self, nan_fraction: np.ndarray) -> np.ndarray:
        return (nan_fraction <= self.max_nan_fraction) & (nan_fraction < 1.0)

    @abstractmethod
    def windows(self, mosaic: Mosaic, threads: int = 1) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Index rows (columns of :data:`COLUMNS`) of one mosaic, and counts of left-out windows.

        ``threads`` share the work within the mosaic; results do not depend on it.
        """

    def attrs(self) -> dict[str, Any]:
        """Settings recorded in the index file."""
        return {
            "nan_policy": self.nan_policy,
            "max_nan_fraction": self.max_nan_fraction,
            "nan_fill": self.nan_fill,
            "rms_step": "auto" if self.rms_step is None else self.rms_step,
        }


def _finish(
    mosaic: Mosaic,
    size: np.ndarray,
    y0: np.ndarray,
    x0: np.ndarray,
    stats: dict[str, np.ndarray],
    catalog_row: np.ndarray,
) -> dict[str, np.ndarray]:
    centre = (size - 1) / 2.0
    ra, dec = mosaic.pixel_to_world(x0 + centre, y0 + centre)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = stats["peak"] / stats["rms"]
    row = {
        "y0": y0,
        "x0": x0,
        "size": size,
        "ra": ra,
        "dec": dec,
        "peak_snr": snr,
        "catalog_row": catalog_row,
        **stats,
    }
    return {name: np.asarray(row[name], dtype=dtype) for name, dtype in COLUMNS.items()}


class SlidingWindow(CutoutStrategy):
    """Square windows on a regular grid over the whole mosaic.

    Parameters
    ----------
    window_size
        Window side [px].
    overlap
        Fraction of a window shared with its neighbour (0.5: stride = half a window).
    **kwargs
        NaN policy and rms options (see :class:`CutoutStrategy`).
    """

    def __init__(self, window_size: WindowSize = 128, overlap: Fraction = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window_size = int(window_size)
        self.overlap = float(overlap)
        self.stride = max(1, round(self.window_size * (1.0 - self.overlap)))
        if self.rms_step is not None and self.stride % self.rms_step:
            raise RadioCurationError(
                f"cutouts.rms_step={self.rms_step} must divide the window stride {self.stride} px "
                f"(window_size × (1 − overlap)); e.g. cutouts.rms_step={math.gcd(self.stride, self.rms_step)}, "
                "or null to choose automatically."
            )

    def attrs(self) -> dict[str, Any]:
        """Settings recorded in the index file."""
        return {
            "strategy": "sliding_window",
            "window_size": self.window_size,
            "overlap": self.overlap,
            "stride": self.stride,
            **super().attrs(),
            "rms_step_px": self.rms_step_for(self.window_size, self.stride),
        }

    def windows(self, mosaic: Mosaic, threads: int = 1) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Grid windows of ``mosaic`` that pass the NaN policy, with their statistics."""
        step = self.rms_step_for(self.window_size, self.stride)
        grid = grid_window_stats(mosaic, self.window_size, self.stride, step, threads)
        keep = np.flatnonzero(self._nan_ok(grid.nan_fraction))
        stats = {
            "nan_fraction": grid.nan_fraction[keep],
            "peak": grid.peak[keep],
            "mask_fraction": grid.mask_fraction[keep],
            "edge_distance": grid.edge_distance[keep],
            "rms": grid.rms(keep),
        }
        size = np.full(len(keep), self.window_size)
        rows = _finish(mosaic, size, grid.y0[keep], grid.x0[keep], stats, np.full(len(keep), -1))
        return rows, {"candidates": len(grid.y0), "dropped_nan": len(grid.y0) - len(keep)}


_RA_NAMES = ("ra", "raj2000", "_raj2000", "ra_deg", "radeg", "ra_j2000", "alpha_j2000")
_DEC_NAMES = ("dec", "decj2000", "_dej2000", "dej2000", "dec_deg", "decdeg", "dec_j2000", "delta_j2000")
_SIZE_NAMES = ("size", "las", "maj", "major", "dc_maj", "size_arcsec")


def _column(
    table: Table, wanted: str | None, candidates: tuple[str, ...], what: str, path: Path
) -> str | None:
    if wanted:
        if wanted not in table.colnames:
            raise RadioCurationError(
                f"catalogue {path} has no column {wanted!r} (columns: {table.colnames})."
            )
        return wanted
    by_lower = {name.lower(): name for name in table.colnames}
    found = next((by_lower[c] for c in candidates if c in by_lower), None)
    if found is None and what != "size":
        raise RadioCurationError(
            f"catalogue {path} has no {what} column (looked for {', '.join(candidates)}; columns: "
            f"{table.colnames}); name it with cutouts.{what}_column=NAME."
        )
    return found


@functools.lru_cache(maxsize=4)
def load_catalog(
    path: str,
    ra_column: str | None = None,
    dec_column: str | None = None,
    size_column: str | None = None,
    size_unit: str = "arcsec",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read source positions (and sizes) from a FITS table or a CSV file.

    Columns are found by name (``RA``/``DEC``, ``ra``/``dec``, ``RAJ2000``…; sizes from ``size``, ``LAS``,
    ``Maj``…) unless given. Units come from the file when it has them, else degrees for positions and
    ``size_unit`` for sizes. Cached per process, so worker processes read a catalogue once.

    Returns
    -------
    tuple of numpy.ndarray
        ``ra`` [deg], ``dec`` [deg], ``size`` [arcsec] (NaN when the catalogue has no size column).
    """
    file = Path(path)
    if not file.is_file():
        raise RadioCurationError(f"cutouts.catalog={file}: file not found.")
    is_csv = file.suffix.lower() in (".csv", ".txt")
    try:
        table = Table.read(file, format="ascii.csv" if is_csv else None)
    except Exception as err:
        raise RadioCurationError(
            f"cutouts.catalog={file}: cannot read it as a FITS table or CSV file ({err})."
        ) from err

    def values(name: str, default_unit: str, target: str) -> np.ndarray:
        column = table[name]
        unit = column.unit if column.unit is not None else u.Unit(default_unit)
        return np.asarray(u.Quantity(np.asarray(column, dtype=float), unit).to_value(target), dtype=float)

    ra = values(_column(table, ra_column, _RA_NAMES, "ra", file), "deg", "deg")
    dec = values(_column(table, dec_column, _DEC_NAMES, "dec", file), "deg", "deg")
    size_name = _column(table, size_column, _SIZE_NAMES, "size", file)
    size = values(size_name, size_unit, "arcsec") if size_name else np.full(len(ra), np.nan)
    return ra, dec, size


class CatalogWindows(CutoutStrategy):
    """Windows centred on the sources of a catalogue (e.g. the DR2 source catalogue or synthetic truth).

    Parameters
    ----------
    catalog
        FITS table or CSV file with RA/Dec columns [deg].
    window_size
        Fixed window side [px], used when ``size_factor`` is null.
    size_factor
        Window side = ``size_factor`` × source size, rounded up to the next of ``size_choices`` (so consumers
        batch a few sizes); sources without size get the smallest choice, larger ones the largest.
    size_choices
        Allowed window sides [px] with ``size_factor``.
    ra_column, dec_column, size_column
        Column names (found automatically when null).
    size_unit
        Unit of the size column when the file does not say.
    **kwargs
        NaN policy and rms options (see :class:`CutoutStrategy`).
    """

    def __init__(
        self,
        catalog: str | None,
        window_size: WindowSize = 128,
        size_factor: Annotated[float, Gt(0)] | None = None,
        size_choices: Sequence[WindowSize] = (64, 128, 256),
        ra_column: str | None = None,
        dec_column: str | None = None,
        size_column: str | None = None,
        size_unit: str = "arcsec",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not catalog:
            raise RadioCurationError(
                "cutouts.catalog is not set; give a FITS or CSV catalogue: cutouts.catalog=FILE."
            )
        self.catalog = str(catalog)
        self.window_size = int(window_size)
        self.size_factor = None if size_factor is None else float(size_factor)
        self.size_choices = tuple(sorted(int(s) for s in size_choices))
        if not self.size_choices:
            raise RadioCurationError("cutouts.size_choices is empty; give window sides, e.g. [64, 128, 256].")
        self.columns = (ra_column, dec_column, size_column, size_unit)

    def attrs(self) -> dict[str, Any]:
        """Settings recorded in the index file."""
        return {
            "strategy": "catalog",
            "catalog": self.catalog,
            "window_size": self.window_size,
            "size_factor": self.size_factor if self.size_factor is not None else "none",
            "size_choices": list(self.size_choices),
            **super().attrs(),
        }

    def sources(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The catalogue's ``ra, dec`` [deg] and ``size`` [arcsec] (read once per process)."""
        return load_catalog(self.catalog, *self.columns)

    def _sizes(self, size_arcsec: np.ndarray, pixel_scale: float) -> np.ndarray:
        if self.size_factor is None:
            return np.full(len(size_arcsec), self.window_size, dtype=np.int64)
        wanted = np.nan_to_num(self.size_factor * size_arcsec / pixel_scale, nan=0.0)
        choices = np.asarray(self.size_choices)
        return choices[np.minimum(np.searchsorted(choices, wanted), len(choices) - 1)]

    def windows(self, mosaic: Mosaic, threads: int = 1) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Windows centred on the catalogue sources that fall inside ``mosaic``."""
        ra, dec, size_arcsec = self.sources()
        ny, nx = mosaic.shape
        centre_ra, centre_dec = mosaic.pixel_to_world(np.array([(nx - 1) / 2.0]), np.array([(ny - 1) / 2.0]))
        radius = math.hypot(nx, ny) / 2.0 * mosaic.pixel_scale_arcsec / 3600.0
        near = np.flatnonzero(_separation(ra, dec, centre_ra[0], centre_dec[0]) < radius + 0.1)
        x, y = mosaic.world_to_pixel(ra[near], dec[near])
        size = self._sizes(size_arcsec[near], mosaic.pixel_scale_arcsec)
        with np.errstate(invalid="ignore"):
            y0 = np.rint(y - (size - 1) / 2.0)
            x0 = np.rint(x - (size - 1) / 2.0)
            inside = (y0 >= 0) & (x0 >= 0) & (y0 + size <= ny) & (x0 + size <= nx)
        rows_near = near[inside]
        y0, x0, size = y0[inside].astype(np.int64), x0[inside].astype(np.int64), size[inside]
        finite_grid = coverage_grid(mosaic)
        parts = []
        dropped = 0
        for s in np.unique(size):
            sel = np.flatnonzero(size == s)
            stats = gathered_window_stats(
                mosaic, y0[sel], x0[sel], int(s), self.rms_step_for(int(s)), finite_grid, threads
            )
            keep = self._nan_ok(stats["nan_fraction"])
            dropped += int((~keep).sum())
            parts.append(
                _finish(
                    mosaic,
                    np.full(int(keep.sum()), s),
                    y0[sel][keep],
                    x0[sel][keep],
                    {k: v[keep] for k, v in stats.items()},
                    rows_near[sel][keep],
                )
            )
        if parts:
            rows = {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS}
        else:
            rows = {name: np.zeros(0, dtype=dtype) for name, dtype in COLUMNS.items()}
        counts = {"candidates": len(rows_near), "dropped_nan": dropped}
        return rows, counts


def _separation(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """Great-circle distance [deg] (haversine, vectorised)."""
    ra, dec, ra0, dec0 = np.radians(ra), np.radians(dec), math.radians(ra0), math.radians(dec0)
    h = np.sin((dec - dec0) / 2) ** 2 + np.cos(dec) * math.cos(dec0) * np.sin((ra - ra0) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))
