"""PNG plots of the evaluations (matplotlib ``Figure`` objects, no global pyplot state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from astropy.visualization import AsinhStretch, ImageNormalize
from matplotlib.figure import Figure

#: Beyond this many categories a map gets no legend (colours cycle through ``tab20``).
MAX_LEGEND = 20


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    return path


def confusion_plot(
    matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str, dpi: int = 120
) -> Path:
    """Confusion matrix (rows: true class) with counts and row-normalised shading."""
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(1.2 + 0.9 * len(class_names), 1.0 + 0.9 * len(class_names)))
    ax = fig.add_subplot()
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path, dpi)


def spectrum_plot(spectra: Mapping[str, np.ndarray], path: Path, title: str, dpi: int = 120) -> Path:
    """Normalised singular-value spectra on a log scale (dimensional-collapse plot), one curve per set."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for name, values in spectra.items():
        s = np.asarray(values, dtype=np.float64)
        ax.semilogy(np.arange(1, len(s) + 1), np.maximum(s / max(s[0], 1e-30), 1e-12), label=name)
    ax.set_xlabel("singular value index")
    ax.set_ylabel("σ / σ₁ (centred features)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(spectra) > 1:
        ax.legend()
    return _save(fig, path, dpi)


def histogram_plot(
    samples: Mapping[str, np.ndarray], path: Path, title: str, xlabel: str, dpi: int = 120, bins: int = 50
) -> Path:
    """Overlaid density histograms of named samples (e.g. adjacent vs random pair distances)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    values = [np.asarray(v) for v in samples.values() if len(v)]
    edges = np.histogram_bin_edges(np.concatenate(values), bins=bins) if values else bins
    for name, v in samples.items():
        if len(v):
            ax.hist(v, bins=edges, density=True, alpha=0.5, label=f"{name} (n={len(v)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    # A fixed corner: matplotlib's "best" placement scans every bar and warns when that takes over a second.
    ax.legend(loc="upper right")
    return _save(fig, path, dpi)


def map_plot(
    coords: np.ndarray,
    colour: np.ndarray,
    path: Path,
    title: str,
    dpi: int = 150,
    highlight: np.ndarray | None = None,
    point_size: float | None = None,
) -> Path:
    """Scatter of 2-D map coordinates coloured by a categorical (str/int) or continuous (float) value.

    Parameters
    ----------
    coords : np.ndarray
        ``[N, 2]`` map coordinates.
    colour : np.ndarray
        ``[N]`` values; strings and integers are categories, floats use a colour scale.
    highlight : np.ndarray, optional
        ``[N]`` boolean; when given, the other points are drawn in light grey underneath as context.
    """
    coords = np.asarray(coords)
    colour = np.asarray(colour)
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    size = point_size if point_size is not None else float(np.clip(2e4 / max(len(coords), 1), 0.2, 20))
    shown = np.ones(len(coords), bool) if highlight is None else np.asarray(highlight, bool)
    if highlight is not None:
        ax.scatter(*coords[~shown].T, s=size, c="0.85", linewidths=0, rasterized=True, label="pool")
    if colour.dtype.kind == "f":
        points = ax.scatter(*coords[shown].T, s=size, c=colour[shown], cmap="viridis", linewidths=0)
        fig.colorbar(points, ax=ax)
    else:
        categories, codes = np.unique(colour[shown].astype(str), return_inverse=True)
        palette = np.array([_tab20(i) for i in range(len(categories))])
        ax.scatter(*coords[shown].T, s=size, c=palette[codes], linewidths=0, rasterized=True)
        if len(categories) <= MAX_LEGEND:
            for i, name in enumerate(categories):
                ax.scatter([], [], s=20, color=palette[i], label=name)
    if ax.get_legend_handles_labels()[0]:
        # Beside the axes: "best" would scan every point of a large map (slow, and it hides no point).
        ax.legend(markerscale=1, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return _save(fig, path, dpi)


def _tab20(i: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20)


def bar_plot(
    groups: Mapping[str, Mapping[str, float]],
    path: Path,
    title: str,
    ylabel: str,
    dpi: int = 120,
    log: bool = False,
) -> Path:
    """Grouped bars: ``groups[set_name][category] = value`` (e.g. cluster coverage per level per set).

    With ``log``, the value axis is logarithmic (shares of 0.78 and 0.003 side by side), and a value of 0,
    which a log axis cannot draw, is written as "0" at the foot of its bar.
    """
    set_names = list(groups)
    categories = sorted({c for g in groups.values() for c in g})
    fig = Figure(figsize=(max(5, 0.8 * len(categories) * len(set_names) / 2 + 2), 4))
    ax = fig.add_subplot()
    width = 0.8 / max(len(set_names), 1)
    x = np.arange(len(categories))
    values = {name: np.array([groups[name].get(c, 0.0) for c in categories]) for name in set_names}
    positive = np.concatenate([v[v > 0] for v in values.values()] + [np.ones(1)])
    floor = 10 ** np.floor(np.log10(positive.min()) - 0.5)
    for i, name in enumerate(set_names):
        heights = values[name]
        ax.bar(x + i * width, np.where(heights > 0, heights, np.nan) if log else heights, width, label=name)
        if log:
            for xi in x[heights <= 0]:
                ax.text(xi + i * width, floor, "0", ha="center", va="bottom", fontsize="small")
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    ax.set_xticks(x + width * (len(set_names) - 1) / 2, labels=categories, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return _save(fig, path, dpi)


def _radio_norm(img: np.ndarray) -> ImageNormalize:
    """From the median (noise below it black) to the peak, but at least 20 robust σ, asinh-stretched.

    The floor on the range keeps noise-only windows dim instead of stretching noise to full contrast.
    """
    low = float(np.median(img))
    sigma = float(1.4826 * np.median(np.abs(img - low)))
    high = max(float(img.max()), low + 20.0 * sigma, low + 1e-12)
    return ImageNormalize(vmin=low, vmax=high, stretch=AsinhStretch(0.1), clip=True)


def image_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]],
    path: Path,
    title: str,
    dpi: int = 100,
    cell: float = 1.2,
) -> Path:
    """Rows of images, each row labelled (e.g. a query and its nearest neighbours, a cluster's exemplars).

    Parameters
    ----------
    rows : sequence of (label, images)
        ``images`` is a sequence of ``[H, W]`` or ``[1, H, W]`` arrays (sizes may differ); each image gets
        its own stretch (:func:`_radio_norm`).
    """
    ncols = max((len(images) for _, images in rows), default=1)
    fig = Figure(figsize=(cell * ncols + 1.5, cell * max(len(rows), 1) + 0.6))
    axes = fig.subplots(max(len(rows), 1), ncols, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                img = np.nan_to_num(np.asarray(images[c], dtype=np.float32).reshape(images[c].shape[-2:]))
                ax.imshow(img, origin="lower", cmap="inferno", norm=_radio_norm(img))
            else:
                ax.set_axis_off()
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    fig.suptitle(title)
    return _save(fig, path, dpi)
