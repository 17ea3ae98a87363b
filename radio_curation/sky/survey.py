"""Survey layouts: where a survey's mosaics (and their island masks) are on disk.

Built from the ``survey`` config group with ``hydra.utils.instantiate``. Every survey lists its mosaics in
name order and can be split into shards (``shard`` of ``n_shards``) so a SLURM array spreads the mosaics over tasks.
"""

from __future__ import annotations

import glob
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from radio_curation.errors import RadioCurationError
from radio_curation.runs.settings import NonNegativeInt, PositiveInt
from radio_curation.sky.fitsio import MosaicFiles
from radio_curation.sky.synthetic import SkyParams, ensure_sky

__all__ = ["FitsGlobSurvey", "LotssDR2Survey", "Survey", "SyntheticSurvey", "parse_shard"]


def parse_shard(shard: int | None, n_shards: int | None) -> tuple[int, int] | None:
    """Check ``shard`` of ``n_shards`` (0 ≤ shard < n_shards) and return ``(shard, n_shards)``.

    Both ``None`` means all mosaics. A SLURM array sweeps the shard:
    ``survey.shard=range(0,64) survey.n_shards=64``.

    Raises
    ------
    RadioCurationError
        If only one of them is set, or the shard is not an integer in ``[0, n_shards)``.
    """
    if shard is None and n_shards is None:
        return None
    example = (
        "e.g. survey.shard=3 survey.n_shards=64, or survey.shard=range(0,64) survey.n_shards=64 to sweep all"
    )
    if isinstance(shard, str) and "/" in shard:
        index, _, count = shard.partition("/")
        raise RadioCurationError(
            f"survey.shard={shard!r}: give the shard and the number of shards apart, "
            f"survey.shard={index} survey.n_shards={count} ({example})."
        )
    if shard is None or n_shards is None:
        missing = "survey.shard" if shard is None else "survey.n_shards"
        raise RadioCurationError(
            f"survey.shard={shard} survey.n_shards={n_shards}: set {missing} too ({example}), "
            "or neither for all mosaics."
        )
    try:
        index, count = int(shard), int(n_shards)
    except (TypeError, ValueError):
        index, count = -1, 0
    if isinstance(shard, bool) or not 0 <= index < count:
        raise RadioCurationError(
            f"survey.shard={shard!r} survey.n_shards={n_shards!r}: the shard is an integer from 0 to "
            f"n_shards - 1 ({example})."
        )
    return index, count


class Survey(ABC):
    """A set of mosaics.

    Parameters
    ----------
    on_error
        ``fail``: an unreadable mosaic stops the run; ``skip``: it is left out and listed in the manifest.
    shard, n_shards
        Only every ``n_shards``-th mosaic starting at ``shard`` (in name order); both ``None``: all.
    num_workers
        Processes used to cut mosaics in parallel (execution only; does not change results).
    """

    def __init__(
        self,
        on_error: Literal["fail", "skip"] = "fail",
        shard: NonNegativeInt | None = None,
        n_shards: PositiveInt | None = None,
        num_workers: PositiveInt = 1,
    ) -> None:
        self.on_error = on_error
        self.shard = parse_shard(shard, n_shards)
        self.num_workers = int(num_workers)

    @abstractmethod
    def discover(self) -> list[MosaicFiles]:
        """All mosaics of the survey (any order)."""

    def mosaics(self) -> list[MosaicFiles]:
        """The mosaics of this shard, in name order.

        Raises
        ------
        RadioCurationError
            If two mosaics share a name (names identify mosaics in every index).
        """
        found = sorted(self.discover(), key=lambda m: m.name)
        names = [m.name for m in found]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RadioCurationError(
                f"several mosaics are named {', '.join(duplicates)}; mosaic names must be unique in a survey."
            )
        if self.shard is not None:
            index, count = self.shard
            found = found[index::count]
        return found


