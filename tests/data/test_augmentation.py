"""Radio view augmentation: geometry, photometric changes, shapes and devices."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from radio_curation.data.augmentation import (
    NOISE_BAND,
    NOISE_REACH,
    CropParams,
    RadioAugmentation,
    blur_matrices,
    contrast_jitter,
    correlate_noise,
    crop_rotate_flip,
    gaussian_blur,
    noise_grids,
    periodic_beam_spectrum,
    robust_rms,
    sample_crop_params,
    views_generator,
)
from radio_curation.data.normalization import IntervalStretch, MinMaxInterval
from radio_curation.errors import RadioCurationError

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


def _params(
    n: int, angle: float = 0.0, flip: float = 1.0, scale: float = 1.0, cx: float = 0.0, cy: float = 0.0
):
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return CropParams(
        scale=full(scale), angle=full(angle), flip=full(flip), cx=full(cx), cy=full(cy), side=full(scale**0.5)
    )


def _geometry_only(**kwargs) -> RadioAugmentation:
    return RadioAugmentation(
        nn.Identity(), 1, global_size=32, blur_prob=0, noise_prob=0, contrast_prob=0, **kwargs
    )


def test_identity_rotations_by_right_angles_and_flip_are_exact():
    x = torch.randn(3, 1, 16, 16)
    assert torch.allclose(crop_rotate_flip(x, _params(3), 16), x, atol=1e-5)
    assert torch.allclose(
        crop_rotate_flip(x, _params(3, angle=math.pi / 2), 16), x.rot90(1, (2, 3)), atol=1e-5
    )
    assert torch.allclose(crop_rotate_flip(x, _params(3, angle=math.pi), 16), x.rot90(2, (2, 3)), atol=1e-5)
    assert torch.allclose(crop_rotate_flip(x, _params(3, flip=-1.0), 16), x.flip(-1), atol=1e-5)


def test_rotationally_symmetric_source_is_invariant_under_any_rotation_and_flip():
    yy, xx = torch.meshgrid(torch.arange(64.0) - 31.5, torch.arange(64.0) - 31.5, indexing="ij")
    source = torch.exp(-(xx**2 + yy**2) / (2 * 6.0**2))[None, None].repeat(8, 1, 1, 1)
    torch.manual_seed(0)
    params = sample_crop_params(8, (1.0, 1.0), rotate=True, flip=True)
    assert params.angle.std() > 0.5 and set(params.flip.tolist()) == {-1.0, 1.0}
    unrotated = CropParams(
        scale=params.scale,
        angle=torch.zeros(8),
        flip=torch.ones(8),
        cx=params.cx,
        cy=params.cy,
        side=params.side,
    )
    out = crop_rotate_flip(source, params, 64)
    assert torch.allclose(out, crop_rotate_flip(source, unrotated, 64), atol=1e-2)  # interpolation error only
    elongated = torch.exp(-(xx**2 / 20.0**2 + yy**2 / 3.0**2) / 2)[None, None].repeat(8, 1, 1, 1)
    diff = crop_rotate_flip(elongated, params, 64) - crop_rotate_flip(elongated, unrotated, 64)
    assert diff.abs().amax() > 0.5


def test_asymmetric_source_changes_orientation_and_rotations_cover_all_angles():
    x = torch.zeros(1, 1, 32, 32)
    x[..., 16, 20:30] = 1.0  # a jet pointing to the right of the centre
    torch.manual_seed(1)
    params = sample_crop_params(2000, (1.0, 1.0), rotate=True, flip=False)
    assert params.angle.min() >= 0 and params.angle.max() < 2 * math.pi
    counts = torch.histc(params.angle, bins=8, min=0, max=2 * math.pi)
    assert counts.min() > 180  # uniform: 250 expected per octant
    rotated = crop_rotate_flip(x, _params(1, angle=math.pi), 32)
    right, left = rotated[..., 16, 20:30].sum(), rotated[..., 15:17, 2:12].sum()
    assert right < 0.1 and left > 0.9 * x.sum() / 2


@pytest.mark.parametrize(("low", "high"), [(0.65, 1.0), (0.2, 0.5)])
def test_crop_area_stays_in_the_configured_range(low, high):
    ramp = torch.linspace(-1, 1, 128).expand(1, 1, 128, 128).repeat(500, 1, 1, 1)
    torch.manual_seed(2)
    params = sample_crop_params(500, (low, high), rotate=False, flip=False)
    out = crop_rotate_flip(ramp, params, 64)
    side = (out[:, 0, 0, -1] - out[:, 0, 0, 0]) * 64 / 63 / 2  # the crop's width as a fraction of the window
    area = side**2
    assert area.min() >= low - 0.02 and area.max() <= high + 0.02
    assert area.min() < low + 0.05 and area.max() > high - 0.05  # the whole range is used
    # The unrotated crop lies inside the window.
    assert out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5


def _blob(size: int, x: float, y: float, sigma: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))


def test_rotated_views_never_show_a_mirrored_copy_of_a_source_near_the_edge():
    # A one-sided jet touching the window's left edge: any padding (reflection, border) would put a
    # mirrored or smeared copy of it in the corners of a rotated view and raise the view's total flux.
    size = 64
    window = _blob(size, 3.0, 32.0, 2.0) + 0.5 * _blob(size, 9.0, 32.0, 2.0)
    window = window[None, None].repeat(400, 1, 1, 1)
    torch.manual_seed(6)
    params = sample_crop_params(400, (0.3, 1.0), rotate=True, flip=True)
    views = crop_rotate_flip(window, params, 32)
    # Flux in a view, in window-pixel units: each view pixel covers (side * S / 32)^2 window pixels.
    flux = views.sum(dim=(1, 2, 3)) * (params.side * size / 32) ** 2
    assert flux.max() <= 1.02 * window[0].sum()
    # Every view lies inside the disc of radius S/2 * side * √2 around its centre, inside the window.
    reach = params.side * math.sqrt(2) + torch.maximum(params.cx.abs(), params.cy.abs())
    assert reach.max() <= 1.0 + 1e-6
    # Views reach the whole window: some sample the source near the edge at full strength.
    assert flux.max() > 0.5 * window[0].sum()


def test_rotated_crop_of_full_scale_is_the_inscribed_centre_of_the_window():
    window = torch.linspace(0, 1, 64).expand(1, 1, 64, 64).contiguous()
    params = sample_crop_params(1, (1.0, 1.0), rotate=True, flip=False)
    params = CropParams(
        params.scale, torch.zeros(1), params.flip, torch.zeros(1), torch.zeros(1), params.side
    )
    out = crop_rotate_flip(window, params, 64)
    width = out[0, 0, 0, -1] - out[0, 0, 0, 0]  # the ramp rises 1/63 per window pixel
    assert width.item() == pytest.approx(1 / math.sqrt(2), abs=0.01)


def test_added_noise_is_correlated_over_the_beam_like_the_sky():
    torch.manual_seed(7)
    sky = torch.randn(16, 1, 64, 64) * 3e-3
    aug = RadioAugmentation(
        nn.Identity(), 1, global_size=64, global_scale=(1, 1), rotate=False, flip=False,
        blur_prob=0, contrast_prob=0, noise_prob=1.0, noise_level=(1.0, 1.0), noise_correlation=1.7,
    )  # fmt: skip
    added = aug.view(sky, 64, (1.0, 1.0)) - sky
    a = added - added.mean(dim=(2, 3), keepdim=True)

    def autocorrelation(lag: int) -> float:
        return float((a[..., lag:] * a[..., :-lag]).mean() / (a * a).mean())

    # A Gaussian beam of sigma 1.7 px correlates noise by exp(-d^2 / (4 sigma^2)): 0.92 at 1 px, 0.71 at 2 px.
    assert autocorrelation(1) > 0.85 and autocorrelation(2) > 0.6
    assert robust_rms(added).mean().item() == pytest.approx(3e-3, rel=0.15)


def test_channels_are_identical_so_there_is_no_hue_or_saturation_jitter():
    aug = RadioAugmentation(nn.Identity(), 3, global_size=24, local_size=12, n_local=2)
    torch.manual_seed(3)
    views = aug(torch.randn(4, 1, 32, 32).abs())
    for v in views:
        assert v.shape[1] == 3
        assert torch.equal(v[:, 0], v[:, 1]) and torch.equal(v[:, 0], v[:, 2])


def test_contrast_jitter_keeps_the_mean_and_scales_deviations():
    x = torch.randn(5, 1, 8, 8) + 3.0
    factor = torch.tensor([0.6, 0.8, 1.0, 1.2, 1.4])
    y = contrast_jitter(x, factor)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)
    ratio = y.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert torch.allclose(ratio, factor, atol=1e-5)


def test_blur_conserves_flux_spreads_a_point_and_sigma_zero_is_identity():
    x = torch.zeros(2, 1, 21, 21)
    x[:, :, 10, 10] = 1.0
    y = gaussian_blur(x, torch.tensor([0.0, 1.5]), max_sigma=1.5)
    assert torch.allclose(y[0], x[0])
    assert y[1].sum().item() == pytest.approx(1.0, abs=1e-5)
    assert y[1, 0, 10, 10] < 0.1 and y[1, 0, 10, 12] > 0.01


def test_noise_is_scaled_to_the_view_rms():
    torch.manual_seed(4)
    sky = torch.randn(16, 1, 64, 64) * 3e-3  # Jy/beam background noise
    aug = RadioAugmentation(
        nn.Identity(), 1, global_size=64, global_scale=(1, 1), rotate=False, flip=False,
        blur_prob=0, contrast_prob=0, noise_prob=1.0, noise_level=(1.0, 1.0),
    )  # fmt: skip
    out = aug.view(sky, 64, (1.0, 1.0))
    assert robust_rms(sky).mean().item() == pytest.approx(3e-3, rel=0.05)
    assert robust_rms(out - sky).mean().item() == pytest.approx(3e-3, rel=0.1)


def test_normalization_is_applied_per_view_after_the_crop():
    class MinMax(nn.Module):
        def forward(self, x):
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            return (x - lo) / (hi - lo)

    aug = RadioAugmentation(MinMax(), 1, global_size=16, blur_prob=0, noise_prob=0, contrast_prob=0)
    views = aug(torch.randn(6, 1, 32, 32) * 5 + 7)
    for v in views:
        assert torch.allclose(v.amin(dim=(1, 2, 3)), torch.zeros(6), atol=1e-6)
        assert torch.allclose(v.amax(dim=(1, 2, 3)), torch.ones(6), atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_views_shapes_dtype_and_device(device):
    aug = RadioAugmentation(nn.Identity(), 1, global_size=32, local_size=16, n_local=4)
    windows = torch.randn(5, 1, 48, 48, device=device)
    views = aug(windows)
    assert len(views) == aug.n_views == 6
    assert [tuple(v.shape) for v in views] == [(5, 1, 32, 32)] * 2 + [(5, 1, 16, 16)] * 4
    assert all(v.device.type == device and v.dtype == torch.float32 for v in views)
    assert not any(v.requires_grad for v in views)
    assert not torch.equal(views[0], views[1])  # independent random views


def test_views_differ_per_image_within_a_batch():
    x = torch.randn(1, 1, 32, 32).repeat(8, 1, 1, 1)
    torch.manual_seed(5)
    v = _geometry_only()(x)[0]
    assert len({round(float(t), 4) for t in v.flatten(1).sum(1)}) == 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_chans": 2}, "in_chans"),
        ({"global_scale": (0.9, 0.5)}, "global_scale"),
        ({"blur_prob": 1.5}, "blur_prob"),
        ({"noise_correlation": -1.0}, "noise_correlation"),
        ({"contrast": 1.0}, "contrast"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, match):
    args = {"normalization": nn.Identity(), "in_chans": 1, "global_size": 16, **kwargs}
    with pytest.raises(RadioCurationError, match=match):
        RadioAugmentation(**args)


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(RadioCurationError, match=r"\[B, 1, S, S\]"):
        RadioAugmentation(nn.Identity(), 1, global_size=16)(torch.zeros(2, 3, 16, 16))


@pytest.mark.parametrize("kwargs", [{}, {"n_local": 2}, {"noise_correlation": 0.0}, {"blur_prob": 1.0}])
def test_cpu_views_skipping_unchanged_images_are_bitwise_the_whole_batch_views(monkeypatch, kwargs):
    # On the CPU blur and noise run only on the images they change; the whole-batch path (the GPU's) must
    # give the same views from the same draws.
    import radio_curation.data.augmentation as module

    windows = torch.randn(48, 1, 48, 48) * 3e-3
    aug = RadioAugmentation(IntervalStretch(MinMaxInterval()), 1, global_size=32, local_size=16, **kwargs)
    selected = []
    real = module.selected_rows

    def spy(mask):
        selected.append(int(mask.sum()))
        return real(mask)

    monkeypatch.setattr(module, "selected_rows", spy)
    skipping = aug(windows, generator=views_generator(3))
    # Some steps left images out (each image is blurred or given noise with probability 1/2 by default).
    assert any(0 < n < len(windows) for n in selected)
    monkeypatch.setattr(module, "selected_rows", lambda mask: None)
    whole = aug(windows, generator=views_generator(3))
    assert all(torch.equal(a, b) for a, b in zip(skipping, whole, strict=True))


def test_cpu_views_of_a_batch_no_image_of_which_is_blurred_or_noised_are_the_whole_batch_views(monkeypatch):
    # A small batch can draw no image for a step (a requeued training job met one): the CPU path must skip
    # the step, yet draw what the whole-batch path draws, so that later views stay the same.
    import radio_curation.data.augmentation as module

    windows = torch.randn(2, 1, 32, 32) * 3e-3
    aug = RadioAugmentation(
        IntervalStretch(MinMaxInterval()), 1, global_size=16, local_size=8, n_local=2,
        blur_prob=1e-9, noise_prob=1e-9,
    )  # fmt: skip
    skipping = aug(windows, generator=views_generator(5))
    monkeypatch.setattr(module, "selected_rows", lambda mask: None)
    whole = aug(windows, generator=views_generator(5))
    assert all(torch.equal(a, b) for a, b in zip(skipping, whole, strict=True))


def test_sampling_grid_is_affine_grids():
    # The geometry of a view is that of F.affine_grid with the crop's matrix (built without its product).
    torch.manual_seed(8)
    x = torch.randn(16, 1, 40, 40)
    p = sample_crop_params(16, (0.3, 1.0), rotate=True, flip=True)
    cos, sin = p.angle.cos(), p.angle.sin()
    theta = torch.stack(
        [
            torch.stack([p.side * cos * p.flip, -p.side * sin, p.cx], dim=-1),
            torch.stack([p.side * sin * p.flip, p.side * cos, p.cy], dim=-1),
        ],
        dim=1,
    )
    for size in (24, 40):
        grid = F.affine_grid(theta, [16, 1, size, size], align_corners=False)
        expected = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
        assert torch.allclose(crop_rotate_flip(x, p, size), expected, atol=2e-4)  # grids agree to ~1e-6


def _reference_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Reflection padding, then a separable grouped convolution with one kernel per image."""
    b, c, h, w = x.shape
    radius = max(1, math.ceil(3 * max_sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets[None, :] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
    flat = F.pad(x.reshape(1, b * c, h, w), (radius,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=b * c)
    return F.conv2d(flat, kernel[:, None, :, None], groups=b * c).reshape(b, c, h, w)


@pytest.mark.parametrize("shape", [(6, 1, 32, 32), (6, 2, 20, 28)])
def test_blur_is_the_reflection_padded_separable_convolution(shape):
    torch.manual_seed(9)
    x = torch.randn(shape) * 1e-4
    x[0, 0, 0, :4] = 1.0  # a bright source on the edge: the reflection shows
    sigma = torch.tensor([0.0, 0.1, 0.4, 0.8, 1.2, 1.5])
    y = gaussian_blur(x, sigma, max_sigma=1.5)
    assert torch.allclose(y, _reference_blur(x, sigma, 1.5), rtol=1e-5, atol=1e-9)
    assert torch.equal(y[0], x[0])  # sigma 0: the identity, exactly


def test_blur_matrices_are_normalised_reflected_bands_and_too_wide_a_blur_is_refused():
    m = blur_matrices(torch.tensor([0.7, 1.5]), 16, 5)
    assert torch.allclose(m.sum(dim=2), torch.ones(2, 16))  # each output pixel a weighted mean
    assert (m[:, 8, :3] == 0).all() and (m[:, 8, 14:] == 0).all()  # band of radius 5 in the interior
    assert m[1, 0, 3] == m[1, 0, 3] and m[1, 0, 2] > m[1, 2, 0] > 0  # pixel 0 gets pixel 2 twice (reflected)
    with pytest.raises(RadioCurationError, match="radius"):
        blur_matrices(torch.tensor([1.0]), 4, 5)


def test_noise_grids_bound_the_power_left_out_and_the_correlation_through_the_period():
    assert math.exp(-(NOISE_REACH**2)) < 1e-6 and 2 * math.erfc(NOISE_BAND) < 1e-6
    # The default global views: beams of 1.7 window px in 128 px views of crops of 0.65 to 1 of the inscribed
    # square of a 128 px window, 2.4 to 3 view px.
    aug = RadioAugmentation(nn.Identity(), 1, global_size=128)
    lo, hi = aug.beam_sigma_range(128, (0.65, 1.0), 128)
    assert (lo, hi) == pytest.approx((1.7 / math.sqrt(0.5), 1.7 / math.sqrt(0.325)))
    period, white = noise_grids(128, (lo, hi))
    assert period >= 128 + 2 * NOISE_REACH * hi and white < period
    # The beam's noise power outside the frequencies drawn, on the period grid, for the narrowest beam.
    beam = periodic_beam_spectrum(torch.tensor([lo], dtype=torch.float64), period)[0] ** 2
    power = beam[:, None] * beam[None, :]
    k = torch.minimum(torch.arange(period), period - torch.arange(period))
    inside = (k[:, None] < white // 2) & (k[None, :] < white // 2)
    assert float(power[~inside].sum() / power.sum()) < 1e-6
    # A beam narrower than a pixel or two needs the whole grid.
    assert noise_grids(64, (0.3, 0.5))[1] == noise_grids(64, (0.3, 0.5))[0]


@pytest.mark.parametrize("sigma", [1.5, 2.7])
def test_noise_from_the_coarse_grid_is_the_full_grids_field(sigma):
    # Drawn on the full period grid, or as the low frequencies of the same draws on the coarse grid: the
    # same field up to the power left out (< 1e-6, so ~1e-3 of the rms).
    torch.manual_seed(10)
    period, white = noise_grids(64, (sigma, sigma))
    full = torch.randn(8, 1, period, period, dtype=torch.float64)
    sigmas = torch.full((8,), sigma, dtype=torch.float64)
    assert white < period
    spectrum = torch.fft.rfft2(full)
    half = white // 2
    coarse = spectrum.new_zeros(8, 1, white, half + 1)
    coarse[..., :half, :half] = spectrum[..., :half, :half]
    coarse[..., half + 1 :, :half] = spectrum[..., period - half + 1 :, :half]
    low = torch.fft.irfft2(coarse, s=(white, white))
    expected = correlate_noise(full, sigmas, 64, period)
    got = correlate_noise(low, sigmas, 64, period)
    assert (got - expected).abs().max() < 1e-2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sigma", [0.6, 1.7, 3.0])
def test_noise_is_a_stationary_field_with_the_beams_gaussian_correlation(device, sigma):
    size, n = 64, 96
    period, m = noise_grids(size, (sigma, sigma))
    assert (m == period) == (sigma < 1)  # narrow beams take the full grid, wider ones the coarse one
    white = torch.randn(n, 1, m, m, device=device, generator=views_generator(11, device))
    rms = torch.linspace(1e-4, 3e-4, n, device=device)
    noise = correlate_noise(white, torch.full((n,), sigma, device=device), size, period, rms).cpu().double()
    assert noise.shape == (n, 1, size, size)
    assert torch.allclose(noise.std(dim=(1, 2, 3)), rms.cpu().double(), rtol=1e-4)
    a = noise / rms.cpu().double()[:, None, None, None]
    a = a - a.mean(dim=(2, 3), keepdim=True)

    def correlation(lag: int, dim: int) -> float:
        lead, lagged = a.narrow(dim, lag, size - lag), a.narrow(dim, 0, size - lag)
        return float((lead * lagged).mean() / (a * a).mean())

    # White noise convolved with a beam of sigma s sampled on the pixels: correlated by the beam's own
    # autocorrelation, exp(-d² / 4s²) for beams of a pixel or more, along both axes.
    g = torch.exp(-0.5 * (torch.arange(-30, 31, dtype=torch.float64) / sigma) ** 2)
    for lag in (1, 2, 3):
        expected = float((g[lag:] * g[:-lag]).sum() / (g * g).sum())
        if sigma > 1:
            assert expected == pytest.approx(math.exp(-(lag**2) / (4 * sigma**2)), abs=1e-3)
        assert correlation(lag, 3) == pytest.approx(expected, abs=0.03)
        assert correlation(lag, 2) == pytest.approx(expected, abs=0.03)
    # Stationary: the edges are like the middle, and opposite edges are not correlated (no wrap-around).
    border = torch.ones(size, size, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert float(a[..., border].pow(2).mean() / a.pow(2).mean()) == pytest.approx(1.0, abs=0.1)
    across = (a[..., :, 0] * a[..., :, -1]).mean() / (a * a).mean()
    assert abs(float(across)) < 0.05


def test_white_noise_without_a_beam_is_uncorrelated():
    sky = torch.randn(16, 1, 64, 64) * 3e-3
    aug = RadioAugmentation(
        nn.Identity(), 1, global_size=64, global_scale=(1, 1), rotate=False, flip=False,
        blur_prob=0, contrast_prob=0, noise_prob=1.0, noise_level=(1.0, 1.0), noise_correlation=0.0,
    )  # fmt: skip
    added = aug.view(sky, 64, (1.0, 1.0), generator=views_generator(12)) - sky
    a = added / added.std()
    assert abs(float((a[..., 1:] * a[..., :-1]).mean())) < 0.02
    assert robust_rms(added).mean().item() == pytest.approx(3e-3, rel=0.1)


def test_views_are_a_function_of_the_batch_seed():
    windows = torch.randn(8, 1, 48, 48) * 1e-4
    aug = RadioAugmentation(IntervalStretch(MinMaxInterval()), 1, global_size=32, local_size=16, n_local=2)
    first = aug(windows, generator=views_generator(21))
    again = aug(windows, generator=views_generator(21))
    other = aug(windows, generator=views_generator(22))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first, other, strict=True))
