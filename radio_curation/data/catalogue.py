"""Labels for windows from a source catalogue crossmatched to the window centres.

Any table astropy reads (FITS, VOTable, CSV, ECSV) with sky positions and a class column works: the
synthetic sky's truth catalogue, the LoTSS DR2 source catalogue (e.g. its ``S_Code``), or a morphology
catalogue. A window takes the class of the brightest catalogue source within ``radius_arcsec`` of its
centre (the nearest one when there is no flux column), or ``empty_label`` when none is that close. The
radius may differ per window (e.g. half the window side, so a source inside the window labels it).
"""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, search_around_sky
from astropy.table import Table

from radio_curation.errors import RadioCurationError


class WindowCatalogue:
    """A catalogue that labels windows by position.

    Parameters
    ----------
    path : str or Path
        The catalogue file.
    ra_column, dec_column : str
        Position columns (degrees).
    label_column : str
        The class column.
    flux_column : str, optional
        When set, the brightest source within the radius labels the window; else the nearest.
    radius_arcsec : float, optional
        Largest distance from a window centre to a source that labels it; None: give it per window to
        :meth:`labels`.
    empty_label : str
        Label of windows with no source within the radius.
    min_flux : float, optional
        Sources fainter than this (in the flux column's unit) label nothing, so a window holding only
        sources below the detection limit counts as ``empty_label``; None: every source labels.
    peak_column : str, optional
        The sources' peak brightness (e.g. Jy/beam), for ``min_peak``.
    min_peak : float, optional
        Sources whose peak is below this (in the peak column's unit) label nothing: a resolved source of
        ample total flux can still be too faint per beam to be seen. None: no cut on the peak.
    """

    def __init__(
        self,
        path: str | Path,
        ra_column: str = "ra",
        dec_column: str = "dec",
        label_column: str = "class",
        flux_column: str | None = "flux",
        radius_arcsec: float | None = None,
        empty_label: str = "empty",
        min_flux: float | None = None,
        peak_column: str | None = None,
        min_peak: float | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise RadioCurationError(f"catalogue {self.path} not found; set catalogue.path to the file")
        table = Table.read(self.path)
        wanted = [c for c in (ra_column, dec_column, label_column, flux_column, peak_column) if c]
        missing = [c for c in wanted if c not in table.colnames]
        if missing:
            raise RadioCurationError(
                f"catalogue {self.path} lacks column(s) {missing}; it has {table.colnames[:30]}. "
                "Set catalogue.*_column to the right names."
            )
        if min_flux is not None:
            if not flux_column:
                raise RadioCurationError(
                    f"catalogue min_flux={min_flux} needs a flux column: set catalogue.flux_column."
                )
            table = table[np.asarray(table[flux_column], dtype=np.float64) >= float(min_flux)]
        if min_peak is not None:
            if not peak_column:
                raise RadioCurationError(
                    f"catalogue min_peak={min_peak} needs a peak brightness column: set catalogue.peak_column."
                )
            table = table[np.asarray(table[peak_column], dtype=np.float64) >= float(min_peak)]
        self.ra = np.asarray(table[ra_column], dtype=np.float64)
        self.dec = np.asarray(table[dec_column], dtype=np.float64)
        self.label = np.char.strip(np.asarray(table[label_column]).astype(str))
        self.flux = None if not flux_column else np.asarray(table[flux_column], dtype=np.float64)
        self.radius_arcsec = None if radius_arcsec is None else float(radius_arcsec)
        self.empty_label = str(empty_label)

    def labels(self, ra: np.ndarray, dec: np.ndarray, radius_arcsec: np.ndarray | None = None) -> np.ndarray:
        """The class of each window centred at ``(ra, dec)`` (degrees); see :meth:`match`."""
        return self.match(ra, dec, radius_arcsec)[0]

    def within(self, ra: np.ndarray, dec: np.ndarray, radius_arcsec: np.ndarray) -> np.ndarray:
        """Sorted catalogue rows of every source within ``radius_arcsec[i]`` of some window centre
        ``(ra[i], dec[i])``: all the sources the windows show, not only those that label them."""
        radius = np.broadcast_to(np.asarray(radius_arcsec, dtype=np.float64), np.shape(ra))
        if len(ra) == 0 or len(self.ra) == 0:
            return np.zeros(0, dtype=np.int64)
        windows = SkyCoord(
            np.asarray(ra, dtype=np.float64) * u.deg, np.asarray(dec, dtype=np.float64) * u.deg
        )
        sources = SkyCoord(self.ra * u.deg, self.dec * u.deg)
        win, src, sep, _ = search_around_sky(windows, sources, float(radius.max()) * u.arcsec)
        return np.unique(src[sep.to_value(u.arcsec) <= radius[win]]).astype(np.int64)

    def match(
        self, ra: np.ndarray, dec: np.ndarray, radius_arcsec: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The class of each window centred at ``(ra, dec)`` and the catalogue row that gave it.

        Parameters
        ----------
        ra, dec : np.ndarray
            ``[N]`` window centres.
        radius_arcsec : np.ndarray, optional
            ``[N]`` match radius of each window; required when the catalogue has no fixed radius.

        Returns
        -------
        labels : np.ndarray
            ``[N]`` str labels.
        source : np.ndarray
            ``[N]`` int64 catalogue row of the matched source, -1 for windows with none. Overlapping
            windows of one source share it (probes group their folds by it).
        """
        ra = np.asarray(ra, dtype=np.float64)
        if self.radius_arcsec is not None:
            radius = np.full(len(ra), self.radius_arcsec)
        elif radius_arcsec is not None:
            radius = np.broadcast_to(np.asarray(radius_arcsec, dtype=np.float64), ra.shape)
        else:
            raise RadioCurationError("a match radius is needed: set catalogue.radius_arcsec")
        out = np.full(len(ra), self.empty_label, dtype=object)
        source = np.full(len(ra), -1, dtype=np.int64)
        if len(ra) == 0 or len(self.ra) == 0:
            return out.astype(str), source
        windows = SkyCoord(ra * u.deg, np.asarray(dec, dtype=np.float64) * u.deg)
        sources = SkyCoord(self.ra * u.deg, self.dec * u.deg)
        win, src, sep, _ = search_around_sky(windows, sources, float(radius.max()) * u.arcsec)
        close = sep.to_value(u.arcsec) <= radius[win]
        win, src, sep = win[close], src[close], sep[close]
        if len(win):
            # Best match first: brightest (or nearest) source per window.
            rank = -self.flux[src] if self.flux is not None else sep.to_value(u.arcsec)
            order = np.lexsort((rank, win))
            first = np.ones(len(order), bool)
            first[1:] = win[order][1:] != win[order][:-1]
            chosen = order[first]
            out[win[chosen]] = self.label[src[chosen]]
            source[win[chosen]] = src[chosen]
        return out.astype(str), source
