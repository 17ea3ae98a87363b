"""Batched, on-device view generation for self-supervised training on radio cutouts.

Every random choice is drawn per image, but the work is done on whole batches with a handful of tensor
operations (one ``grid_sample`` per view for crop + rotation + flip, two batched matrix products with
per-image banded matrices for blur, FFTs for the beam-correlated noise), so the augmentation runs on the
accelerator next to the model, or in the DataLoader workers on CPUs, never per sample.

The order of operations for each view is::

    raw window [B, 1, S, S] (Jy/beam)
      -> random resized crop (scale range, ratio 1) + rotation by any angle + flip  -> [B, 1, s, s]
      -> Gaussian blur (random sigma)
      -> additive beam-correlated Gaussian noise (a random fraction of the view's robust rms)
      -> the normalisation group's module (per view, so per-cutout normalisations see the crop)
      -> contrast-only jitter around the view's mean
      -> 1 -> ``in_chans`` channels (identical channels: there is no colour, so no hue/saturation jitter)

Two radio-specific rules keep the views free of artefacts a model could learn instead of morphology:

- A rotated crop never reaches outside the window. With rotation on, crops are cut from the centred square
  that stays inside the window at every angle (side S/√2), so no corner is filled by padding: reflection
  padding would fill up to ~17 % of a view with mirrored sky and create symmetric fake sources.
- Added noise is correlated over the beam, like the sky's own noise (white per-pixel noise would be a
  texture no real window has, and trivially tells views apart).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radio_curation.errors import RadioCurationError

#: Scale of the median absolute deviation that makes it a consistent estimator of a Gaussian's sigma.
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class CropParams:
    """Per-image geometric parameters of one batch of views (all tensors of shape ``[B]``).

    Attributes
    ----------
    scale
        Area of the crop as a fraction of the largest square the view may cover: the window itself, or with
        rotation the centred square of side S/√2 that stays inside the window at every angle.
    angle
        Rotation in radians.
    flip
        ``-1`` for a mirrored view, ``+1`` otherwise.
    cx, cy
        Centre of the crop in normalised window coordinates (``[-1, 1]``).
    side
        Side of the crop as a fraction of the window's side (``√scale``, or ``√(scale / 2)`` with rotation).
    """

    scale: Tensor
    angle: Tensor
    flip: Tensor
    cx: Tensor
    cy: Tensor
    side: Tensor


def batch_seed(seed: int, epoch: int, rank: int, batch: int) -> int:
    """Seed of the random views of one batch: a function of where the batch is in training only."""
    return int(np.random.SeedSequence([seed, epoch, rank, batch]).generate_state(1, np.uint64)[0] >> 1)


def views_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (from :func:`batch_seed`) for the views of one batch."""
    return torch.Generator(device=device).manual_seed(seed)


def _check_range(name: str, values: Sequence[float], low: float, high: float) -> tuple[float, float]:
    lo, hi = (float(v) for v in values)
    if not (low <= lo <= hi <= high):
        raise RadioCurationError(
            f"augmentation.{name}={[lo, hi]} must satisfy {low} <= min <= max <= {high}."
        )
    return lo, hi


