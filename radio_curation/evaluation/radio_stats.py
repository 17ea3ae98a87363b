"""A hand-made radio-statistics vector per window: the baseline a learned representation has to beat.

What a radio astronomer would compute from a window without any model: noise, peak signal-to-noise,
flux and area above the noise, shape moments of the emission, how many separate islands it breaks into
and how concentrated it is. Features that cannot beat these numbers have learned nothing useful.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Names of the columns :func:`radio_statistics` returns, in order.
STATISTICS = (
    "log_rms",
    "log_peak_snr",
    "log_flux_3sigma",
    "log_area_3sigma",
    "log_area_5sigma",
    "log_major",
    "axis_ratio",
    "islands_3sigma",
    "log_largest_island",
    "central_fraction",
    "centroid_offset",
    "skewness",
)

MAD_TO_SIGMA = 1.4826


def _window_statistics(x: np.ndarray) -> list[float]:
    size = x.shape[-1]
    med = float(np.median(x))
    rms = MAD_TO_SIGMA * float(np.median(np.abs(x - med))) or 1e-12
    snr = (x - med) / rms
    above3, above5 = snr > 3.0, snr > 5.0
    flux = np.where(above3, snr, 0.0)
    total = float(flux.sum())
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    if total > 0:
        cy, cx = float((flux * yy).sum() / total), float((flux * xx).sum() / total)
        dy, dx = yy - cy, xx - cx
        cov = (
            np.array(
                [
                    [(flux * dx * dx).sum(), (flux * dx * dy).sum()],
                    [(flux * dx * dy).sum(), (flux * dy * dy).sum()],
                ]
            )
            / total
        )
        minor, major = np.sqrt(np.clip(np.linalg.eigvalsh(cov), 0.0, None))
        axis_ratio = float(minor / major) if major > 0 else 1.0
    else:
        cy = cx = 0.0
        major, axis_ratio = 0.0, 1.0
    labels, n_islands = ndimage.label(above3)
    largest = int(np.bincount(labels.ravel())[1:].max()) if n_islands else 0
    quarter = size // 4
    central = float(flux[quarter:-quarter, quarter:-quarter].sum() / total) if total > 0 else 0.0
    centred = snr.ravel()
    skew = float(np.mean(centred**3) / max(np.mean(centred**2), 1e-12) ** 1.5)
    return [
        np.log10(rms),
        np.log10(max(float(snr.max()), 1e-3)),
        np.log10(1.0 + total),
        np.log10(1.0 + float(above3.sum())),
        np.log10(1.0 + float(above5.sum())),
        np.log10(1.0 + float(major)),
        axis_ratio,
        float(n_islands),
        np.log10(1.0 + largest),
        central,
        float(np.hypot(cx, cy)) / size,
        skew,
    ]


def radio_statistics(windows: np.ndarray) -> np.ndarray:
    """The :data:`STATISTICS` of every window of ``windows`` ``[N, (1,) S, S]`` (raw Jy/beam, no NaN).

    Returns
    -------
    np.ndarray
        ``[N, len(STATISTICS)]`` float32.
    """
    windows = np.asarray(windows, dtype=np.float64)
    windows = windows.reshape(len(windows), windows.shape[-2], windows.shape[-1])
    return np.array([_window_statistics(w) for w in windows], dtype=np.float32).reshape(-1, len(STATISTICS))
