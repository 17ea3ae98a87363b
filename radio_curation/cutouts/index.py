"""Cutout index files: ``cutouts.h5`` (one cutouts run) and ``merged.h5`` (the merge stage).

Both hold one row per window and no pixels::

    /mosaics/name, path, mask_path, pixel_scale         one entry per mosaic (strings; arcsec)
    /windows/<column>                                    one entry per window; ``mosaic`` indexes /mosaics
    attrs                                                settings (JSON-encoded where not scalar)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from radio_curation.errors import RadioCurationError

__all__ = ["WindowIndex", "read_index", "write_index"]

MOSAIC_TEXT = ("name", "path", "mask_path")


@dataclass
class WindowIndex:
    """A window table in memory.

    Attributes
    ----------
    mosaics
        ``name``, ``path``, ``mask_path`` (``""`` when none): lists of str; ``pixel_scale`` [arcsec]: list of
        float; one entry per mosaic.
    columns
        Column name → 1-D array, one entry per window (``mosaic`` indexes ``mosaics``).
    attrs
        Settings (JSON-serialisable).
    """

    mosaics: dict[str, list]
    columns: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def mosaic_names(self) -> np.ndarray:
        """Mosaic name of each row (str array)."""
        names = np.asarray(self.mosaics["name"], dtype=str)
        return names[self.columns["mosaic"]] if len(names) else np.zeros(len(self), dtype=str)


def write_index(path: str | Path, index: WindowIndex) -> None:
    """Write ``index`` to an HDF5 file at ``path``.

    Parameters
    ----------
    path
        Output file (overwritten).
    index
        The table.
    """
    text = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        group = f.create_group("mosaics")
        for key in MOSAIC_TEXT:
            group.create_dataset(key, data=np.asarray(index.mosaics[key], dtype=object), dtype=text)
        group.create_dataset("pixel_scale", data=np.asarray(index.mosaics["pixel_scale"], dtype=np.float64))
        windows = f.create_group("windows")
        for key, values in index.columns.items():
            windows.create_dataset(key, data=values, chunks=True if len(values) else None)
        for key, value in index.attrs.items():
            f.attrs[key] = value if isinstance(value, str | int | float | bool) else json.dumps(value)


def read_index(path: str | Path, columns: list[str] | None = None) -> WindowIndex:
    """Read an index written by :func:`write_index`.

    Parameters
    ----------
    path
        ``cutouts.h5`` or ``merged.h5``.
    columns
        Only these window columns (all by default).

    Returns
    -------
    WindowIndex
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            mosaics: dict[str, list] = {key: list(f["mosaics"][key].asstr()[()]) for key in MOSAIC_TEXT}
            mosaics["pixel_scale"] = [float(v) for v in f["mosaics"]["pixel_scale"][()]]
            names = columns if columns is not None else list(f["windows"].keys())
            missing = [c for c in names if c not in f["windows"]]
            if missing:
                raise RadioCurationError(
                    f"{path} has no window column(s) {missing}; it is not a cutout index."
                )
            data = {key: f["windows"][key][()] for key in names}
            attrs = {key: _attr(value) for key, value in f.attrs.items()}
    except (OSError, KeyError) as err:
        raise RadioCurationError(f"{path} is not a readable cutout index ({err}).") from err
    return WindowIndex(mosaics, data, attrs)


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    if isinstance(value, np.generic):
        return value.item()
    return value
