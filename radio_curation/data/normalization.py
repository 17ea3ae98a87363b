"""Radio image normalisations as batched torch modules (``[B, C, H, W]`` → ``[B, C, H, W]``).

Two families, both computed per cutout on whatever device the batch is on:

- :class:`Standardize`: ``(x - mean) / std`` with fixed statistics (ImageNet's 0.45/0.225 on one
  channel, the LoTSS DR2 pixel statistics 2e-5/3e-3 Jy/beam) or each cutout's own.
- :class:`IntervalStretch`: the astropy.visualization recipe — an interval gives each cutout's
  ``(vmin, vmax)``, values are scaled to ``[0, 1]`` and clipped, then a stretch is applied. The intervals
  and stretches below reproduce :mod:`astropy.visualization`'s definitions (``MinMaxInterval``,
  ``PercentileInterval``, ``ZScaleInterval``, ``AsinhStretch`` ...) and
  :func:`astropy.stats.sigma_clipped_stats`, vectorised over the batch.

Inputs are expected finite (the window reader fills NaNs); a cutout whose interval is empty
(``vmax == vmin``, e.g. a constant cutout) maps to zeros.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radio_curation.errors import RadioCurationError


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def _sorted_percentile(sorted_values: Tensor, percent: float) -> Tensor:
    """``np.percentile`` (linear interpolation) of each row of an ascending-sorted ``[B, N]`` tensor."""
    n = sorted_values.shape[1]
    position = percent / 100.0 * (n - 1)
    lo = math.floor(position)
    hi = min(lo + 1, n - 1)
    frac = position - lo
    return sorted_values[:, lo] + (sorted_values[:, hi] - sorted_values[:, lo]) * frac


def _range_median_std(
    ordered: Tensor, start: Tensor, end: Tensor, prefix: Tensor, prefix_sq: Tensor
) -> tuple[Tensor, Tensor]:
    """Median (numpy's, averaging the two middle values) and std (ddof 0) of ``ordered[b, start:end]``.

    ``ordered`` is sorted ascending per row; ``prefix``/``prefix_sq`` are the cumulative sums of it and
    of its square with a leading zero column, so each statistic costs O(1) per row.
    """
    count = (end - start).clamp(min=1)
    low = (start + (count - 1) // 2).unsqueeze(1)
    high = (start + count // 2).unsqueeze(1)
    median = 0.5 * (ordered.gather(1, low) + ordered.gather(1, high)).squeeze(1)
    n = count.to(ordered.dtype)
    total = prefix.gather(1, end.unsqueeze(1)).squeeze(1) - prefix.gather(1, start.unsqueeze(1)).squeeze(1)
    total_sq = prefix_sq.gather(1, end.unsqueeze(1)).squeeze(1) - prefix_sq.gather(
        1, start.unsqueeze(1)
    ).squeeze(1)
    mean = total / n
    return median, (total_sq / n - mean * mean).clamp(min=0).sqrt()


class Interval(nn.Module, ABC):
    """Per-cutout display limits: :meth:`limits` maps ``[B, N]`` values to ``(vmin [B], vmax [B])``."""

    @abstractmethod
    def limits(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """The ``(vmin, vmax)`` of each row of ``values``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Scale each cutout of ``x`` ``[B, ...]`` to ``[0, 1]`` between its limits and clip."""
        vmin, vmax = self.limits(_flat(x))
        vmin, vmax = _per_sample(vmin, x), _per_sample(vmax, x)
        span = vmax - vmin
        spread = span > 0
        # One new tensor, then in place: the same arithmetic as out-of-place ops, a third of the memory traffic.
        scaled = torch.sub(x, vmin).div_(torch.where(spread, span, 1.0))
        # On a GPU reading `spread` back would stall the stream; on the CPU it spares a pass when every cutout
        # has an interval (the usual case).
        if x.device.type != "cpu" or not bool(spread.all()):
            scaled.masked_fill_(~spread, 0.0)
        return scaled.clamp_(0.0, 1.0)


class MinMaxInterval(Interval):
    """The cutout's minimum and maximum (``astropy.visualization.MinMaxInterval``)."""

    def limits(self, values: Tensor) -> tuple[Tensor, Tensor]:
        return values.amin(dim=1), values.amax(dim=1)


class SymmetricInterval(Interval):
    """``±`` the cutout's largest absolute value, so zero flux maps to 0.5 and the noise stays centred there.

    The rescale of the fixed-offset normalisations (``imagenet``, ``mean05std05``, ``mean05std0225``):
    subtracting 0.45 or 0.5 then brings the sky background back to about zero, where bfloat16/float16 are
    finest, whereas after :class:`MinMaxInterval` the noise of a window with a bright source sits near 0
    and the offset moves it to about -2, where bfloat16's step (0.0156) exceeds the noise.
    """

    def limits(self, values: Tensor) -> tuple[Tensor, Tensor]:
        peak = values.abs().amax(dim=1)
        return -peak, peak


class ManualInterval(Interval):
    """Fixed limits for every cutout, e.g. in Jy/beam (``astropy.visualization.ManualInterval``)."""

    def __init__(self, vmin: float, vmax: float) -> None:
        super().__init__()
        if not vmax > vmin:
            raise RadioCurationError(f"ManualInterval needs vmax > vmin, got vmin={vmin}, vmax={vmax}")
        self.vmin, self.vmax = float(vmin), float(vmax)

    def limits(self, values: Tensor) -> tuple[Tensor, Tensor]:
        b = values.shape[0]
        return values.new_full((b,), self.vmin), values.new_full((b,), self.vmax)


class AsymmetricPercentileInterval(Interval):
    """Percentiles of the cutout (``astropy.visualization.AsymmetricPercentileInterval``)."""

    def __init__(self, lower_percentile: float, upper_percentile: float) -> None:
        super().__init__()
        if not 0.0 <= lower_percentile < upper_percentile <= 100.0:
            raise RadioCurationError(
                "percentiles must satisfy 0 <= lower < upper <= 100, got "
                f"lower={lower_percentile}, upper={upper_percentile}"
            )
        self.lower_percentile = float(lower_percentile)
        self.upper_percentile = float(upper_percentile)

    def limits(self, values: Tensor) -> tuple[Tensor, Tensor]:
        ordered = values.sort(dim=1).values
        return (
            _sorted_percentile(ordered, self.lower_percentile),
            _sorted_percentile(ordered, self.upper_percentile),
        )


class PercentileInterval(AsymmetricPercentileInterval):
    """The central ``percentile`` % of the cutout (``astropy.visualization.PercentileInterval``)."""

    def __init__(self, percentile: float) -> None:
        tail = (100.0 - float(percentile)) / 2.0
        super().__init__(tail, 100.0 - tail)


class ZScaleInterval(Interval):
    """IRAF's zscale, as ``astropy.visualization.ZScaleInterval`` computes it, for a whole batch.

    A line is fitted to the sorted sample of each cutout with iterative k-sigma rejection (rejected
    pixels dilated by 1 % of the sample); the limits are the median ± the fitted slope / ``contrast``
    across the sample, bounded by the sample's extremes. The fit runs in float64 like numpy's.
    """

    def __init__(
        self,
        n_samples: int = 1000,
        contrast: float = 0.25,
        max_reject: float = 0.5,
        min_npixels: int = 5,
        krej: float = 2.5,
        max_iterations: int = 5,
    ) -> None:
        super().__init__()
        self.n_samples = int(n_samples)
        self.contrast = float(contrast)
        self.max_reject = float(max_reject)
        self.min_npixels = int(min_npixels)
        self.krej = float(krej)
        self.max_iterations = int(max_iterations)

    def limits(self, values: Tensor) -> tuple[Tensor, Tensor]:
        stride = int(max(1.0, values.shape[1] / self.n_samples))
        samples = values[:, ::stride][:, : self.n_samples].sort(dim=1).values.double()
        batch, npix = samples.shape
        vmin, vmax = samples[:, 0], samples[:, -1]
        minpix = max(self.min_npixels, int(npix * self.max_reject))
        x = torch.arange(npix, dtype=samples.dtype, device=samples.device)
        ngrow = max(1, int(npix * 0.01))
        pad = (ngrow - 1 - (ngrow - 1) // 2, (ngrow - 1) // 2)

        badpix = torch.zeros_like(samples, dtype=torch.bool)
        ngood = torch.full((batch,), npix, device=samples.device)
        last_ngood = torch.full((batch,), npix + 1, device=samples.device)
        slope = torch.zeros(batch, dtype=samples.dtype, device=samples.device)
        active = torch.ones(batch, dtype=torch.bool, device=samples.device)
        for _ in range(self.max_iterations):
            active &= (ngood < last_ngood) & (ngood >= minpix)
            if not bool(active.any()):
                break
            weight = (~badpix).to(samples.dtype)
            sw, sx, sy = weight.sum(1), (weight * x).sum(1), (weight * samples).sum(1)
            sxx, sxy = (weight * x * x).sum(1), (weight * x * samples).sum(1)
            fit_slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
            intercept = (sy - fit_slope * sx) / sw
            flat = samples - (fit_slope.unsqueeze(1) * x + intercept.unsqueeze(1))
            good_mean = (weight * flat).sum(1) / sw
            good_std = ((weight * (flat - good_mean.unsqueeze(1)) ** 2).sum(1) / sw).sqrt()
            threshold = (self.krej * good_std).unsqueeze(1)
            rejected = badpix | (flat < -threshold) | (flat > threshold)
            grown = F.max_pool1d(F.pad(rejected.double().unsqueeze(1), pad), ngrow, stride=1).squeeze(1) > 0
            step = active.unsqueeze(1)
            badpix = torch.where(step, grown, badpix)
            last_ngood = torch.where(active, ngood, last_ngood)
            ngood = torch.where(active, (~badpix).sum(1), ngood)
            slope = torch.where(active, fit_slope, slope)

        if self.contrast > 0:
            slope = slope / self.contrast
        center = (npix - 1) // 2
        median = 0.5 * (samples[:, (npix - 1) // 2] + samples[:, npix // 2])
        fitted = ngood >= minpix
        low = torch.where(fitted, torch.maximum(vmin, median - (center - 1) * slope), vmin)
        high = torch.where(fitted, torch.minimum(vmax, median + (npix - center) * slope), vmax)
        return low.to(values.dtype), high.to(values.dtype)


class SigmaClipInterval(Interval):
    """Limits from the cutout's sigma-clipped background, the radio "clip below k sigma" convention.

    ``median`` and ``std`` are :func:`astropy.stats.sigma_clipped_stats` (``sigma``, ``maxiters``, median
    centre, ddof-0 std). ``vmin = median + vmin_sigma * std`` (3: pixels below 3 sigma of the noise go to
    0); ``vmax = median + vmax_sigma * std``, or the cutout's maximum when ``vmax_sigma`` is None.
    """

    def __init__(
        self, sigma: float = 3.0, maxiters: int = 5, vmin_sigma: float = 3.0, vmax_sigma: float | None = None
    ) -> None:
        super().__init__()
        self.sigma = float(sigma)
        self.maxiters = int(maxiters)
        self.vmin_sigma = float(vmin_sigma)
        self.vmax_sigma = None if vmax_sigma is None else float(vmax_sigma)

    def clipped_stats(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """The sigma-clipped ``(median, std)`` of each row (float64).

        Clipping keeps the values between two bounds, so the kept set is always a contiguous run of the
        sorted row: one sort, then each iteration only moves the run's ends.
        """
        ordered = values.double().sort(dim=1).values
        batch, n = ordered.shape
        # Centring on the row's middle value keeps the running sums of squares well conditioned.
        offset = ordered[:, n // 2].clone()
        ordered = ordered - offset.unsqueeze(1)
        zero = ordered.new_zeros(batch, 1)
        prefix = torch.cat([zero, ordered.cumsum(dim=1)], dim=1)
        prefix_sq = torch.cat([zero, (ordered * ordered).cumsum(dim=1)], dim=1)
        start = torch.zeros(batch, dtype=torch.long, device=ordered.device)
        end = torch.full_like(start, n)
        for _ in range(self.maxiters):
            median, std = _range_median_std(ordered, start, end, prefix, prefix_sq)
            low = (median - self.sigma * std).unsqueeze(1)
            high = (median + self.sigma * std).unsqueeze(1)
            new_start = torch.maximum(start, torch.searchsorted(ordered, low, side="left").squeeze(1))
            new_end = torch.minimum(end, torch.searchsorted(ordered, high, side="right").squeeze(1))
            new_end = torch.maximum(new_end, new_start)
            changed = bool(((new_start != start) | (new_end != end)).any())
            start, end = new_start, new_end
            if not changed:
                break
        median, std = _range_median_std(ordered, start, end, prefix, prefix_sq)
        return median + offset, std

    def limits(self, values: Tensor) -> tuple[Tensor, Tensor]:
        median, std = self.clipped_stats(values)
        low = median + self.vmin_sigma * std
        high = values.double().amax(dim=1) if self.vmax_sigma is None else median + self.vmax_sigma * std
        return low.to(values.dtype), high.to(values.dtype)


class Stretch(nn.Module):
    """A monotonic map of ``[0, 1]`` onto ``[0, 1]`` (``astropy.visualization`` stretches)."""


class LinearStretch(Stretch):
    """``y = x``."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class SqrtStretch(Stretch):
    """``y = sqrt(x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sqrt()


class LogStretch(Stretch):
    """``y = log(a x + 1) / log(a + 1)`` (``astropy.visualization.LogStretch``, default ``a = 1000``)."""

    def __init__(self, a: float = 1000.0) -> None:
        super().__init__()
        if a <= 0:
            raise RadioCurationError(f"LogStretch needs a > 0, got {a}")
        self.a = float(a)

    def forward(self, x: Tensor) -> Tensor:
        return torch.log1p(self.a * x) / math.log1p(self.a)


class AsinhStretch(Stretch):
    """``y = asinh(x / a) / asinh(1 / a)`` (``astropy.visualization.AsinhStretch``, default ``a = 0.1``)."""

    def __init__(self, a: float = 0.1) -> None:
        super().__init__()
        if a <= 0:
            raise RadioCurationError(f"AsinhStretch needs a > 0, got {a}")
        self.a = float(a)

    def forward(self, x: Tensor) -> Tensor:
        return torch.asinh(x / self.a) / math.asinh(1.0 / self.a)


class IntervalStretch(nn.Module):
    """``stretch(clip((x - vmin) / (vmax - vmin), 0, 1))`` per cutout, as ``ImageNormalize`` does.

    Parameters
    ----------
    interval
        Gives each cutout's ``(vmin, vmax)``.
    stretch
        Applied after scaling to ``[0, 1]``; linear when None.
    """

    def __init__(self, interval: Interval, stretch: Stretch | None = None) -> None:
        super().__init__()
        self.interval = interval
        self.stretch = stretch if stretch is not None else LinearStretch()

    def forward(self, x: Tensor) -> Tensor:
        return self.stretch(self.interval(x.float()))


class Standardize(nn.Module):
    """``(x - mean) / std``, with fixed statistics or, where one is None, each cutout's own.

    Parameters
    ----------
    mean, std
        Fixed values (``imagenet``: 0.45 / 0.225; ``zscore`` LoTSS DR2 defaults: 2e-5 / 3e-3 Jy/beam), or
        None for the cutout's own mean / standard deviation (a cutout with zero spread maps to zeros).
    rescale
        An interval applied first, bringing each cutout to ``[0, 1]`` (the range statistics such as
        ImageNet's describe): :class:`SymmetricInterval` for the fixed-offset configs, so zero flux lands
        near zero after the offset. None applies the statistics to the values as they are: right for
        Jy/beam statistics (``zscore``), but an offset such as 0.45 on raw Jy/beam pixels (~1e-4) leaves a
        window at -2.000 ± 0.002, which a bfloat16 model sees as one or two distinct values.
    """

    def __init__(self, mean: float | None, std: float | None, rescale: Interval | None = None) -> None:
        super().__init__()
        if std is not None and std <= 0:
            raise RadioCurationError(f"Standardize needs std > 0, got {std}")
        self.mean = None if mean is None else float(mean)
        self.std = None if std is None else float(std)
        self.rescale = rescale

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        if self.rescale is not None:
            x = self.rescale(x)
        flat = _flat(x)
        mean = _per_sample(flat.mean(dim=1), x) if self.mean is None else self.mean
        # One new tensor, then in place (the same arithmetic as out-of-place ops).
        centred = torch.sub(x, mean)
        if self.std is not None:
            return centred.div_(self.std)
        std = _per_sample(flat.std(dim=1, correction=0), x)
        spread = std > 0
        return centred.div_(torch.where(spread, std, 1.0)).masked_fill_(~spread, 0.0)
