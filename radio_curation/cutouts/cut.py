"""Cutting mosaics into index rows, one part file per mosaic (so an interrupted run resumes).

Kept free of Hydra and the run store so worker processes import little.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from radio_curation.atomic import atomic_path
from radio_curation.cutouts.index import WindowIndex, read_index, write_index
from radio_curation.cutouts.strategies import COLUMNS, CutoutStrategy
from radio_curation.sky.fitsio import MosaicFiles, open_mosaic

__all__ = ["combine_parts", "cut_mosaic", "part_path"]


def part_path(parts_dir: Path, files: MosaicFiles) -> Path:
    """Where the rows of one mosaic are kept until the run combines them (named by the image path)."""
    digest = hashlib.sha256(str(Path(files.image).resolve()).encode()).hexdigest()[:16]
    return parts_dir / f"{digest}.h5"


def cut_mosaic(files: MosaicFiles, strategy: CutoutStrategy, out: Path, threads: int = 1) -> dict[str, int]:
    """Cut one mosaic with ``strategy`` and write its rows to ``out`` (atomically).

    Parameters
    ----------
    files
        The mosaic's image and mask.
    strategy
        The cutout strategy.
    out
        Part file to write.
    threads
        Threads working on this mosaic (results do not depend on it).

    Returns
    -------
    dict
        The strategy's counts plus ``windows``.

    Raises
    ------
    radio_curation.sky.fitsio.MosaicReadError
        If the mosaic cannot be read.
    """
    with open_mosaic(files) as mosaic:
        rows, counts = strategy.windows(mosaic, threads)
        scale = mosaic.pixel_scale_arcsec
    counts = {**counts, "windows": len(rows["y0"])}
    rows["mosaic"] = np.zeros(len(rows["y0"]), dtype=np.int32)
    index = WindowIndex(
        {
            "name": [files.name],
            "path": [str(Path(files.image).resolve())],
            "mask_path": [str(Path(files.mask).resolve()) if files.mask else ""],
            "pixel_scale": [scale],
        },
        rows,
        {**strategy.attrs(), "counts": counts},
    )
    with atomic_path(out) as tmp:
        write_index(tmp, index)
    return counts


def combine_parts(parts: list[Path], attrs: dict[str, Any]) -> tuple[WindowIndex, dict[str, int]]:
    """Concatenate per-mosaic part files (in the order given) into one index.

    Returns
    -------
    tuple
        The index (with ``attrs``) and the per-mosaic counts summed.
    """
    counts: dict[str, int] = {}
    mosaics: dict[str, list] = {"name": [], "path": [], "mask_path": [], "pixel_scale": []}
    columns: dict[str, list[np.ndarray]] = {name: [] for name in [*COLUMNS, "mosaic"]}
    for number, path in enumerate(parts):
        part = read_index(path)
        for key, value in part.attrs.get("counts", {}).items():
            counts[key] = counts.get(key, 0) + int(value)
        for key in mosaics:
            mosaics[key].extend(part.mosaics[key])
        for key in columns:
            values = part.columns[key]
            columns[key].append(np.full(len(values), number, dtype=np.int32) if key == "mosaic" else values)
    table = {
        key: np.concatenate(values) if values else np.zeros(0, dtype=COLUMNS.get(key, np.int32))
        for key, values in columns.items()
    }
    return WindowIndex(mosaics, table, attrs), counts
