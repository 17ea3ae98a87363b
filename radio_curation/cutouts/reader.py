"""The batched window reader every pixel-consuming stage uses.

``WindowReader(merged_h5)`` maps cutout IDs to pixels: it groups a batch by mosaic, sorts each group by
position and gathers all its windows from the memory-mapped mosaic in one indexing operation. Mosaics are
opened lazily in the process that reads (so a reader pickled into DataLoader workers opens its own maps)
and at most ``max_open`` stay open at once.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from radio_curation.cutouts.index import read_index
from radio_curation.errors import RadioCurationError
from radio_curation.sky.fitsio import ImageData, open_image

__all__ = ["WindowReader"]

_GATHER_COLUMNS = ["cutout_id", "mosaic", "y0", "x0", "size"]


class WindowReader:
    """Read windows of a merged index as float32 batches ``[B, 1, S, S]``.

    Parameters
    ----------
    path
        ``merged.h5`` of a merge run (or a ``cutouts.h5`` with a ``cutout_id`` column).
    nan_fill
        Value for NaN (blanked) pixels; ``None`` uses the ``nan_fill`` recorded by the cutouts stage.
    max_open
        Most mosaics kept open per process (least recently used ones are closed).

    Notes
    -----
    Picklable: only the path and options travel; each process loads the index and opens mosaics on first
    use. Resizing and normalisation are not done here.
    """

    def __init__(self, path: str | Path, nan_fill: float | None = None, max_open: int = 32) -> None:
        self.path = Path(path)
        self._nan_fill = nan_fill
        self.max_open = int(max_open)
        self._reset()
        self._load()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._open: OrderedDict[int, tuple[fits.HDUList, ImageData]] = OrderedDict()
        self._columns: dict[str, np.ndarray] | None = None

    def _load(self) -> None:
        if not self.path.is_file():
            raise RadioCurationError(f"{self.path}: window index not found.")
        try:
            index = read_index(self.path, _GATHER_COLUMNS)
        except RadioCurationError as err:
            raise RadioCurationError(
                f"{err} The window reader needs the merged.h5 of a merge run "
                "(extract.py stage=merge 'cutouts_ids=[...]')."
            ) from err
        ids = index.columns["cutout_id"]
        if np.any(np.diff(ids) <= 0):
            raise RadioCurationError(
                f"{self.path}: cutout_id is not strictly increasing; re-run the merge stage."
            )
        self._columns = index.columns
        self._paths = list(index.mosaics["path"])
        self._names = np.asarray(index.mosaics["name"], dtype=str)
        self.fill = float(self._nan_fill if self._nan_fill is not None else index.attrs.get("nan_fill", 0.0))

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "nan_fill": self._nan_fill, "max_open": self.max_open}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._nan_fill = state["nan_fill"]
        self.max_open = state["max_open"]
        self._reset()

    def _ensure(self) -> dict[str, np.ndarray]:
        if self._pid != os.getpid():
            # A forked copy keeps the index but must not share the parent's open files.
            self._pid = os.getpid()
            self._open = OrderedDict()
        if self._columns is None:
            self._load()
        return self._columns

    def __len__(self) -> int:
        return len(self._ensure()["cutout_id"])

    @property
    def cutout_ids(self) -> np.ndarray:
        """All cutout IDs (int64, ascending)."""
        return self._ensure()["cutout_id"]

    @property
    def nan_fill(self) -> float:
        """Value NaN pixels are replaced with."""
        self._ensure()
        return self.fill

    @property
    def mosaic_paths(self) -> list[str]:
        """Mosaic files, indexed by the ``mosaic`` code of :meth:`positions`."""
        self._ensure()
        return list(self._paths)

    def positions(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """``mosaic`` (code into :attr:`mosaic_paths`), ``y0``, ``x0`` and ``size`` of the windows ``ids``."""
        col = self._ensure()
        rows = self.rows(ids)
        return {key: col[key][rows] for key in ("mosaic", "y0", "x0", "size")}

    def table(self) -> dict[str, np.ndarray]:
        """Every column of the index, with ``mosaic`` as the mosaic name (str).

        Returns
        -------
        dict
            ``cutout_id, mosaic, y0, x0, size, ra, dec, nan_fraction, rms, peak_snr, mask_fraction`` and any
            further columns the index holds.
        """
        index = read_index(self.path)
        columns = dict(index.columns)
        columns["mosaic"] = np.asarray(index.mosaics["name"], dtype=str)[columns["mosaic"]]
        return columns

    def _image(self, mosaic: int) -> ImageData:
        if mosaic in self._open:
            self._open.move_to_end(mosaic)
            return self._open[mosaic][1]
        hdul, image, _ = open_image(self._paths[mosaic])
        self._open[mosaic] = (hdul, image)
        while len(self._open) > self.max_open:
            _, (old, _) = self._open.popitem(last=False)
            old.close()
        return image

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row numbers of ``ids`` in the index.

        Raises
        ------
        RadioCurationError
            If an ID is not in the index.
        """
        all_ids = self._ensure()["cutout_id"]
        ids = np.asarray(ids, dtype=np.int64).ravel()
        rows = np.searchsorted(all_ids, ids)
        found = rows < len(all_ids)
        found[found] = all_ids[rows[found]] == ids[found]
        if not found.all():
            missing = ids[~found][:5].tolist()
            raise RadioCurationError(
                f"cutout IDs {missing} are not in {self.path} ({int((~found).sum())} missing); the IDs must "
                "come from this merge run."
            )
        return rows

    def read(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Pixels of the windows ``ids`` (all of one size), in the order given.

        Parameters
        ----------
        ids
            Cutout IDs.

        Returns
        -------
        numpy.ndarray
            float32 ``[B, 1, S, S]``: exactly the mosaic pixels, NaN replaced by :attr:`nan_fill`.

        Raises
        ------
        RadioCurationError
            If an ID is unknown or the windows have different sizes (batch per ``table()["size"]``).
        """
        col = self._ensure()
        rows = self.rows(ids)
        sizes = np.unique(col["size"][rows])
        if len(sizes) > 1:
            raise RadioCurationError(
                f"the requested windows have sizes {sizes.tolist()}; read one size per batch "
                "(group IDs by table()['size'])."
            )
        size = int(sizes[0]) if len(sizes) else int(np.min(col["size"], initial=0))
        out = np.empty((len(rows), 1, size, size), dtype=np.float32)
        mosaic, y0, x0 = col["mosaic"][rows], col["y0"][rows], col["x0"][rows]
        order = np.lexsort((x0, y0, mosaic))
        starts = np.flatnonzero(np.r_[True, np.diff(mosaic[order]) != 0])
        for start, stop in zip(starts, np.r_[starts[1:], len(order)], strict=True):
            group = order[start:stop]
            image = self._image(int(mosaic[group[0]]))
            out[group, 0] = image.gather(y0[group], x0[group], size, np.float32)
        np.copyto(out, np.float32(self.fill), where=np.isnan(out))
        return out

    def close(self) -> None:
        """Close the open mosaics of this process."""
        for hdul, _ in self._open.values():
            hdul.close()
        self._open.clear()

    def __enter__(self) -> WindowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Readers handed to DataLoader workers are never closed explicitly; release their files here.
        if getattr(self, "_pid", None) == os.getpid():
            self.close()
