"""Which catalogue labels the windows of a features run: the ``catalogue`` config group."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radio_curation.cutouts.index import read_index
from radio_curation.data.catalogue import WindowCatalogue
from radio_curation.errors import RadioCurationError
from radio_curation.sky.synthetic import ensure_truth_peaks

#: ``path`` value that takes the synthetic sky's own truth catalogue.
AUTO = "auto"


def synthetic_truth(merged: Path) -> Path | None:
    """The synthetic sky's ``truth.fits`` when every mosaic of ``merged`` comes from one synthetic sky."""
    roots = {Path(p).parent.parent.parent for p in read_index(merged, ["cutout_id"]).mosaics["path"]}
    truths = {r / "truth.fits" for r in roots if (r / "truth.fits").is_file() and (r / "sky.json").is_file()}
    return truths.pop() if len(truths) == 1 and len(roots) == 1 else None


class WindowLabels:
    """A source catalogue crossmatched to window centres, as the evaluations that label windows use it.

    Parameters
    ----------
    path : str, optional
        The catalogue file (FITS, CSV, VOTable: anything astropy reads); ``auto``: the truth catalogue of
        the synthetic sky the windows come from, and no labels for windows of any other sky; None: no labels.
    ra_column, dec_column, label_column, flux_column, radius_arcsec, empty_label, min_flux, peak_column, min_peak
        As :class:`~radio_curation.data.catalogue.WindowCatalogue`; ``radius_arcsec=None`` matches each
        window within half its side.
    """

    def __init__(
        self,
        path: str | None,
        ra_column: str,
        dec_column: str,
        label_column: str,
        flux_column: str | None,
        radius_arcsec: float | None,
        empty_label: str,
        min_flux: float | None,
        peak_column: str | None,
        min_peak: float | None,
    ) -> None:
        self.path = path
        self.empty_label = empty_label
        self._options = {
            "ra_column": ra_column,
            "dec_column": dec_column,
            "label_column": label_column,
            "flux_column": flux_column,
            "radius_arcsec": radius_arcsec,
            "empty_label": empty_label,
            "min_flux": min_flux,
            "peak_column": peak_column,
            "min_peak": min_peak,
        }

    def labels(self, merged: Path, table: dict[str, np.ndarray]) -> tuple[np.ndarray, str, np.ndarray]:
        """Class of each window of ``table`` (columns of ``merged.h5``, see ``window_table``).

        Returns
        -------
        labels : np.ndarray
            ``[N]`` str.
        source : str
            The catalogue file used.
        groups : np.ndarray
            ``[N]`` int64: the catalogue row of the matched source (windows of one source share it), a
            distinct negative number for each window without one.

        Raises
        ------
        RadioCurationError
            No catalogue is configured, ``auto`` finds none for these windows, or the file is unusable.
        """
        catalogue = self.catalogue(merged)
        radius = 0.5 * table["size"] * table["pixel_scale"]
        labels, groups = catalogue.match(table["ra"], table["dec"], radius)
        unmatched = groups < 0
        groups[unmatched] = -1 - np.arange(int(unmatched.sum()))
        return labels, str(catalogue.path), groups

    def sources(self, merged: Path, table: dict[str, np.ndarray]) -> np.ndarray:
        """Sorted catalogue rows of every source within half a window side of a window centre of
        ``table`` (the windows' sources, labelling or not; rows as :meth:`labels`' groups number them)."""
        radius = 0.5 * table["size"] * table["pixel_scale"]
        return self.catalogue(merged).within(table["ra"], table["dec"], radius)

    def catalogue(self, merged: Path) -> WindowCatalogue:
        """The catalogue that labels the windows of ``merged`` (see :meth:`labels` for the errors)."""
        path = self.path
        if path is None:
            raise RadioCurationError(
                "no catalogue labels the windows: set catalogue=auto or catalogue.path=FILE"
            )
        if path == AUTO:
            path = synthetic_truth(merged)
            if path is None:
                raise RadioCurationError(
                    f"catalogue.path=auto finds a truth catalogue only for windows of one synthetic sky, "
                    f"and {merged} is not one; set catalogue.path to a source catalogue (FITS/CSV/VOTable)"
                )
            if self._options["peak_column"]:
                path = ensure_truth_peaks(path.parent)  # a sky cached before truth catalogues had peaks
        return WindowCatalogue(path, **self._options)

    def labels_if_any(
        self, merged: Path, table: dict[str, np.ndarray], info: dict[str, object]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`labels` and groups, or None (noted in ``info["labels"]``) when no catalogue applies.

        A catalogue that is configured by path and cannot be used is an error; ``auto`` on windows that
        are not a synthetic sky's, and ``path=None``, mean no labels.
        """
        if self.path is None:
            return None
        try:
            labels, source, groups = self.labels(merged, table)
        except RadioCurationError as err:
            if self.path != AUTO:
                raise
            info["labels"] = f"none ({err})"
            return None
        info["labels"] = source
        return labels, groups
