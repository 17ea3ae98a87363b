"""Merging cutout indexes: global IDs, quality filters and cross-mosaic deduplication.

LoTSS mosaics overlap (each is built from its pointing and the neighbouring ones), so the same sky appears
in two or three mosaics. Deduplication matches window centres on the sphere (a KD-tree on unit vectors)
and keeps one window per sky position and size, preferring the copy with the lowest rms or the one farthest
from its mosaic's edge.
"""

from __future__ import annotations

import bisect
import math
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Interval
from scipy.spatial import cKDTree

from radio_curation.cutouts.index import WindowIndex
from radio_curation.errors import RadioCurationError
from radio_curation.suppression import settle

__all__ = ["Merger", "Preference", "concatenate", "cross_mosaic_duplicates", "window_stride"]

Preference = Literal["lowest_rms", "farthest_from_edge"]


def concatenate(indexes: list[WindowIndex]) -> WindowIndex:
    """Concatenate indexes into one table over the union of their mosaics, with a ``parent`` column.

    Rows are sorted by (mosaic name, size, y0, x0) and numbered: ``cutout_id`` is the row number of this
    unfiltered table, so identical inputs always give identical IDs and filter settings never renumber
    the windows they keep; neighbouring IDs are neighbouring windows of one mosaic (sequential reads).

    Raises
    ------
    RadioCurationError
        If two inputs hold different files under the same mosaic name, or record different NaN fills.
    """
    paths: dict[str, str] = {}
    masks: dict[str, str] = {}
    scales: dict[str, float] = {}
    for index in indexes:
        for name, path, mask, scale in zip(
            *(index.mosaics[k] for k in ("name", "path", "mask_path", "pixel_scale")), strict=True
        ):
            if paths.setdefault(name, path) != path:
                raise RadioCurationError(
                    f"mosaic {name} is {paths[name]} in one cutouts run and {path} in another; "
                    "merge runs whose mosaic names identify the same files."
                )
            masks[name], scales[name] = mask, scale
    fills = {float(index.attrs.get("nan_fill", 0.0)) for index in indexes}
    if len(fills) > 1:
        raise RadioCurationError(
            f"the cutouts runs fill NaN pixels with different values {sorted(fills)}; merge runs made with the "
            "same cutouts.nan_fill."
        )
    names = sorted(paths)
    code = {name: i for i, name in enumerate(names)}
    columns: dict[str, list[np.ndarray]] = {}
    for parent, index in enumerate(indexes):
        remap = np.array([code[n] for n in index.mosaics["name"]], dtype=np.int32)
        for key, values in index.columns.items():
            columns.setdefault(key, []).append(remap[values] if key == "mosaic" else values)
        columns.setdefault("parent", []).append(np.full(len(index), parent, dtype=np.int16))
    table = {key: np.concatenate(parts) for key, parts in columns.items()}
    order = np.lexsort((table["x0"], table["y0"], table["size"], table["mosaic"]))
    table = {key: values[order] for key, values in table.items()}
    table["cutout_id"] = np.arange(len(order), dtype=np.int64)
    mosaics = {
        "name": names,
        "path": [paths[n] for n in names],
        "mask_path": [masks[n] for n in names],
        "pixel_scale": [scales[n] for n in names],
    }
    return WindowIndex(mosaics, table, {"nan_fill": fills.pop() if fills else 0.0})


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)


#: Smallest window stride [px] a match radius is derived from: windows on no grid (catalogue cutouts) are
#: copies when their centres differ by the pixel rounding of the two mosaics.
MIN_STRIDE_PX = 2
#: Windows per step of the deduplication's sweep through declination (a KD-tree over them and the windows
#: within the match radius beyond them), and per block of :func:`window_stride`.
SWEEP_ROWS = 1 << 16
#: Degrees added to the sweep's declination margin: covers the float32 rounding of the sort key.
DEC_MARGIN_DEG = 1e-4


