"""Diagnostic plots of clusterings and subsamples (PNG, matplotlib's Agg canvas, no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from radio_curation.curation.kmeans import ClusterLevel, imbalance_factor


def _panels(n: int, width: float = 4.0, height: float = 3.2) -> tuple[Figure, list]:
    # Fixed margins: matplotlib's automatic layouts cost more than the clustering on small runs.
    fig = Figure(figsize=(width * n, height))
    fig.subplots_adjust(
        left=0.6 / (width * n), right=1 - 0.2 / (width * n), bottom=0.16, top=0.88, wspace=0.35
    )
    axes = fig.subplots(1, n, squeeze=False)[0]
    return fig, list(axes)


def plot_cluster_sizes(levels: Sequence[ClusterLevel], path: BinaryIO | str) -> None:
    """Histogram of cluster sizes (points under each cluster) per level, log-spaced bins."""
    fig, axes = _panels(len(levels))
    for i, (ax, level) in enumerate(zip(axes, levels, strict=True), start=1):
        sizes = level.sizes[level.sizes > 0]
        bins = np.geomspace(max(sizes.min(), 1), max(sizes.max(), 2), 30) if len(sizes) else 10
        ax.hist(sizes, bins=bins, color="tab:blue")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        empty = int((level.sizes == 0).sum())
        ax.set_title(f"level {i}: k={level.k}, imbalance {imbalance_factor(level.sizes):.2f}, {empty} empty")
        ax.set_xlabel("points per cluster")
        ax.set_ylabel("clusters")
    fig.savefig(path, dpi=100, format="png")


def plot_objective(levels: Sequence[ClusterLevel], path: BinaryIO | str) -> None:
    """k-means objective per iteration of each level's first k-means, and after each resampling step."""
    fig, axes = _panels(2)
    for i, level in enumerate(levels, start=1):
        axes[0].plot(np.arange(1, len(level.objective) + 1), level.objective, marker=".", label=f"level {i}")
        axes[1].plot(
            np.arange(len(level.resampling_objective)),
            level.resampling_objective,
            marker="o",
            label=f"level {i}",
        )
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("objective (training points)")
    axes[0].set_title("k-means objective per iteration")
    axes[1].set_xlabel("resampling step (0: first k-means)")
    axes[1].set_ylabel("objective (all points of the level)")
    axes[1].set_title("after resampling")
    for ax in axes:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.legend()
    fig.savefig(path, dpi=100, format="png")


def plot_sampling(before: Sequence[np.ndarray], after: Sequence[np.ndarray], path: BinaryIO | str) -> None:
    """Per level, cluster sizes ranked by size before sampling, before and after sampling."""
    fig, axes = _panels(len(before))
    for i, (ax, b, a) in enumerate(zip(axes, before, after, strict=True), start=1):
        order = np.argsort(b, kind="stable")[::-1]
        ranks = np.arange(1, len(b) + 1)
        ax.plot(ranks, b[order], label="pool")
        ax.plot(ranks, a[order], label="subsample")
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("cluster rank (by pool size)")
        ax.set_ylabel("rows")
        ax.set_title(f"level {i}")
        ax.legend()
    fig.savefig(path, dpi=100, format="png")
