"""Per-window statistics, computed for all windows of a mosaic at once.

Definitions (the same for every strategy; tests compare them with direct NumPy on single windows):

- ``nan_fraction``: fraction of the window's pixels that are NaN (blanked).
- ``peak``: largest finite pixel [Jy/beam] (NaN if the window is all NaN).
- ``rms``: robust noise, 1.4826 × the median absolute deviation from the median of the window's finite
  pixels on a regular sub-grid ``window[::rms_step, ::rms_step]`` (``rms_step=1``: every pixel). By default
  the strategies use about 16 × 16 samples per window (8 px apart for 128-px windows: two LoTSS beams, so
  nearly independent samples), which keeps the selection cheap.
- ``peak_snr``: ``peak / rms``.
- ``mask_fraction``: fraction of the window's pixels inside an island of the source mask (NaN without mask).
- ``edge_distance``: distance [px] from the window centre to the image border or the nearest blanked pixel
  (blanked pixels found on a grid of ``EDGE_STEP`` px, so good to about half of that).

Sliding windows use block reductions: one streaming pass over the memory-mapped mosaic reduces
``g × g`` blocks (``g = gcd(size, stride)``) to NaN counts, maxima and mask counts, and keeps the rms
sub-grid; window values then come from summed-area tables and strided views of those small arrays.
Windows at arbitrary positions (catalogue) are gathered in position-sorted batches and reduced per batch.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from radio_curation.errors import RadioCurationError
from radio_curation.sky.fitsio import Mosaic

__all__ = [
    "EDGE_STEP",
    "MAD_TO_SIGMA",
    "GridWindows",
    "coverage_grid",
    "edge_distance",
    "gathered_window_stats",
    "grid_window_stats",
    "robust_rms",
]

MAD_TO_SIGMA = 1.4826
EDGE_STEP = 16
#: Bytes of the mosaic read per step of the streaming pass (reused buffers of a few MB stay cache-friendly).
_STRIP_BYTES = 16 * 2**20
_BATCH = 1024
#: Pixels gathered per batch of catalogue windows (32 MB of float64).
_GATHER_PIXELS = 4 * 2**20


def _median_rows(a: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Median of the ``count`` finite values of each row of ``a`` (NaN for rows without any).

    Reorders ``a`` in place.
    """
    out = np.full(a.shape[0], np.nan, dtype=a.dtype)
    if a.shape[0] == 0 or a.shape[1] == 0:
        return out
    n = a.shape[1]
    full = count == n
    if full.any():
        k = n // 2
        rows = a if full.all() else a[full]
        # One selection per row: after partitioning at k, the (k-1)-th value is the largest on the left.
        rows.partition(k, axis=1)
        med = rows[:, k] if n % 2 else 0.5 * (rows[:, k] + rows[:, :k].max(axis=1))
        out[full] = med
    partial = ~full & (count > 0)
    if partial.any():
        ordered = np.sort(a[partial], axis=1)
        c = count[partial]
        lo = np.take_along_axis(ordered, ((c - 1) // 2)[:, None], axis=1)[:, 0]
        hi = np.take_along_axis(ordered, (c // 2)[:, None], axis=1)[:, 0]
        out[partial] = 0.5 * (lo + hi)
    return out


def robust_rms(samples: np.ndarray, overwrite: bool = False, finite: bool = False) -> np.ndarray:
    """1.4826 × MAD of the finite values of each row.

    Parameters
    ----------
    samples
        ``[B, n]`` pixel samples (NaN ignored).
    overwrite
        Allow reordering and overwriting ``samples`` (saves a copy).
    finite
        The caller knows there is no NaN (skips counting them).

    Returns
    -------
    numpy.ndarray
        ``[B]`` robust standard deviations (NaN for rows without finite values).
    """
    work = samples if overwrite else samples.copy()
    n = work.shape[1] if work.ndim == 2 else 0
    count = np.full(len(work), n) if finite else n - np.isnan(work).sum(axis=1)
    median = _median_rows(work, count)
    # Partitioning permuted each row, which leaves its set of deviations (and NaN count) unchanged.
    np.abs(np.subtract(work, median[:, None], out=work), out=work)
    return MAD_TO_SIGMA * _median_rows(work, count)


def edge_distance(
    finite_grid: np.ndarray, step: int, yc: np.ndarray, xc: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Distance [px] from pixel positions to the nearest blanked pixel or the image border.

    The border distance is exact; blanked pixels are found on the ``step``-px grid, so that part is good to
    about half a step.

    Parameters
    ----------
    finite_grid
        ``isfinite(image[::step, ::step])``.
    step
        Grid step [px].
    yc, xc
        Positions (0-based pixels).
    shape
        Image shape ``(ny, nx)``.

    Returns
    -------
    numpy.ndarray
        float32 distances.
    """
    yc = np.asarray(yc, dtype=float)
    xc = np.asarray(xc, dtype=float)
    border = np.minimum.reduce([yc + 0.5, shape[0] - 0.5 - yc, xc + 0.5, shape[1] - 0.5 - xc])
    if finite_grid.all():
        return border.astype(np.float32)
    _, (near_y, near_x) = ndimage.distance_transform_edt(finite_grid, return_indices=True)
    iy = np.clip(np.rint(yc / step).astype(np.int64), 0, finite_grid.shape[0] - 1)
    ix = np.clip(np.rint(xc / step).astype(np.int64), 0, finite_grid.shape[1] - 1)
    # The blank edge lies between the nearest blank sample and its finite neighbour: half a step closer.
    blank = np.hypot(yc - near_y[iy, ix] * step, xc - near_x[iy, ix] * step) - step / 2.0
    return np.clip(np.minimum(border, blank), 0.0, None).astype(np.float32)


def _window_sums(blocks: np.ndarray, k: int, s: int, nwy: int, nwx: int) -> np.ndarray:
    """Sums of ``k × k`` blocks at block offsets ``(i·s, j·s)`` via a summed-area table."""
    sat = np.zeros((blocks.shape[0] + 1, blocks.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(blocks, axis=0, dtype=np.int64), axis=1, out=sat[1:, 1:])
    iy = np.arange(nwy) * s
    ix = np.arange(nwx) * s
    return (
        sat[iy[:, None] + k, ix[None, :] + k]
        - sat[iy[:, None], ix[None, :] + k]
        - sat[iy[:, None] + k, ix[None, :]]
        + sat[iy[:, None], ix[None, :]]
    )


@dataclass
class GridWindows:
    """Statistics of the windows of a regular grid, one entry per window in row-major order.

    ``rms`` is computed on request (:meth:`rms`) so callers pay for it only on the windows they keep.
    """

    y0: np.ndarray
    x0: np.ndarray
    nan_fraction: np.ndarray
    peak: np.ndarray
    mask_fraction: np.ndarray
    edge_distance: np.ndarray
    rms_step: int
    rms_windows: np.ndarray | None
    threads: int = 1

    def rms(self, rows: np.ndarray) -> np.ndarray:
        """Robust rms (float32) of the windows ``rows``, in batches spread over :attr:`threads`."""
        out = np.empty(len(rows), dtype=np.float32)
        r = self.rms_step

        def batch(start: int) -> None:
            chunk = rows[start : start + _BATCH]
            picked = self.rms_windows[self.y0[chunk] // r, self.x0[chunk] // r]
            clean = bool((self.nan_fraction[chunk] == 0).all())
            out[start : start + _BATCH] = robust_rms(
                picked.reshape(len(chunk), -1), overwrite=True, finite=clean
            )

        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(batch, range(0, len(rows), _BATCH)))
        return out


def grid_window_stats(mosaic: Mosaic, size: int, stride: int, rms_step: int, threads: int = 1) -> GridWindows:
    """Statistics of every window of a regular grid (top-left corners at multiples of ``stride``).

    Parameters
    ----------
    mosaic
        Open mosaic.
    size
        Window size [px].
    stride
        Distance between neighbouring windows [px].
    rms_step
        Sub-grid step of the rms samples; must divide ``stride``.
    threads
        Threads for the streaming pass and the rms (results do not depend on it).

    Returns
    -------
    GridWindows
        ``y0, x0`` (int32), ``nan_fraction, peak, mask_fraction, edge_distance`` (float32) and the rms on
        request.
    """
    if stride % rms_step:
        raise RadioCurationError(
            f"cutouts.rms_step={rms_step} must divide the window stride {stride} "
            f"(window_size × (1 − overlap)); choose a divisor of {stride}, e.g. "
            f"{math.gcd(stride, rms_step)}."
        )
    ny, nx = mosaic.shape
    nwy = (ny - size) // stride + 1 if ny >= size else 0
    nwx = (nx - size) // stride + 1 if nx >= size else 0
    g = math.gcd(size, stride)
    k, s = size // g, stride // g
    hy = (nwy - 1) * stride + size if nwy else 0
    hx = (nwx - 1) * stride + size if nwx else 0
    nby, nbx = hy // g, hx // g
    nan_blocks = np.zeros((nby, nbx), dtype=np.int32)
    max_blocks = np.full((nby, nbx), np.nan, dtype=mosaic.image.dtype)
    mask_blocks = np.zeros((nby, nbx), dtype=np.int32)
    r = rms_step
    sub = np.empty((-(-ny // r), -(-nx // r)), dtype=np.float32)
    finite_grid = np.empty((-(-ny // EDGE_STEP), -(-nx // EDGE_STEP)), dtype=bool)

    unit = math.lcm(g, r, EDGE_STEP)
    rows_per_strip = max(unit, (_STRIP_BYTES // max(nx * mosaic.image.dtype.itemsize, 1)) // unit * unit)
    column_dtype = np.uint8 if g < 256 else np.int32

    def strips(starts: list[int]) -> None:
        buffer = np.empty((min(rows_per_strip, ny), nx), dtype=mosaic.image.dtype)
        in_island = np.empty(buffer.shape, dtype=bool)
        for a in starts:
            b = min(a + rows_per_strip, ny)
            data = mosaic.image.read_into(a, b, buffer[: b - a])
            sub[a // r : a // r + -(-(b - a) // r)] = data[::r, ::r]
            step_rows = data[::EDGE_STEP, ::EDGE_STEP]
            finite_grid[a // EDGE_STEP : a // EDGE_STEP + step_rows.shape[0]] = np.isfinite(step_rows)
            bb = min(b, hy)
            if bb <= a:
                continue
            block = data[: bb - a, :hx].reshape((bb - a) // g, g, nbx, g)
            rows = slice(a // g, bb // g)
            # max() propagates NaN, so one pass finds both the maxima and the blocks holding NaN; only
            # those (blanked borders) are counted and reduced NaN-aware. Reducing the row axis first
            # streams whole contiguous rows, several times faster than reducing axis 3 first.
            block_max = block.max(axis=1).max(axis=2)
            by, bx = np.nonzero(np.isnan(block_max))
            if len(by):
                blanked = block[by, :, bx, :]
                nan_blocks[rows][by, bx] = np.isnan(blanked).sum(axis=(1, 2), dtype=np.int32)
                block_max[by, bx] = np.fmax.reduce(np.fmax.reduce(blanked, axis=2), axis=1)
            max_blocks[rows] = block_max
            if mosaic.mask is not None:
                island = mosaic.mask.positive(a, bb, in_island[: bb - a])[:, :hx].view(np.uint8)
                per_column = np.add.reduce(
                    island.reshape((bb - a) // g, g, nbx, g), axis=1, dtype=column_dtype
                )
                mask_blocks[rows] = per_column.sum(axis=2, dtype=np.int32)

    starts = list(range(0, ny, rows_per_strip))
    # Threads share the memory map and write disjoint rows; NumPy releases the GIL in all of the above.
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(strips, [starts[t::threads] for t in range(threads)]))

    area = float(size * size)
    nan_fraction = _window_sums(nan_blocks, k, s, nwy, nwx) / area
    if nwy and nwx:
        peak = np.fmax.reduce(
            np.fmax.reduce(sliding_window_view(max_blocks, (k, k))[::s, ::s], axis=3), axis=2
        )
    else:
        peak = np.zeros((nwy, nwx))
    if mosaic.mask is not None:
        mask_fraction = _window_sums(mask_blocks, k, s, nwy, nwx) / area
    else:
        mask_fraction = np.full((nwy, nwx), np.nan)
    y0 = np.repeat(np.arange(nwy, dtype=np.int32) * stride, nwx)
    x0 = np.tile(np.arange(nwx, dtype=np.int32) * stride, nwy)
    centre = (size - 1) / 2.0
    per_side = -(-size // r)
    return GridWindows(
        y0=y0,
        x0=x0,
        nan_fraction=nan_fraction.astype(np.float32).ravel(),
        peak=peak.astype(np.float32).ravel(),
        mask_fraction=mask_fraction.astype(np.float32).ravel(),
        edge_distance=edge_distance(finite_grid, EDGE_STEP, y0 + centre, x0 + centre, (ny, nx)),
        rms_step=r,
        rms_windows=sliding_window_view(sub, (per_side, per_side)) if nwy and nwx else None,
        threads=threads,
    )


def coverage_grid(mosaic: Mosaic) -> np.ndarray:
    """``isfinite(image[::EDGE_STEP, ::EDGE_STEP])``, read strip by strip."""
    ny, nx = mosaic.shape
    rows_per_strip = max(EDGE_STEP, (_STRIP_BYTES // max(nx * mosaic.image.dtype.itemsize, 1)))
    rows_per_strip -= rows_per_strip % EDGE_STEP
    parts = [
        np.isfinite(mosaic.image.rows(a, min(a + rows_per_strip, ny))[::EDGE_STEP, ::EDGE_STEP])
        for a in range(0, ny, rows_per_strip)
    ]
    return np.concatenate(parts, axis=0)


def gathered_window_stats(
    mosaic: Mosaic,
    y0: np.ndarray,
    x0: np.ndarray,
    size: int,
    rms_step: int,
    finite_grid: np.ndarray,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """Statistics of windows at arbitrary positions, gathered in position-sorted batches.

    Parameters
    ----------
    mosaic
        Open mosaic.
    y0, x0
        Top-left corners (windows must lie inside the image).
    size
        Window size [px].
    rms_step
        Sub-grid step of the rms samples.
    finite_grid
        :func:`coverage_grid` of the mosaic (for ``edge_distance``).
    threads
        Threads over batches (results do not depend on it).

    Returns
    -------
    dict
        ``nan_fraction, peak, rms, mask_fraction, edge_distance`` (float32), in the order of ``y0``.
    """
    n = len(y0)
    out = {name: np.empty(n, dtype=np.float32) for name in ("nan_fraction", "peak", "rms", "mask_fraction")}
    order = np.lexsort((x0, y0))
    per_batch = max(1, _GATHER_PIXELS // (size * size))

    def batch(start: int) -> None:
        rows = order[start : start + per_batch]
        pixels = mosaic.image.gather(y0[rows], x0[rows], size)
        out["nan_fraction"][rows] = np.isnan(pixels).mean(axis=(1, 2))
        out["peak"][rows] = np.fmax.reduce(np.fmax.reduce(pixels, axis=2), axis=1)
        out["rms"][rows] = robust_rms(pixels[:, ::rms_step, ::rms_step].reshape(len(rows), -1))
        if mosaic.mask is not None:
            out["mask_fraction"][rows] = (mosaic.mask.gather(y0[rows], x0[rows], size) > 0).mean(axis=(1, 2))
        else:
            out["mask_fraction"][rows] = np.nan

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(batch, range(0, n, per_batch)))
    centre = (size - 1) / 2.0
    out["edge_distance"] = edge_distance(
        finite_grid, EDGE_STEP, np.asarray(y0) + centre, np.asarray(x0) + centre, mosaic.shape
    )
    return out
