"""Batched Preprocess equals the per-sample torchvision transforms of the per-cutout .npy scripts this
project replaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from radio_curation.data.normalization import (
    IntervalStretch,
    MinMaxInterval,
    PercentileInterval,
    Standardize,
    SymmetricInterval,
)
from radio_curation.data.preprocess import Preprocess
from radio_curation.errors import RadioCurationError


def windows(n: int = 5, size: int = 64) -> torch.Tensor:
    rng = np.random.default_rng(1)
    return torch.from_numpy(rng.normal(2e-5, 3e-3, (n, 1, size, size)).astype(np.float32))


@pytest.mark.parametrize(("size", "resize"), [(64, 224), (128, 96), (64, 64)])
def test_matches_per_sample_torchvision_transforms(size, resize):
    x = windows(size=size)
    per_sample = T.Compose(
        [T.Lambda(lambda t: t.repeat(3, 1, 1)), T.Normalize((0.45,) * 3, (0.225,) * 3), T.Resize(resize)]
    )
    want = torch.stack([per_sample(w) for w in x])
    got = Preprocess(Standardize(0.45, 0.225), in_chans=3, resize=resize)(x)
    assert got.shape == (len(x), 3, resize, resize)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_one_channel_and_no_resize_keep_the_window():
    x = windows(size=48)
    got = Preprocess(IntervalStretch(MinMaxInterval()), in_chans=1, resize=None)(x)
    assert got.shape == x.shape
    flat = got.reshape(len(x), -1)
    torch.testing.assert_close(flat.amin(1), torch.zeros(len(x)))
    torch.testing.assert_close(flat.amax(1), torch.ones(len(x)))


def test_normalises_before_resizing():
    # Min-max before a downsampling resize keeps the exact [0, 1] extremes out of the averaged pixels.
    x = windows(n=2, size=64)
    got = Preprocess(IntervalStretch(MinMaxInterval()), in_chans=1, resize=32)(x)
    want = T.Resize(32)(IntervalStretch(MinMaxInterval())(x))
    torch.testing.assert_close(got, want)


def test_half_precision_windows_come_out_float32():
    x = windows(n=2).half()
    got = Preprocess(None, in_chans=3, resize=32)(x)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 32, 32)
    torch.testing.assert_close(got[:, 0], got[:, 2])


def test_bad_arguments_and_shapes_are_user_errors():
    with pytest.raises(RadioCurationError, match="in_chans"):
        Preprocess(None, in_chans=2)
    with pytest.raises(RadioCurationError, match="resize"):
        Preprocess(None, resize=0)
    with pytest.raises(RadioCurationError, match=r"\[B, 1, S, S\]"):
        Preprocess(None)(torch.zeros(2, 3, 8, 8))


def _as_before(norm: torch.nn.Module, x: torch.Tensor, resize: int) -> torch.Tensor:
    """The preprocessing as it was before the in-place data path: out-of-place normalisation, F.interpolate."""
    x = x.float()
    if isinstance(norm, IntervalStretch):
        flat = x.reshape(len(x), -1)
        vmin, vmax = (v.reshape(-1, 1, 1, 1) for v in norm.interval.limits(flat))
        span = vmax - vmin
        x = norm.stretch(
            torch.where(span > 0, (x - vmin) / torch.where(span > 0, span, 1.0), 0.0).clamp(0, 1)
        )
    else:
        if norm.rescale is not None:
            x = norm.rescale(x)
        flat = x.reshape(len(x), -1)
        mean = flat.mean(1).reshape(-1, 1, 1, 1) if norm.mean is None else norm.mean
        if norm.std is None:
            std = flat.std(1, correction=0).reshape(-1, 1, 1, 1)
            x = torch.where(std > 0, (x - mean) / torch.where(std > 0, std, 1.0), 0.0)
        else:
            x = (x - mean) / norm.std
    if resize != x.shape[-1]:
        shrink = resize < x.shape[-1]
        x = torch.nn.functional.interpolate(x, size=(resize, resize), mode="bilinear", antialias=shrink)
    return x


@pytest.mark.parametrize("threads", [1, 2], ids=["one-thread", "two-threads"])
@pytest.mark.parametrize("resize", [224, 40, 64])
@pytest.mark.parametrize(
    "norm",
    [
        IntervalStretch(MinMaxInterval()),
        IntervalStretch(PercentileInterval(90.0)),
        Standardize(0.45, 0.225, SymmetricInterval()),
        Standardize(None, None),
    ],
    ids=["minmax", "percentile", "imagenet", "per-cutout"],
)
def test_bitwise_the_preprocessing_before_and_in_place_into_out(norm, resize, threads):
    # One thread as in a loader worker (the separable upsampling), two as in the model's process (torch's).
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_bitwise_before_and_into_out(norm, resize)
    finally:
        torch.set_num_threads(default)


def _check_bitwise_before_and_into_out(norm: torch.nn.Module, resize: int) -> None:
    x = windows(n=6)
    x[1] = 2e-4  # a constant window: no interval, zeros
    x[2, 0, :60] = 1e-4  # a percentile interval of zero width over a window that is not constant
    want = _as_before(norm, x, resize)
    kept = x.clone()
    got = Preprocess(norm, in_chans=3, resize=resize)(x)
    assert torch.equal(got, want.expand(-1, 3, -1, -1)) and torch.equal(x, kept)
    out = torch.full((len(x), 1, resize, resize), float("nan"))
    into = Preprocess(norm, in_chans=1, resize=resize)(x, out=out)
    assert into.data_ptr() == out.data_ptr() and torch.equal(out, want)