class LotssDR2Survey(Survey):
    """The public LoTSS DR2 layout: ``root/mosaics/<name>/mosaic-blanked.fits`` (or ``root/<name>/...``).

    Parameters
    ----------
    root
        Survey directory.
    image_name, mask_name
        File names inside each mosaic directory; the mask is optional per mosaic.
    **kwargs
        ``on_error``, ``shard``, ``n_shards``, ``num_workers`` (see :class:`Survey`).
    """

    def __init__(
        self,
        root: str | None,
        image_name: str = "mosaic-blanked.fits",
        mask_name: str | None = "mosaic.pybdsmmask.fits",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if root is None:
            raise RadioCurationError(
                "survey.root is not set; point it at the DR2 directory (survey.root=DIR)."
            )
        self.root = Path(root)
        self.image_name = image_name
        self.mask_name = mask_name

    def discover(self) -> list[MosaicFiles]:
        """Mosaic directories holding ``image_name``."""
        if not self.root.is_dir():
            raise RadioCurationError(f"survey.root={self.root} is not a directory.")
        base = self.root / "mosaics" if (self.root / "mosaics").is_dir() else self.root
        found = []
        for directory in sorted(p for p in base.iterdir() if p.is_dir()):
            image = directory / self.image_name
            if not image.is_file():
                continue
            mask = directory / self.mask_name if self.mask_name else None
            found.append(
                MosaicFiles(directory.name, image, mask if mask is not None and mask.is_file() else None)
            )
        if not found:
            raise RadioCurationError(
                f"no mosaics in {self.root}: expected {base}/<name>/{self.image_name} "
                "(the public DR2 layout mosaics/<name>/mosaic-blanked.fits)."
            )
        return found


class FitsGlobSurvey(Survey):
    """Any FITS images matched by a glob pattern; each file is one mosaic named after its stem.

    Parameters
    ----------
    pattern
        Glob pattern, e.g. ``/data/images/*.fits`` (``**`` recurses).
    **kwargs
        ``on_error``, ``shard``, ``n_shards``, ``num_workers`` (see :class:`Survey`).
    """

    def __init__(self, pattern: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not pattern:
            raise RadioCurationError("survey.pattern is not set; e.g. survey.pattern='/data/images/*.fits'.")
        self.pattern = str(pattern)

    def discover(self) -> list[MosaicFiles]:
        """Files matching the pattern, named by stem (parent/stem where stems repeat)."""
        paths = sorted(Path(p) for p in glob.glob(self.pattern, recursive=True) if Path(p).is_file())
        if not paths:
            raise RadioCurationError(f"survey.pattern={self.pattern!r} matches no files.")
        stems = [p.name.removesuffix(".gz").removesuffix(".fits").removesuffix(".fit") for p in paths]
        return [
            MosaicFiles(f"{p.parent.name}/{s}" if stems.count(s) > 1 else s, p)
            for p, s in zip(paths, stems, strict=True)
        ]


class SyntheticSurvey(LotssDR2Survey):
    """The synthetic LoTSS-like sky, generated under ``data_dir/synthetic/`` on first use and then reused.

    Parameters
    ----------
    data_dir
        Cache directory for generated data (``paths.data_dir``).
    mosaics, size, seed, overlap, dtype, class_fractions, ra, dec
        Sky parameters (see :class:`radio_curation.sky.synthetic.SkyParams`).
    **kwargs
        ``on_error``, ``shard``, ``n_shards``, ``num_workers`` (see :class:`Survey`).
    """

    def __init__(
        self,
        data_dir: str,
        mosaics: int = 4,
        size: int = 2048,
        seed: int = 0,
        overlap: float = 0.35,
        dtype: str = "float64",
        class_fractions: Mapping[str, float] | None = None,
        ra: float = 180.0,
        dec: float = 50.0,
        **kwargs,
    ) -> None:
        fractions = (
            None if class_fractions is None else {str(k): float(v) for k, v in class_fractions.items()}
        )
        self.params = SkyParams(
            mosaics=mosaics,
            size=size,
            seed=seed,
            overlap=overlap,
            dtype=dtype,
            class_fractions=fractions,
            ra=float(ra),
            dec=float(dec),
        )
        name = f"sky-n{mosaics}-px{size}-seed{seed}-{self.params.digest}"
        super().__init__(root=str(Path(data_dir) / "synthetic" / name), **kwargs)

    def discover(self) -> list[MosaicFiles]:
        """Generate the sky if needed, then list its mosaics."""
        ensure_sky(self.root, self.params)
        return super().discover()
