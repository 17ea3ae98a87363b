"""Each normalisation against its definition (astropy.visualization / astropy.stats / the formula)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.stats import sigma_clipped_stats
from astropy.visualization import (
    AsinhStretch,
    LogStretch,
    ManualInterval,
    MinMaxInterval,
    PercentileInterval,
    SqrtStretch,
    ZScaleInterval,
)
from hydra.utils import instantiate
from omegaconf import OmegaConf

from radio_curation.data import normalization as N
from radio_curation.errors import RadioCurationError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "normalization"


def radio_batch(n: int = 6, size: int = 48, seed: int = 0) -> np.ndarray:
    """Noise at LoTSS levels (Jy/beam) plus a Gaussian source of varying brightness per cutout."""
    rng = np.random.default_rng(seed)
    x = rng.normal(2e-5, 3e-3, (n, 1, size, size))
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.uniform(10, size - 10, 2)
        sigma = rng.uniform(1.7, 5.0)
        x[i, 0] += rng.uniform(0.01, 0.3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return x.astype(np.float32)


def per_cutout(x: np.ndarray, fn) -> np.ndarray:
    return np.stack([fn(c) for c in x])


def run(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    out = module(torch.from_numpy(x))
    assert out.shape == x.shape and out.dtype == torch.float32
    return out.numpy()


def test_minmax_is_astropy_minmax_interval():
    x = radio_batch()
    got = run(N.IntervalStretch(N.MinMaxInterval()), x)
    np.testing.assert_allclose(got, per_cutout(x, lambda c: MinMaxInterval()(c)), atol=1e-6)
    assert got.reshape(len(x), -1).min(1) == pytest.approx(0) and got.reshape(len(x), -1).max(
        1
    ) == pytest.approx(1)


@pytest.mark.parametrize(
    ("stretch", "reference"),
    [
        (N.AsinhStretch(0.1), AsinhStretch(0.1)),
        (N.AsinhStretch(0.02), AsinhStretch(0.02)),
        (N.SqrtStretch(), SqrtStretch()),
        (N.LogStretch(1000), LogStretch(1000)),
    ],
)
def test_stretches_are_astropy_stretches(stretch, reference):
    x = radio_batch()
    got = run(N.IntervalStretch(N.MinMaxInterval(), stretch), x)
    want = per_cutout(x, lambda c: reference(MinMaxInterval()(c), clip=True))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_percentile_interval_is_astropy_percentile_interval():
    x = radio_batch()
    got = run(N.IntervalStretch(N.PercentileInterval(99.0)), x)
    np.testing.assert_allclose(got, per_cutout(x, lambda c: PercentileInterval(99.0)(c)), atol=1e-5)


def test_manual_interval_is_astropy_manual_interval():
    x = radio_batch()
    got = run(N.IntervalStretch(N.ManualInterval(-0.003, 0.05)), x)
    np.testing.assert_allclose(got, ManualInterval(-0.003, 0.05)(x), atol=1e-5)


@pytest.mark.parametrize("size", [48, 64])
def test_zscale_is_astropy_zscale_interval(size):
    x = radio_batch(size=size, seed=size)
    module = N.IntervalStretch(N.ZScaleInterval())
    lo, hi = module.interval.limits(torch.from_numpy(x).reshape(len(x), -1))
    for i, cutout in enumerate(x):
        ref_lo, ref_hi = ZScaleInterval().get_limits(cutout)
        assert lo[i].item() == pytest.approx(ref_lo, rel=1e-5, abs=1e-9)
        assert hi[i].item() == pytest.approx(ref_hi, rel=1e-5, abs=1e-9)
    np.testing.assert_allclose(run(module, x), per_cutout(x, lambda c: ZScaleInterval()(c)), atol=1e-4)


def test_zscale_falls_back_to_min_max_when_rejection_leaves_too_few_pixels():
    # Mostly constant values with a few outliers: the fit rejects more than max_reject of the sample.
    rng = np.random.default_rng(3)
    x = np.zeros((2, 1, 32, 32), np.float32)
    x[:, 0, ::3, ::3] = rng.uniform(1, 2, (2, 11, 11))
    module = N.ZScaleInterval(max_reject=0.9)
    lo, hi = module.limits(torch.from_numpy(x).reshape(2, -1))
    for i in range(2):
        ref = ZScaleInterval(max_reject=0.9).get_limits(x[i])
        assert (lo[i].item(), hi[i].item()) == pytest.approx(ref, rel=1e-5)


def test_sigma_clip_is_astropy_sigma_clipped_stats():
    x = radio_batch(n=8)
    interval = N.SigmaClipInterval(sigma=3.0, maxiters=5, vmin_sigma=3.0)
    median, std = interval.clipped_stats(torch.from_numpy(x).reshape(len(x), -1))
    got = run(N.IntervalStretch(interval), x)
    for i, cutout in enumerate(x):
        _, ref_median, ref_std = sigma_clipped_stats(cutout, sigma=3.0, maxiters=5)
        assert median[i].item() == pytest.approx(float(ref_median), abs=1e-7)
        assert std[i].item() == pytest.approx(float(ref_std), rel=1e-4)
        ref = ManualInterval(ref_median + 3.0 * ref_std, cutout.max())(cutout)
        np.testing.assert_allclose(got[i], ref, atol=1e-4)
    # The noise floor maps to 0: most pixels of a source-poor cutout are clipped away.
    assert (got == 0).mean() > 0.9


def test_sigma_clip_upper_limit_in_sigma():
    x = radio_batch(n=3)
    got = run(N.IntervalStretch(N.SigmaClipInterval(vmin_sigma=-1.0, vmax_sigma=5.0)), x)
    for i, cutout in enumerate(x):
        _, med, std = sigma_clipped_stats(cutout, sigma=3.0, maxiters=5)
        np.testing.assert_allclose(got[i], ManualInterval(med - std, med + 5 * std)(cutout), atol=1e-4)


def test_standardize_fixed_statistics():
    x = radio_batch()
    np.testing.assert_allclose(run(N.Standardize(0.45, 0.225), x), (x - 0.45) / 0.225, rtol=1e-6)
    np.testing.assert_allclose(run(N.Standardize(2e-5, 3e-3), x), (x - 2e-5) / 3e-3, rtol=1e-5, atol=1e-5)


def test_standardize_after_minmax_and_per_cutout():
    x = radio_batch()
    scaled = per_cutout(x, lambda c: MinMaxInterval()(c))
    got = run(N.Standardize(0.45, 0.225, rescale=N.MinMaxInterval()), x)
    np.testing.assert_allclose(got, (scaled - 0.45) / 0.225, atol=1e-5)
    own = run(N.Standardize(None, None), x)
    want = per_cutout(x, lambda c: (c - c.mean()) / c.std())
    np.testing.assert_allclose(own, want, atol=1e-4)


@pytest.mark.parametrize(
    "module",
    [
        N.IntervalStretch(N.MinMaxInterval()),
        N.IntervalStretch(N.ZScaleInterval()),
        N.IntervalStretch(N.SigmaClipInterval()),
        N.IntervalStretch(N.PercentileInterval(99.5), N.AsinhStretch()),
        N.Standardize(None, None),
    ],
)
def test_constant_cutout_maps_to_zeros_and_neighbours_are_unaffected(module):
    x = radio_batch(n=3)
    x[1] = 0.25
    got = run(module, x)
    assert np.all(got[1] == 0)
    alone = run(module, x[[0, 2]])
    np.testing.assert_allclose(got[[0, 2]], alone, atol=1e-6)


def test_bad_parameters_are_user_errors():
    with pytest.raises(RadioCurationError, match="vmax > vmin"):
        N.ManualInterval(1.0, 0.0)
    with pytest.raises(RadioCurationError, match="percentiles"):
        N.AsymmetricPercentileInterval(60, 40)
    with pytest.raises(RadioCurationError, match="a > 0"):
        N.AsinhStretch(0)
    with pytest.raises(RadioCurationError, match="std > 0"):
        N.Standardize(0.0, 0.0)


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_every_config_builds_a_batched_module(name):
    module = instantiate(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    x = radio_batch(n=4)
    out = module(torch.from_numpy(x))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    if name not in ("none",):
        assert not torch.allclose(out, torch.from_numpy(x))


def test_old_pipeline_names_keep_their_statistics_on_rescaled_cutouts():
    x = torch.from_numpy(radio_batch(n=2))
    peak = x.abs().amax(dim=(1, 2, 3), keepdim=True)
    symmetric = (x + peak) / (2 * peak)  # zero flux -> 0.5
    for name, (mean, std) in {
        "imagenet": (0.45, 0.225),
        "mean05std05": (0.5, 0.5),
        "mean05std0225": (0.5, 0.225),
    }.items():
        module = instantiate(OmegaConf.load(CONFIGS / f"{name}.yaml"))
        torch.testing.assert_close(module(x), (symmetric - mean) / std, rtol=1e-5, atol=1e-5)
    # The LoTSS pixel statistics are Jy/beam values with an offset below the noise: applied as they are.
    zscore = instantiate(OmegaConf.load(CONFIGS / "zscore.yaml"))
    torch.testing.assert_close(zscore(x), (x - 2e-5) / 3e-3, rtol=1e-5, atol=1e-5)


def test_symmetric_interval_maps_zero_flux_to_one_half():
    x = torch.from_numpy(radio_batch(n=3))
    x[1] = -x[1]  # a negative-dominated cutout (e.g. an absorption artefact) keeps zero at 0.5 too
    got = N.IntervalStretch(N.SymmetricInterval())(torch.cat([x, torch.zeros_like(x[:1])]))
    peak = x.abs().amax(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(got[:3], (x + peak) / (2 * peak))
    assert torch.all(got[3] == 0)  # constant cutouts map to zeros, as every interval does


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_result_on_the_gpu():
    x = torch.from_numpy(radio_batch(n=8))
    for module in (
        N.IntervalStretch(N.ZScaleInterval()),
        N.IntervalStretch(N.SigmaClipInterval()),
        N.IntervalStretch(N.MinMaxInterval(), N.AsinhStretch()),
    ):
        torch.testing.assert_close(module(x.cuda()).cpu(), module(x), atol=1e-4, rtol=1e-4)