def _uniform(
    n: int, low: float, high: float, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    return torch.rand(n, device=device, generator=generator) * (high - low) + low


def sample_crop_params(
    n: int,
    scale: Sequence[float],
    rotate: bool,
    flip: bool,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> CropParams:
    """Draw random resized crop (ratio 1), rotation and flip parameters for ``n`` images.

    Parameters
    ----------
    n
        Number of images.
    scale
        ``(min, max)`` crop area as a fraction of the largest allowed square (the window, or with ``rotate``
        the centred square of side S/√2); drawn uniformly in area, as
        ``torchvision.transforms.RandomResizedCrop`` does.
    rotate
        Rotate by an angle drawn uniformly in ``[0, 2π)``; otherwise 0. The crop then spans at most
        S/√2 of the window's side S, so that at any angle it lies inside the window.
    flip
        Mirror half of the images.
    device
        Where the parameters live.
    generator
        Random number generator on ``device`` (None: torch's global one).

    Returns
    -------
    CropParams
        The parameters; the crop centre is drawn so that the crop, rotated by any angle, lies inside the
        window.
    """
    device = torch.device(device)
    g = generator
    area = _uniform(n, float(scale[0]), float(scale[1]), device, g)
    # A square of half-side h rotated by any angle stays within the disc of radius h√2, so crops of side
    # √(area/2) keep every rotation inside the window and no padding ever enters a view.
    side = (area / 2).sqrt() if rotate else area.sqrt()
    reach = side * math.sqrt(2) if rotate else side
    angle = _uniform(n, 0.0, 2 * math.pi, device, g) if rotate else torch.zeros(n, device=device)
    mirror = (
        torch.where(torch.rand(n, device=device, generator=g) < 0.5, -1.0, 1.0)
        if flip
        else torch.ones(n, device=device)
    )
    cx = (torch.rand(n, device=device, generator=g) * 2 - 1) * (1 - reach)
    cy = (torch.rand(n, device=device, generator=g) * 2 - 1) * (1 - reach)
    return CropParams(scale=area, angle=angle, flip=mirror, cx=cx, cy=cy, side=side)


def crop_rotate_flip(x: Tensor, params: CropParams, size: int, mode: str = "bilinear") -> Tensor:
    """Apply per-image crop, rotation and flip to a batch with one ``grid_sample`` call.

    Parameters
    ----------
    x
        Images ``[B, C, H, W]``.
    params
        Per-image parameters (see :func:`sample_crop_params`).
    size
        Side of the square output in pixels.
    mode
        Interpolation, ``bilinear`` or ``nearest``.

    Returns
    -------
    Tensor
        ``[B, C, size, size]``.
    """
    side = params.side.to(x.dtype)
    cos, sin = params.angle.cos().to(x.dtype), params.angle.sin().to(x.dtype)
    f = params.flip.to(x.dtype)
    # Output coordinates (u, v) in [-1, 1] map to input coordinates side * R(angle) @ (f * u, v) + centre.
    # The sampling grid holds (x, y) pairs, so it is built as complex numbers x + iy: the image of u (a
    # column's pixel centre) plus that of v (a row's) plus the centre, one broadcast sum, as F.affine_grid
    # gives it (to rounding) without its [B, H*W, 3] @ [B, 3, 2] product.
    centres = (torch.arange(size, device=x.device, dtype=x.dtype) * 2 + 1) / size - 1
    along_u = torch.complex(side * cos * f, side * sin * f)
    along_v = torch.complex(-side * sin, side * cos)
    centre = torch.complex(params.cx.to(x.dtype), params.cy.to(x.dtype))
    columns = along_u[:, None, None] * centres[None, None, :]
    rows = centre[:, None, None] + along_v[:, None, None] * centres[None, :, None]
    grid = torch.view_as_real(columns + rows)  # [B, size, size, 2]
    # Crops from sample_crop_params stay inside the window; "border" only guards against rounding there.
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


def blur_matrices(sigma: Tensor, n: int, radius: int) -> Tensor:
    """``[B, n, n]`` matrices applying a 1-D Gaussian of ``sigma`` ``[B]`` px over ``n`` samples, edges reflected.

    Row ``i`` holds the kernel (``2 * radius + 1`` taps, normalised to sum 1) centred on ``i``, with the taps
    that fall outside folded back as reflection padding (``F.pad(mode="reflect")``) would place them.
    """
    if radius >= n:
        raise RadioCurationError(
            f"a blur of radius {radius} px needs images larger than {radius} px; they have {n} px."
        )
    offsets = torch.arange(-radius, radius + 1, device=sigma.device)
    s = sigma.clamp_min(1e-3)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None, :].to(s.dtype) / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # [B, K]
    # Taps below 1e-15 change no float32 sum of the ~1e-4 Jy/beam pixels they weigh, but can be (or make)
    # subnormal numbers, which CPUs multiply tens of times slower.
    kernel = kernel.masked_fill(kernel < 1e-15, 0.0)
    taps = torch.arange(n, device=sigma.device)[:, None] + offsets[None, :]  # [n, K]
    taps = torch.where(taps < 0, -taps, torch.where(taps >= n, 2 * (n - 1) - taps, taps))
    b, k = kernel.shape
    matrices = kernel.new_zeros(b, n, n)
    return matrices.scatter_add_(2, taps.expand(b, n, k), kernel[:, None, :].expand(b, n, k))


def gaussian_blur(x: Tensor, sigma: Tensor, max_sigma: float) -> Tensor:
    """Blur each image of a batch with its own Gaussian width (separable, edges reflected).

    The two 1-D passes are products with per-image banded matrices (:func:`blur_matrices`): the same linear
    map as a reflection-padded grouped convolution, done as two batched matrix products, which CPUs run
    several times faster than a convolution with one group per image.

    Parameters
    ----------
    x
        Images ``[B, C, H, W]``.
    sigma
        Per-image standard deviation in pixels ``[B]``; 0 leaves the image unchanged.
    max_sigma
        Largest sigma that can occur; sets the kernel size (``2 * ceil(3 * max_sigma) + 1``).

    Returns
    -------
    Tensor
        The blurred images, same shape; edges are reflected.
    """
    h, w = x.shape[-2:]
    radius = max(1, math.ceil(3 * max_sigma))
    sigma = sigma.to(x.dtype)
    down = blur_matrices(sigma, h, radius)[:, None]  # [B, 1, H, H]: mixes rows
    across = down if w == h else blur_matrices(sigma, w, radius)[:, None]
    return down @ x @ across.transpose(-1, -2)


#: The FFT noise fields' bounds, for a tolerance of 1e-6: a Gaussian beam of sigma σ px correlates noise by
#: ``exp(-d² / 4σ²)``, below 1e-6 beyond ``d = 2 * NOISE_REACH * σ``; its noise has a fraction
#: ``2 erfc(NOISE_BAND)`` < 1e-6 of its power beyond the frequency ``NOISE_BAND / (2πσ)`` (cycles/px).
NOISE_REACH = 3.72
NOISE_BAND = 3.57


def noise_grids(size: int, sigma_range: Sequence[float]) -> tuple[int, int]:
    """Sides ``(period, white)`` of the FFT grids of :func:`correlate_noise` for beams in ``sigma_range`` px.

    The field is periodic over ``period`` px, so it is made larger than the ``size`` px it is cropped to by
    the widest beam's reach (:data:`NOISE_REACH`): no two pixels of the crop are correlated through the
    period. Its spectrum is drawn as the Fourier transform of white noise on a ``white`` × ``white`` grid,
    which holds the frequencies where the narrowest beam leaves power (:data:`NOISE_BAND`); ``white ==
    period`` is the full grid. Sides are multiples of 16, which FFTs like.
    """
    lo, hi = (float(v) for v in sigma_range)
    period = 16 * math.ceil((size + 2 * NOISE_REACH * hi) / 16)
    half = math.ceil(NOISE_BAND / (2 * math.pi * lo) * period) + 1 if lo > 0 else period
    return period, min(period, 16 * math.ceil(2 * half / 16))


def periodic_beam_spectrum(sigma: Tensor, period: int) -> Tensor:
    """``[B, period]`` discrete Fourier transforms of Gaussians of ``sigma`` ``[B]`` px sampled on a ring."""
    n = torch.arange(period, device=sigma.device, dtype=sigma.dtype)
    distance = torch.minimum(n, period - n)
    kernel = torch.exp(-0.5 * (distance[None, :] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    return torch.fft.fft(kernel / kernel.sum(dim=1, keepdim=True)).real


def correlate_noise(
    white: Tensor, sigma: Tensor, size: int, period: int, rms: Tensor | None = None
) -> Tensor:
    """Fields ``[n, 1, size, size]`` of rms ``rms`` ``[n]`` (None: 1), correlated over beams of ``sigma`` ``[n]`` px.

    Each is white noise convolved with its beam (as a radio image's noise is), made by FFT: the spectrum of
    ``white`` (``[n, 1, m, m]`` standard normal draws, :func:`noise_grids`' ``white`` side) times the beam's
    transfer function is the low-frequency part of that of white noise on the ``period`` grid (the rest
    carries no power above the tolerance), whose inverse transform is cropped to ``size``. The result is a
    stationary Gaussian field with the beam's correlation, without edge effects: the same for every pixel
    of the view. Each field is then rescaled to its rms (the standard deviation of its pixels).
    """
    m = white.shape[-1]
    beam = periodic_beam_spectrum(sigma.to(white.dtype), period)[:, None]  # [n, 1, period]
    spectrum = torch.fft.rfft2(white)
    if m == period:
        spectrum = spectrum * beam[..., :, None] * beam[..., None, : period // 2 + 1]
        field = torch.fft.irfft2(spectrum, s=(period, period))[..., :size, :size]
    else:
        # White noise's spectrum on the m grid is, to a constant, the |k| < m/2 part of that on the period
        # grid (its Nyquist row and column, which the period grid has no counterpart of, are left out).
        half = m // 2
        rows = torch.cat([beam[..., :half], beam[..., period - half + 1 :]], dim=-1)
        low = spectrum.new_zeros(*spectrum.shape[:-2], period, half)
        low[..., :half, :] = spectrum[..., :half, :half] * rows[..., :half, None] * beam[..., None, :half]
        low[..., period - half + 1 :, :] = (
            spectrum[..., half + 1 :, :half] * rows[..., half:, None] * beam[..., None, :half]
        )
        field = torch.fft.irfft(torch.fft.ifft(low, dim=-2)[..., :size, :], n=period, dim=-1)[..., :size]
    factor = pixel_std(field).clamp_min(1e-12).reciprocal()
    return field * (factor if rms is None else factor * rms.to(field.dtype))[:, None, None, None]


def pixel_std(x: Tensor) -> Tensor:
    """Per-image standard deviation ``[B]`` of ``[B, 1, H, W]`` images (``torch.std`` is several times slower
    on CPUs, and this reads a cropped view in place)."""
    n = x.shape[-2] * x.shape[-1]
    mean = x.mean(dim=(1, 2, 3))
    power = torch.linalg.vector_norm(x, dim=(1, 2, 3)) ** 2
    return ((power - n * mean**2).clamp_min(0) / max(n - 1, 1)).sqrt()


def selected_rows(mask: Tensor) -> Tensor | None:
    """The rows ``mask`` ``[B]`` selects, so that per-image work skips the others, on the CPU; None on a GPU.

    On a GPU the whole-batch operation costs no more, and reading the mask back would stall the stream.
    """
    return torch.nonzero(mask).flatten() if mask.device.type == "cpu" else None


def robust_rms(x: Tensor, samples: int = 32) -> Tensor:
    """Per-image robust rms ``1.4826 * MAD`` of ``[B, C, H, W]`` images, shape ``[B]``.

    Radio windows are mostly noise with a few bright sources; the MAD measures the noise, not the sources.
    It is computed on a regular sub-grid of about ``samples`` × ``samples`` pixels (medians cost a sort).
    """
    step = max(1, min(x.shape[-2:]) // samples)
    flat = x[..., ::step, ::step].flatten(1)
    med = flat.median(dim=1, keepdim=True).values
    return MAD_TO_SIGMA * (flat - med).abs().median(dim=1).values


def contrast_jitter(x: Tensor, factor: Tensor) -> Tensor:
    """Scale each image's deviation from its own mean by ``factor`` ``[B]`` (mean is preserved)."""
    factor = factor.to(x.dtype)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return torch.addcmul(mean * (1 - factor), x, factor)  # (x - mean) * factor + mean in one pass


class RadioAugmentation(nn.Module):
    """Make the views of a self-supervised method from a batch of raw radio windows.

    Parameters
    ----------
    normalization
        Module mapping ``[B, 1, H, W]`` to ``[B, 1, H, W]`` (the ``normalization`` group), applied per view.
    in_chans
        Channels the backbone expects (1 or 3); channels are identical copies.
    global_size
        Side in pixels of the global views.
    n_global
        Number of global views (2 for BYOL, SimCLR and DINO).
    local_size
        Side in pixels of the local views.
    n_local
        Number of local (small-crop) views, used by DINO's multi-crop.
    global_scale, local_scale
        ``(min, max)`` crop area as a fraction of the window.
    rotate, flip
        Rotate by any angle; mirror half of the views. The sky has no preferred orientation.
    blur_prob, blur_sigma
        Probability of a Gaussian blur and the ``(min, max)`` of its sigma in output pixels.
    noise_prob, noise_level
        Probability of added Gaussian noise and the ``(min, max)`` of its std as a multiple of the view's
        robust rms.
    noise_correlation
        Gaussian sigma, in window pixels, over which the added noise is correlated (the beam's: LoTSS's 6″
        FWHM on 1.5″ pixels is 1.7 px); converted to each view's pixels; 0 adds white noise.
    contrast_prob, contrast
        Probability of a contrast change and its strength: the factor is drawn in ``[1 - c, 1 + c]``.
    """

    def __init__(
        self,
        normalization: nn.Module,
        in_chans: int,
        global_size: int,
        n_global: int = 2,
        local_size: int = 64,
        n_local: int = 0,
        global_scale: Sequence[float] = (0.65, 1.0),
        local_scale: Sequence[float] = (0.2, 0.5),
        rotate: bool = True,
        flip: bool = True,
        blur_prob: float = 0.5,
        blur_sigma: Sequence[float] = (0.1, 1.5),
        noise_prob: float = 0.5,
        noise_level: Sequence[float] = (0.0, 1.0),
        noise_correlation: float = 1.7,
        contrast_prob: float = 0.8,
        contrast: float = 0.4,
    ) -> None:
        super().__init__()
        if in_chans not in (1, 3):
            raise RadioCurationError(f"in_chans={in_chans}: radio views have 1 or 3 (identical) channels.")
        if n_global < 1 or n_local < 0:
            raise RadioCurationError(
                f"augmentation.n_global={n_global}, n_local={n_local}: need n_global >= 1 and n_local >= 0."
            )
        if not 0.0 <= noise_correlation <= 16.0:
            raise RadioCurationError(
                f"augmentation.noise_correlation={noise_correlation} must be in [0, 16] window pixels "
                "(the beam's Gaussian sigma, e.g. 1.7 for a 6 arcsec beam on 1.5 arcsec pixels)."
            )
        for name, p in (
            ("blur_prob", blur_prob),
            ("noise_prob", noise_prob),
            ("contrast_prob", contrast_prob),
        ):
            if not 0.0 <= p <= 1.0:
                raise RadioCurationError(f"augmentation.{name}={p} must be a probability in [0, 1].")
        if not 0.0 <= contrast < 1.0:
            raise RadioCurationError(f"augmentation.contrast={contrast} must be in [0, 1).")
        self.normalization = normalization
        self.in_chans = int(in_chans)
        self.global_size = int(global_size)
        self.n_global = int(n_global)
        self.local_size = int(local_size)
        self.n_local = int(n_local)
        self.global_scale = _check_range("global_scale", global_scale, 1e-4, 1.0)
        self.local_scale = _check_range("local_scale", local_scale, 1e-4, 1.0)
        self.rotate = bool(rotate)
        self.flip = bool(flip)
        self.blur_prob = float(blur_prob)
        self.blur_sigma = _check_range("blur_sigma", blur_sigma, 0.0, math.inf)
        self.noise_prob = float(noise_prob)
        self.noise_level = _check_range("noise_level", noise_level, 0.0, math.inf)
        self.noise_correlation = float(noise_correlation)
        self.contrast_prob = float(contrast_prob)
        self.contrast = float(contrast)

    def _noise(self, white: Tensor, sigma: Tensor, size: int, period: int, rms: Tensor) -> Tensor:
        """The added noise of rms ``rms`` from the ``white`` draws: beam-correlated, or white without a beam."""
        if self.noise_correlation > 0:
            return correlate_noise(white, sigma, size, period, rms)
        return white * rms.to(white.dtype)[:, None, None, None]

    def beam_sigma_range(self, size: int, scale: Sequence[float], window: int) -> tuple[float, float]:
        """Smallest and largest sigma, in view pixels, of the added noise's beam in ``size`` px views of crops
        in ``scale`` of ``window`` px windows (the crop's side sets how many view pixels the beam spans)."""
        sides = [math.sqrt(float(a) / 2) if self.rotate else math.sqrt(float(a)) for a in scale]
        return tuple(self.noise_correlation * size / (side * window) for side in sides[::-1])

    @property
    def n_views(self) -> int:
        """Total number of views per image (global first, then local)."""
        return self.n_global + self.n_local

    def view(
        self, x: Tensor, size: int, scale: Sequence[float], generator: torch.Generator | None = None
    ) -> Tensor:
        """One random view of every window of ``x`` ``[B, 1, S, S]`` → ``[B, in_chans, size, size]``."""
        b, device, g = x.shape[0], x.device, generator
        params = sample_crop_params(b, scale, self.rotate, self.flip, device, g)
        v = crop_rotate_flip(x, params, size)
        # On the CPU the images a step leaves unchanged (sigma or level 0: an exact identity) skip it; the
        # random draws are the same, and so is every view, bitwise.
        if self.blur_prob > 0 and self.blur_sigma[1] > 0:
            sigma = _uniform(b, *self.blur_sigma, device, g)
            sigma = sigma * (torch.rand(b, device=device, generator=g) < self.blur_prob)
            rows = selected_rows(sigma > 0)
            if rows is None:
                v = gaussian_blur(v, sigma, self.blur_sigma[1])
            elif len(rows):
                v.index_copy_(0, rows, gaussian_blur(v[rows], sigma[rows], self.blur_sigma[1]))
        if self.noise_prob > 0 and self.noise_level[1] > 0:
            level = _uniform(b, *self.noise_level, device, g)
            level = level * (torch.rand(b, device=device, generator=g) < self.noise_prob)
            # The beam's sigma in view pixels: the crop spans side * S window pixels over `size` view pixels.
            sigma = self.noise_correlation * size / (params.side * x.shape[-1])
            correlated = self.noise_correlation > 0
            period, m = (
                noise_grids(size, self.beam_sigma_range(size, scale, x.shape[-1]))
                if correlated
                else (size, size)
            )
            # Drawn for the whole batch even when no image takes it: the generator moves as on a GPU.
            white = torch.randn(b, 1, m, m, device=device, generator=g)
            rows = selected_rows(level > 0)
            if rows is None:
                v = v + self._noise(white, sigma, size, period, level * robust_rms(v))
            elif len(rows):
                rms = level[rows] * robust_rms(v[rows])
                v.index_add_(0, rows, self._noise(white[rows], sigma[rows], size, period, rms))
        v = self.normalization(v)
        if self.contrast_prob > 0 and self.contrast > 0:
            factor = _uniform(b, 1 - self.contrast, 1 + self.contrast, device, g)
            jittered = torch.rand(b, device=device, generator=g) < self.contrast_prob
            factor = torch.where(jittered, factor, 1.0)
            v = contrast_jitter(v, factor)
        return v.expand(-1, self.in_chans, -1, -1).contiguous() if self.in_chans > 1 else v

    @torch.no_grad()
    def forward(self, windows: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """Make ``n_global`` global then ``n_local`` local views of a batch of raw windows.

        Parameters
        ----------
        windows
            Raw windows ``[B, 1, S, S]`` on any device (NaNs already filled by the reader).
        generator
            Random number generator on the windows' device; seeded per batch it makes the views a pure
            function of the batch (None: torch's global generator).

        Returns
        -------
        list of Tensor
            ``n_global`` tensors ``[B, in_chans, global_size, global_size]`` followed by ``n_local``
            tensors ``[B, in_chans, local_size, local_size]``, on the device of ``windows``.
        """
        if windows.ndim != 4 or windows.shape[1] != 1:
            raise RadioCurationError(
                f"expected raw windows of shape [B, 1, S, S], got {tuple(windows.shape)}."
            )
        x = windows.float()
        views = [self.view(x, self.global_size, self.global_scale, generator) for _ in range(self.n_global)]
        views += [self.view(x, self.local_size, self.local_scale, generator) for _ in range(self.n_local)]
        return views
