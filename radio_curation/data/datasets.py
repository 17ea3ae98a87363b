"""Labelled image sets for evaluation: MiraBest (FITS folder or official pickled batches), any FITS folder,
windows of the synthetic sky labelled by its truth catalogue.

Every dataset config (``configs/dataset/``) instantiates an object whose :meth:`load` returns one
:class:`LabelledImages`: all images as ``[N, 1, H, W]`` float32 in their native units, integer labels,
class names, and the fixed train/test split when the dataset has one.
"""

from __future__ import annotations

import csv
import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from astropy.table import Table

from radio_curation.errors import RadioCurationError
from radio_curation.progress import progress
from radio_curation.sky.fitsio import open_image, open_mosaic
from radio_curation.sky.survey import SyntheticSurvey


@dataclass(frozen=True)
class LabelledImages:
    """A labelled image set held in memory.

    Attributes
    ----------
    images : np.ndarray
        ``[N, 1, H, W]`` float32 pixels (NaN replaced by the dataset's ``nan_fill``).
    labels : np.ndarray
        ``[N]`` int64 class indices into ``class_names``.
    class_names : tuple of str
        Name of each class.
    names : np.ndarray
        ``[N]`` identifiers (file names or batch entries).
    split : np.ndarray or None
        ``[N]`` ``"train"``/``"test"`` when the dataset comes with a fixed split.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    names: np.ndarray
    split: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, keep: np.ndarray) -> LabelledImages:
        """The images where boolean ``keep`` is true (or at integer rows ``keep``)."""
        return replace(
            self,
            images=self.images[keep],
            labels=self.labels[keep],
            names=self.names[keep],
            split=None if self.split is None else self.split[keep],
        )

    def class_counts(self) -> dict[str, int]:
        """Number of images of each class."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts, strict=True)}


class LabelledDataset(Protocol):
    """What a ``dataset`` config instantiates."""

    def load(self) -> LabelledImages: ...


def _crop(image: np.ndarray, size: int | None, source: str) -> np.ndarray:
    if size is None:
        return image
    ny, nx = image.shape[-2:]
    if ny < size or nx < size:
        raise RadioCurationError(f"{source}: image is {ny}×{nx} px, smaller than dataset.center_crop={size}")
    y0, x0 = (ny - size) // 2, (nx - size) // 2
    return image[..., y0 : y0 + size, x0 : x0 + size]


def read_fits_image(path: Path, center_crop: int | None = None, nan_fill: float = 0.0) -> np.ndarray:
    """The 2-D image of a FITS file as float32, optionally centre-cropped, NaN replaced by ``nan_fill``.

    Degenerate STOKES/FREQ axes are squeezed and archive headers with non-ASCII cards are accepted.
    """
    hdul, image, _ = open_image(path)
    with hdul:
        pixels = image.rows(0, image.shape[0])
    pixels = _crop(np.asarray(pixels, dtype=np.float32), center_crop, str(path))
    return np.nan_to_num(pixels, nan=nan_fill)


def _stack(images: Sequence[np.ndarray], names: Sequence[str], root: Path) -> np.ndarray:
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        examples = {}
        for im, name in zip(images, names, strict=True):
            examples.setdefault(im.shape, name)
        listing = ", ".join(f"{s[0]}×{s[1]} ({n})" for s, n in list(examples.items())[:5])
        raise RadioCurationError(
            f"images under {root} have different sizes: {listing}. "
            "Set dataset.center_crop=<pixels> to cut them all to one central size."
        )
    return np.stack(images)[:, None].astype(np.float32, copy=False)


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise RadioCurationError(f"label table {path} not found; point dataset.root/dataset.labels at it")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise RadioCurationError(
                f"{path} lacks column(s) {missing}; it has {reader.fieldnames}. "
                "Set the dataset's *_column options to the right names."
            )
        return list(reader)


def _read_fits_files(
    root: Path, files: Sequence[str], center_crop: int | None, nan_fill: float
) -> np.ndarray:
    images = []
    with progress(len(files), f"reading {root.name}", unit="img") as bar:
        for name in files:
            path = root / name
            if not path.is_file():
                raise RadioCurationError(f"{path} is listed in the label table but does not exist")
            images.append(read_fits_image(path, center_crop, nan_fill))
            bar.advance()
    return _stack(images, files, root)


