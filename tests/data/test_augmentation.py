"""Radio view augmentation: geometry, photometric changes, shapes and devices."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from radio_curation.data.augmentation import (
    CropParams,
    RadioAugmentation,
    contrast_jitter,
    crop_rotate_flip,
    gaussian_blur,
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
