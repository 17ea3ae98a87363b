"""Build cutout and merged indexes in a temporary directory without the run store."""

from __future__ import annotations

from pathlib import Path

from radio_curation.cutouts.cut import combine_parts, cut_mosaic, part_path
from radio_curation.cutouts.index import WindowIndex, write_index
from radio_curation.cutouts.merge import Merger
from radio_curation.cutouts.strategies import CutoutStrategy
from radio_curation.sky.fitsio import MosaicFiles


def cutout_index(directory: Path, mosaics: list[MosaicFiles], strategy: CutoutStrategy) -> WindowIndex:
    """What the cutouts stage writes to ``cutouts.h5`` for ``mosaics``."""
    directory.mkdir(parents=True, exist_ok=True)
    for files in mosaics:
        cut_mosaic(files, strategy, part_path(directory, files))
    index, _ = combine_parts([part_path(directory, m) for m in mosaics], strategy.attrs())
    return index


def merged_file(
    directory: Path, runs: list[tuple[list[MosaicFiles], CutoutStrategy]], merger: Merger | None = None
) -> Path:
    """What the merge stage writes to ``merged.h5`` for cutouts runs ``runs``."""
    indexes = [
        cutout_index(directory / f"run{i}", mosaics, strategy) for i, (mosaics, strategy) in enumerate(runs)
    ]
    merged, _ = (merger or Merger()).merge(indexes)
    path = directory / "merged.h5"
    write_index(path, merged)
    return path