# Official MiraBest label index -> MiraBest label code (Porter & Scaife 2023): digit 1 = FRI/FRII/hybrid,
# digit 2 = confident (0) or uncertain (1), digit 3 = morphology (standard, double-double, WAT, head-tail).
MIRABEST_CODES = (100, 102, 104, 110, 112, 200, 201, 210, 300, 310)
MIRABEST_SUBSETS = ("all", "confident", "uncertain", "fr")
_FR_CLASS = {1: "FRI", 2: "FRII", 3: "hybrid"}


def mirabest_labels(codes: np.ndarray, subset: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Class labels of MiraBest label codes under a subset.

    Parameters
    ----------
    codes : np.ndarray
        ``[N]`` MiraBest label codes (100 … 310).
    subset : {"all", "confident", "uncertain", "fr"}
        ``all``: FRI / FRII / hybrid; ``confident``: confident FRI vs FRII (MiraBest Confident);
        ``uncertain``: uncertain FRI vs FRII; ``fr``: FRI vs FRII of either confidence.

    Returns
    -------
    keep : np.ndarray
        ``[N]`` bool, the images in the subset.
    labels : np.ndarray
        ``[keep.sum()]`` int64.
    class_names : tuple of str
    """
    if subset not in MIRABEST_SUBSETS:
        raise RadioCurationError(f"dataset.subset={subset!r} is not one of {MIRABEST_SUBSETS}")
    codes = np.asarray(codes, dtype=np.int64)
    unknown = sorted(set(codes.tolist()) - set(MIRABEST_CODES))
    if unknown:
        raise RadioCurationError(f"unknown MiraBest label codes {unknown}; expected {MIRABEST_CODES}")
    fr = codes // 100
    confident = (codes // 10) % 10 == 0
    if subset == "all":
        keep = np.ones(len(codes), bool)
        names = ("FRI", "FRII", "hybrid")
    else:
        keep = fr < 3
        if subset == "confident":
            keep &= confident
        elif subset == "uncertain":
            keep &= ~confident
        names = ("FRI", "FRII")
    return keep, fr[keep] - 1, names


class MiraBest:
    """MiraBest radio galaxies (Porter & Scaife 2023) from either distribution.

    Parameters
    ----------
    root : str or Path
        A folder of FITS images with ``labels.csv`` (columns ``file``, ``label_code``, optional ``split``),
        or the official CIFAR-style batches (``data_batch_1`` … ``data_batch_7``, ``test_batch``, either in
        ``root`` or in ``root/batches``).
    subset : {"all", "confident", "uncertain", "fr"}
        Which images and classes (see :func:`mirabest_labels`); ``confident`` is MiraBest Confident.
    layout : {"auto", "folder", "batches"}
        Which distribution ``root`` holds; ``auto`` looks for ``labels.csv`` then for batch files.
    center_crop : int, optional
        Cut every image to its central ``center_crop`` pixels.
    nan_fill : float
        Value for blank (NaN) pixels.

    Notes
    -----
    The folder holds FITS images in Jy/beam; the official batches hold 8-bit PNG-derived pixels (0–255).
    The train/test split is the ``split`` column of the folder or the batches' train/test files.
    """

    def __init__(
        self,
        root: str | Path,
        subset: str = "confident",
        layout: str = "auto",
        center_crop: int | None = None,
        nan_fill: float = 0.0,
    ) -> None:
        self.root = Path(root).expanduser()
        self.subset = subset
        self.layout = layout
        self.center_crop = center_crop
        self.nan_fill = nan_fill

    def _batch_dir(self) -> Path | None:
        for candidate in (self.root, self.root / "batches"):
            if (candidate / "data_batch_1").is_file():
                return candidate
        return None

    def load(self) -> LabelledImages:
        """Read the images and labels of the configured subset."""
        if self.layout not in ("auto", "folder", "batches"):
            raise RadioCurationError(f"dataset.layout={self.layout!r} is not one of auto, folder, batches")
        if not self.root.is_dir():
            raise RadioCurationError(
                f"MiraBest folder {self.root} does not exist; set dataset.root to the folder with labels.csv "
                "or with the official data_batch_* files"
            )
        folder = (self.root / "labels.csv").is_file()
        if self.layout == "folder" or (self.layout == "auto" and folder):
            images, codes, names, split = self._load_folder()
        elif (batch_dir := self._batch_dir()) is not None:
            images, codes, names, split = load_mirabest_batches(batch_dir)
        else:
            raise RadioCurationError(
                f"{self.root} holds neither labels.csv (FITS folder layout) nor data_batch_1 (official "
                "MiraBest batches, also looked in batches/); set dataset.root to one of them"
            )
        images = np.nan_to_num(_crop(images, self.center_crop, str(self.root)), nan=self.nan_fill)
        keep, labels, class_names = mirabest_labels(codes, self.subset)
        return LabelledImages(
            images=images[keep],
            labels=labels,
            class_names=class_names,
            names=names[keep],
            split=None if split is None else split[keep],
        )

    def _load_folder(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        rows = _read_csv(self.root / "labels.csv", ["file", "label_code"])
        files = [r["file"] for r in rows]
        images = _read_fits_files(self.root, files, None, self.nan_fill)
        codes = np.array([int(r["label_code"]) for r in rows], dtype=np.int64)
        split = np.array([r["split"] for r in rows]) if rows and "split" in rows[0] else None
        return images, codes, np.array(files), split


def _entry(batch: dict, key: str):
    return batch[key] if key in batch else batch.get(key.encode())


def load_mirabest_batches(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the official MiraBest batches (``data_batch_*`` = train, ``test_batch`` = test).

    Each batch is a pickled dict with ``data`` (``[n, H·W]`` uint8, square images), ``labels`` (official
    indices 0–9) and optionally ``filenames``.

    Returns
    -------
    images : np.ndarray
        ``[N, 1, H, W]`` float32 (0–255).
    codes : np.ndarray
        ``[N]`` MiraBest label codes.
    names : np.ndarray
        ``[N]`` file names (or ``<batch>:<index>``).
    split : np.ndarray
        ``[N]`` ``train``/``test``.
    """
    files = sorted(folder.glob("data_batch_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    files += [folder / "test_batch"] if (folder / "test_batch").is_file() else []
    images, labels, names, split = [], [], [], []
    for path in files:
        with open(path, "rb") as f:
            # The official distribution format is a pickle written by Python 2 (latin1 strings).
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(_entry(batch, "data"))
        entry_labels = _entry(batch, "labels")
        if data.ndim != 2 or entry_labels is None or len(entry_labels) != len(data):
            raise RadioCurationError(f"{path} is not a MiraBest batch (needs 'data' [n, H·W] and 'labels')")
        side = math.isqrt(data.shape[1])
        if side * side != data.shape[1]:
            raise RadioCurationError(f"{path}: rows of {data.shape[1]} pixels are not square images")
        images.append(data.reshape(-1, 1, side, side).astype(np.float32))
        labels.extend(int(v) for v in entry_labels)
        filenames = _entry(batch, "filenames")
        entry_names = filenames if filenames is not None else [f"{path.name}:{i}" for i in range(len(data))]
        names.extend(n.decode() if isinstance(n, bytes) else str(n) for n in entry_names)
        split.extend(["test" if path.name == "test_batch" else "train"] * len(data))
    labels_arr = np.asarray(labels, dtype=np.int64)
    if labels_arr.size and (labels_arr.min() < 0 or labels_arr.max() >= len(MIRABEST_CODES)):
        raise RadioCurationError(f"MiraBest batch labels must be 0–{len(MIRABEST_CODES) - 1}")
    codes = np.asarray(MIRABEST_CODES, dtype=np.int64)[labels_arr]
    return np.concatenate(images), codes, np.array(names), np.array(split)


class FitsFolder:
    """Any folder of FITS images with a CSV table naming each file's class.

    Parameters
    ----------
    root : str or Path
        The folder; file names in the table are relative to it.
    labels : str or Path
        The CSV table (relative to ``root`` unless absolute).
    file_column, label_column : str
        Columns holding the file name and the class (any string).
    split_column : str, optional
        Column holding ``train``/``test``, if the table has a fixed split.
    center_crop : int, optional
        Cut every image to its central ``center_crop`` pixels (needed when sizes differ).
    nan_fill : float
        Value for blank (NaN) pixels.
    """

    def __init__(
        self,
        root: str | Path,
        labels: str | Path = "labels.csv",
        file_column: str = "file",
        label_column: str = "label",
        split_column: str | None = "split",
        center_crop: int | None = None,
        nan_fill: float = 0.0,
    ) -> None:
        self.root = Path(root).expanduser()
        self.labels = self.root / Path(labels).expanduser()
        self.file_column = file_column
        self.label_column = label_column
        self.split_column = split_column
        self.center_crop = center_crop
        self.nan_fill = nan_fill

    def load(self) -> LabelledImages:
        """Read every listed image and its class (classes sorted by name)."""
        rows = _read_csv(self.labels, [self.file_column, self.label_column])
        if not rows:
            raise RadioCurationError(f"{self.labels} lists no images")
        files = [r[self.file_column] for r in rows]
        images = _read_fits_files(self.root, files, self.center_crop, self.nan_fill)
        class_names, labels = np.unique([r[self.label_column] for r in rows], return_inverse=True)
        split = None
        if self.split_column and self.split_column in rows[0]:
            split = np.array([r[self.split_column] for r in rows])
        return LabelledImages(
            images=images,
            labels=labels.astype(np.int64),
            class_names=tuple(str(c) for c in class_names),
            names=np.array(files),
            split=split,
        )


class SyntheticWindows:
    """Windows centred on the sources of the synthetic sky, labelled with their true class.

    Each selected truth-catalogue source is cut once, from the first mosaic that holds its whole window
    without blank pixels.

    Parameters
    ----------
    sky : SyntheticSurvey
        The synthetic survey (generated under its data directory on first use).
    window : int
        Window side in pixels.
    classes : sequence of str
        Truth classes to keep (``compact``, ``resolved``, ``fri``, ``frii``, ``wat``, ``ht``, ``halo``,
        ``relic``).
    per_class : int
        At most this many windows per class (a random choice).
    min_flux : float
        Only sources at least this bright [Jy], so that faint compact ones do not label noise.
    seed : int
        Seed of the per-class choice.
    """

    def __init__(
        self,
        sky: SyntheticSurvey,
        window: int = 128,
        classes: Sequence[str] = ("compact", "resolved", "fri", "frii"),
        per_class: int = 200,
        min_flux: float = 1e-3,
        seed: int = 0,
    ) -> None:
        self.sky = sky
        self.window = int(window)
        self.classes = tuple(str(c) for c in classes)
        self.per_class = int(per_class)
        self.min_flux = float(min_flux)
        self.seed = int(seed)

    def load(self) -> LabelledImages:
        """Generate the sky if needed, then cut and label the windows."""
        mosaics = self.sky.mosaics()
        truth = Table.read(Path(self.sky.root) / "truth.fits")
        known = sorted(set(np.asarray(truth["class"]).astype(str).tolist()))
        unknown = [c for c in self.classes if c not in known]
        if unknown:
            raise RadioCurationError(f"dataset.classes {unknown} are not truth classes; known: {known}")
        cls = np.asarray(truth["class"]).astype(str)
        wanted = np.isin(cls, self.classes) & (np.asarray(truth["flux"]) >= self.min_flux)
        ra, dec = np.asarray(truth["ra"])[wanted], np.asarray(truth["dec"])[wanted]
        source_ids, cls = np.asarray(truth["source_id"])[wanted], cls[wanted]
        half = self.window // 2
        images: dict[int, np.ndarray] = {}
        with progress(len(mosaics), "cutting labelled windows", unit="mosaic") as bar:
            for files in mosaics:
                with open_mosaic(files) as mosaic:
                    x, y = mosaic.world_to_pixel(ra, dec)
                    ny, nx = mosaic.shape
                    x0 = np.round(np.nan_to_num(x, nan=-1e9)).astype(np.int64) - half
                    y0 = np.round(np.nan_to_num(y, nan=-1e9)).astype(np.int64) - half
                    inside = (x0 >= 0) & (y0 >= 0) & (x0 + self.window <= nx) & (y0 + self.window <= ny)
                    todo = np.flatnonzero(inside & ~np.isin(np.arange(len(ra)), list(images)))
                    if len(todo):
                        cut = mosaic.image.gather(y0[todo], x0[todo], self.window).astype(np.float32)
                        for row, pixels in zip(todo, cut, strict=True):
                            if np.isfinite(pixels).all():
                                images[int(row)] = pixels
                bar.advance()
        rows = np.array(sorted(images), dtype=np.int64)
        rng = np.random.default_rng(self.seed)
        chosen = []
        for name in self.classes:
            of_class = rows[cls[rows] == name]
            if len(of_class) > self.per_class:
                of_class = np.sort(rng.choice(of_class, self.per_class, replace=False))
            chosen.append(of_class)
        rows = np.concatenate(chosen)
        if len(rows) == 0:
            raise RadioCurationError(
                f"the synthetic sky at {self.sky.root} has no sources of classes {list(self.classes)} "
                f"brighter than dataset.min_flux={self.min_flux} with a whole {self.window}-px window"
            )
        labels = np.array([self.classes.index(c) for c in cls[rows]], dtype=np.int64)
        return LabelledImages(
            images=np.stack([images[int(r)] for r in rows])[:, None],
            labels=labels,
            class_names=self.classes,
            names=np.array([f"source_{source_ids[r]}" for r in rows]),
        )