def window_stride(
    y0: np.ndarray,
    x0: np.ndarray,
    mosaic: np.ndarray,
    size: int,
    rows: np.ndarray | None = None,
    block_rows: int = SWEEP_ROWS,
) -> int:
    """Spacing [px] of the grid that windows of one size lie on: the gcd of their corner offsets within
    each mosaic (``size`` when no mosaic has two windows; at least :data:`MIN_STRIDE_PX`).

    ``rows`` (default: all) selects the windows; they are read ``block_rows`` at a time, each offset taken
    from the first window seen of its mosaic (the gcd of the offsets from any one window of a mosaic is
    the gcd of all its windows' differences).
    """
    stride = 0
    first: dict[int, tuple[int, int]] = {}
    n = len(mosaic) if rows is None else len(rows)
    for start in range(0, n, block_rows):
        take = slice(start, start + block_rows) if rows is None else rows[start : start + block_rows]
        m, y, x = np.asarray(mosaic[take]), np.asarray(y0[take]), np.asarray(x0[take])
        codes, where, inverse = np.unique(m, return_index=True, return_inverse=True)
        for code, i in zip(codes.tolist(), where.tolist(), strict=True):
            first.setdefault(code, (int(y[i]), int(x[i])))
        ref = np.array([first[code] for code in codes.tolist()], dtype=np.int64).reshape(-1, 2)
        stride = math.gcd(
            stride,
            int(np.gcd.reduce(y - ref[inverse, 0])),
            int(np.gcd.reduce(x - ref[inverse, 1])),
        )
    return max(stride or int(size), MIN_STRIDE_PX)


def _badness(col: dict[str, np.ndarray], rows: np.ndarray, prefer: str) -> np.ndarray:
    """How much less a window is preferred (NaN: least preferred)."""
    values = (
        col["rms"][rows].astype(float)
        if prefer == "lowest_rms"
        else -col["edge_distance"][rows].astype(float)
    )
    return np.where(np.isnan(values), np.inf, values)


def _pair_edges(
    col: dict[str, np.ndarray], rows: np.ndarray, core: int, chord: float, prefer: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(better, worse)`` edges, as positions in ``rows``, between windows of different mosaics whose
    centres are within ``chord`` of each other and the first of which is among the first ``core`` rows."""
    pairs = cKDTree(_unit_vectors(col["ra"][rows], col["dec"][rows])).query_pairs(
        chord, output_type="ndarray"
    )
    a, b = pairs[:, 0], pairs[:, 1]
    mine = (a < core) & (col["mosaic"][rows[a]] != col["mosaic"][rows[b]])
    a, b = a[mine], b[mine]
    # The order of preference: badness, then cutout_id, then row.
    bad_a, bad_b = _badness(col, rows[a], prefer), _badness(col, rows[b], prefer)
    id_a, id_b = col["cutout_id"][rows[a]], col["cutout_id"][rows[b]]
    a_first = (bad_a < bad_b) | ((bad_a == bad_b) & ((id_a < id_b) | ((id_a == id_b) & (rows[a] < rows[b]))))
    return np.where(a_first, a, b), np.where(a_first, b, a)


def _declination_order(col: dict[str, np.ndarray], group: np.ndarray, block_rows: int) -> np.ndarray:
    """Positions in ``group`` in order of float32 declination (int32 below 2**31 windows)."""
    key = np.empty(len(group), dtype=np.float32)
    for start in range(0, len(group), block_rows):
        key[start : start + block_rows] = col["dec"][group[start : start + block_rows]]
    # Any order of the key sweeps the same pairs; the default sort needs no workspace, a stable one would.
    order = np.argsort(key)
    del key
    return order.astype(np.int32 if len(group) < 2**31 else np.int64)


def _block_stop(dec: np.ndarray, group: np.ndarray, order: np.ndarray, end: int, margin: float) -> int:
    """The first position from ``end`` on whose float32 declination exceeds that at ``end - 1`` by more than
    ``margin`` (a binary search that reads the few declinations it compares)."""

    def dec_at(position: int) -> np.float32:
        return np.float32(dec[group[order[position]]])

    bound = np.float32(float(dec_at(end - 1)) + margin)
    return bisect.bisect_right(range(len(order)), bound, lo=end, key=dec_at)


def _swept_duplicates(
    col: dict[str, np.ndarray], group: np.ndarray, chord: float, angle: float, prefer: str, block_rows: int
) -> np.ndarray:
    """Rows of ``group`` that match a preferred, kept window of another mosaic within ``chord`` (``angle``
    degrees), sorted.

    The windows are swept in declination order ``block_rows`` at a time: a KD-tree over a block and the
    windows less than ``angle`` beyond its last declination finds once every pair whose first window is in
    the block (a window's partners are never farther in declination than in angle), after which every
    window up to the block's end has all its matches, and :func:`~radio_curation.suppression.settle`
    decides what they allow. Only the matches of undecided windows are carried to the next block (those
    near its start), so memory stays at the order (4 bytes per window), one byte per window of decisions
    and one block's tree and matches whatever the rows.
    """
    order = _declination_order(col, group, block_rows)
    state = np.zeros(len(order), dtype=np.int8)
    better = worse = np.zeros(0, dtype=np.intp)
    lo = 0
    for start in range(0, len(order), block_rows):
        core = min(block_rows, len(order) - start)
        stop = _block_stop(col["dec"], group, order, start + core, angle + DEC_MARGIN_DEG)
        a, b = _pair_edges(col, group[order[start:stop]], core, chord, prefer)
        better, worse = settle(
            np.concatenate([better, a + start]), np.concatenate([worse, b + start]), state, lo, start + core
        )
        undecided = np.flatnonzero(state[lo : start + core] == 0)
        lo = lo + int(undecided[0]) if len(undecided) else start + core
    dropped = order[state == 2]
    del order, state
    removed = group[dropped]
    removed.sort()
    return removed


def cross_mosaic_duplicates(
    index: WindowIndex, rows: np.ndarray, tolerance: float, prefer: str, block_rows: int = SWEEP_ROWS
) -> np.ndarray:
    """Rows (among ``rows``) that duplicate a preferred window of another mosaic.

    Two windows match when they have the same size, come from different mosaics and their centres lie
    within ``tolerance`` × the stride of the windows' grid (:func:`window_stride` of ``rows``: the window
    side × (1 − overlap), or the side for ``grid``) of each other on the sphere. Every sky position is
    within √2/2 of the stride of a window centre of each mosaic's grid, so a tolerance of 0.75 pairs every
    window of an overlap zone with its counterpart whatever the overlap. Windows are taken in order of
    preference (ties broken by ``cutout_id``); one is kept unless it matches a window already kept. So no
    two kept windows of different mosaics match, and every removed window matches a kept, preferred one.

    Memory: besides the index and ``rows``, 5 bytes per row and one ``block_rows`` block of the sweep
    (:func:`_swept_duplicates`) at a time, 12 bytes per row while the windows are sorted by declination,
    and the rows returned.

    Parameters
    ----------
    index
        Table with ``ra, dec, size, mosaic, y0, x0, rms, edge_distance, cutout_id``.
    rows
        Candidate rows, distinct (e.g. those that passed the quality filters).
    tolerance
        Matching radius as a fraction of the window stride.
    prefer
        ``lowest_rms`` or ``farthest_from_edge``.
    block_rows
        Windows per step of the sweep.

    Returns
    -------
    numpy.ndarray
        Sorted row numbers to remove.
    """
    col = index.columns
    scale = np.asarray(index.mosaics["pixel_scale"], dtype=float)
    removed = []
    sizes = _sizes(col["size"], rows, block_rows)
    for size in sizes:
        group = rows if len(sizes) == 1 else rows[col["size"][rows] == size]
        if len(group) < 2:
            continue
        stride = window_stride(col["y0"], col["x0"], col["mosaic"], int(size), group, block_rows)
        used = np.zeros(len(scale), dtype=bool)
        for start in range(0, len(group), block_rows):
            used[col["mosaic"][group[start : start + block_rows]]] = True
        angle = tolerance * stride * float(np.max(scale[used])) / 3600.0
        chord = 2.0 * math.sin(math.radians(angle) / 2.0)
        removed.append(_swept_duplicates(col, group, chord, angle, prefer, block_rows))
    if not removed:
        return np.zeros(0, dtype=np.int64)
    if len(removed) == 1:
        return removed[0]
    removed = np.concatenate(removed)
    removed.sort()
    return removed


def _sizes(size: np.ndarray, rows: np.ndarray, block_rows: int) -> np.ndarray:
    """The distinct window sizes of ``rows``, read ``block_rows`` at a time."""
    parts = [np.unique(size[rows[start : start + block_rows]]) for start in range(0, len(rows), block_rows)]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=size.dtype)


class Merger:
    """Merge settings (the ``merge`` config group) and the merge itself.

    Parameters
    ----------
    max_nan_fraction
        Remove windows with a larger NaN fraction (null: keep all).
    min_peak_snr
        Remove windows whose peak S/N is lower (null: off).
    min_mask_fraction
        Remove windows with less of their area in source-mask islands (null: off; windows of mosaics
        without a mask have no mask fraction and are removed when this is set).
    rms_min, rms_max
        Keep windows whose robust rms [Jy/beam] lies in this range (null: open).
    grid
        Keep only windows whose corners lie on a non-overlapping grid (``y0`` and ``x0`` multiples of the
        window size), as the grid script of the per-cutout .npy scripts this project replaces did.
    dedup
        Remove cross-mosaic duplicates (see :func:`cross_mosaic_duplicates`).
    dedup_tolerance
        Matching radius as a fraction of the windows' stride (0.75: every window in another mosaic's
        overlap zone finds its counterpart, at any overlap and with ``grid``).
    dedup_prefer
        ``lowest_rms`` or ``farthest_from_edge``.
    """

    def __init__(
        self,
        max_nan_fraction: Annotated[float, Interval(ge=0, le=1)] | None = None,
        min_peak_snr: float | None = None,
        min_mask_fraction: Annotated[float, Interval(ge=0, le=1)] | None = None,
        rms_min: float | None = None,
        rms_max: float | None = None,
        grid: bool = False,
        dedup: bool = True,
        dedup_tolerance: Annotated[float, Interval(gt=0, le=2)] = 0.75,
        dedup_prefer: Preference = "lowest_rms",
    ) -> None:
        self.max_nan_fraction = max_nan_fraction
        self.min_peak_snr = min_peak_snr
        self.min_mask_fraction = min_mask_fraction
        self.rms_min = rms_min
        self.rms_max = rms_max
        self.grid = bool(grid)
        self.dedup = bool(dedup)
        self.dedup_tolerance = float(dedup_tolerance)
        self.dedup_prefer = dedup_prefer

    def _filters(self, col: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows passing each enabled quality filter, in the order the filters apply (NaN values fail)."""
        passing = {}
        with np.errstate(invalid="ignore"):
            if self.max_nan_fraction is not None:
                passing["nan"] = col["nan_fraction"] <= self.max_nan_fraction
            if self.min_peak_snr is not None:
                passing["peak_snr"] = col["peak_snr"] >= self.min_peak_snr
            if self.min_mask_fraction is not None:
                passing["mask_fraction"] = col["mask_fraction"] >= self.min_mask_fraction
            if self.rms_min is not None or self.rms_max is not None:
                low = -np.inf if self.rms_min is None else self.rms_min
                high = np.inf if self.rms_max is None else self.rms_max
                passing["rms"] = (col["rms"] >= low) & (col["rms"] <= high)
        if self.grid:
            passing["grid"] = (col["y0"] % col["size"] == 0) & (col["x0"] % col["size"] == 0)
        return passing

    def merge(self, indexes: list[WindowIndex]) -> tuple[WindowIndex, dict[str, int]]:
        """Concatenate, number, filter and deduplicate.

        Parameters
        ----------
        indexes
            The cutouts runs' indexes, in parent order.

        Returns
        -------
        tuple
            The merged :class:`WindowIndex` (rows in ``cutout_id`` order) and counts: ``input`` rows,
            ``removed_<filter>`` for each step, and ``windows`` kept.
        """
        table = concatenate(indexes)
        col = table.columns
        counts = {"input": len(table)}
        keep = np.ones(len(table), dtype=bool)
        same = np.zeros(len(table), dtype=bool)
        if len(table) > 1:
            same[1:] = (
                (np.diff(col["mosaic"]) == 0)
                & (np.diff(col["size"]) == 0)
                & (np.diff(col["y0"]) == 0)
                & (np.diff(col["x0"]) == 0)
            )
        keep &= ~same
        counts["removed_duplicate_rows"] = int(same.sum())
        for name, passing in self._filters(col).items():
            removed = keep & ~passing
            counts[f"removed_{name}"] = int(removed.sum())
            keep &= passing
        if self.dedup:
            duplicates = cross_mosaic_duplicates(
                table, np.flatnonzero(keep), self.dedup_tolerance, self.dedup_prefer
            )
            counts["removed_cross_mosaic"] = len(duplicates)
            keep[duplicates] = False
        counts["windows"] = int(keep.sum())
        merged = WindowIndex(
            table.mosaics,
            {key: values[keep] for key, values in col.items()},
            {**table.attrs, "settings": self.settings()},
        )
        return merged, counts

    def settings(self) -> dict[str, Any]:
        """The settings as a plain dict (recorded in ``merged.h5``)."""
        return {
            "max_nan_fraction": self.max_nan_fraction,
            "min_peak_snr": self.min_peak_snr,
            "min_mask_fraction": self.min_mask_fraction,
            "rms_min": self.rms_min,
            "rms_max": self.rms_max,
            "grid": self.grid,
            "dedup": self.dedup,
            "dedup_tolerance": self.dedup_tolerance,
            "dedup_prefer": self.dedup_prefer,
        }
