"""Normalised LoTSS-like windows survive the bf16/fp16 cast of mixed precision; a lossy recipe stops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy import ndimage

from radio_curation.backbones.factory import timm_backbone
from radio_curation.data import normalization as N
from radio_curation.data.precision import cast_loss, check_precision, half_dtype
from radio_curation.data.preprocess import Preprocess
from radio_curation.errors import RadioCurationError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "normalization"
NAMES = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
RMS = 83e-6  # LoTSS DR2 median noise [Jy/beam]


def lotss_windows(n: int = 1, size: int = 64, peak: float = 4e-3, seed: int = 0) -> tuple[np.ndarray, tuple]:
    """Beam-correlated noise of 83 µJy/beam rms plus a double-lobed source of ``peak`` Jy/beam per lobe.

    Window 0 has its lobes above and below the centre; the others draw the peak (0.3–30 × ``peak``),
    separation and angle at random. Returns the windows ``[n, 1, size, size]`` and the (row, col) of
    window 0's first lobe.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), 2.0, mode="wrap")
        sky = noise * RMS / noise.std()
        flux, half, angle = peak, size / 8, np.pi / 2
        if i > 0:
            flux, half, angle = (
                peak * 10 ** rng.uniform(-0.5, 1.5),
                rng.uniform(2, size / 4),
                rng.uniform(0, np.pi),
            )
        dy, dx = half * np.sin(angle), half * np.cos(angle)
        lobes = (((size / 2 - dy, size / 2 - dx), flux), ((size / 2 + dy, size / 2 + dx), 0.7 * flux))
        for (cy, cx), f in lobes:
            sky += f * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0**2))
        sky += 0.2 * flux * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * 1.5**2))
        out[i, 0] = sky
    return out, (size // 2 - size // 8, size // 2)


def assert_survives_bf16(x: torch.Tensor, peak_at: tuple[int, int]) -> None:
    """Window 0 of the normalised batch ``x`` after the bf16 cast: ≥ 256 values, its source above the noise."""
    cast = x.to(torch.bfloat16).float()[0, 0]
    assert cast.unique().numel() >= 256
    size = cast.shape[-1]
    yy, xx = np.mgrid[:size, :size]
    far = torch.from_numpy(np.hypot(yy - size / 2, xx - size / 2) > size * 0.4)
    assert cast[peak_at] > cast[far].max(), "the source does not stand out of the noise after the cast"
    assert not cast_loss(x, torch.bfloat16).lost


@pytest.mark.parametrize("name", NAMES)
def test_every_normalization_keeps_a_lotss_window_in_bf16(name):
    x, lobe = lotss_windows()
    module = instantiate(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    assert_survives_bf16(module(torch.from_numpy(x)), lobe)


@pytest.mark.parametrize("config", ["extract", "train"])
def test_the_lotss_dr2_recipe_keeps_its_windows_in_its_precision(compose, config):
    cfg = compose(config, ["experiment=lotss_dr2", *(["stage=features"] if config == "extract" else [])])
    window = int(cfg.cutouts.window_size)
    resize = int(cfg.resize if config == "extract" else cfg.augmentation.global_size)
    precision = cfg.precision if config == "extract" else cfg.trainer.precision
    assert half_dtype(precision) == torch.bfloat16
    x, (cy, cx) = lotss_windows(n=4, size=window)
    batch = Preprocess(instantiate(cfg.normalization), 3, resize)(torch.from_numpy(x))
    scale = resize / window
    assert_survives_bf16(batch[:, :1], (int(cy * scale), int(cx * scale)))
    check_precision(batch, precision, "lotss_dr2", "precision")


def test_the_old_imagenet_recipe_on_raw_pixels_is_stopped_with_a_clear_error():
    x, _ = lotss_windows(n=8)
    old = N.Standardize(0.45, 0.225, rescale=None)(torch.from_numpy(x))
    assert old[0].to(torch.bfloat16).unique().numel() <= 8  # the issue reports 2 for a 5 mJy source
    assert cast_loss(old, torch.bfloat16).relative_error > 1.0
    with pytest.raises(RadioCurationError, match=r"normalization=imagenet.*precision=bf16-mixed.*32-true"):
        check_precision(old, "bf16-mixed", "normalization=imagenet", "precision")
    with pytest.raises(RadioCurationError, match="float16"):
        check_precision(old, "16-mixed", "normalization=imagenet", "trainer.precision")
    assert check_precision(old, "32-true", "normalization=imagenet", "precision") is None


def test_half_dtype_of_lightning_precisions():
    assert half_dtype("bf16-mixed") == half_dtype("bf16-true") == torch.bfloat16
    assert half_dtype("16-mixed") == half_dtype(16) == torch.float16
    assert half_dtype("32-true") is None and half_dtype("64-true") is None and half_dtype(32) is None


def test_constant_windows_are_not_measured():
    x = torch.zeros(3, 1, 16, 16)
    loss = cast_loss(x, torch.bfloat16)
    assert loss.windows == 0 and not loss.lost


def _centred_row_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(0), b - b.mean(0)
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_features_agree_with_float32(name):
    x, _ = lotss_windows(n=16, seed=1)
    torch.manual_seed(0)
    extractor = timm_backbone("resnet10t").eval()
    preprocess = Preprocess(instantiate(OmegaConf.load(CONFIGS / f"{name}.yaml")), 1, 64)
    batch = preprocess(torch.from_numpy(x))
    with torch.no_grad():
        full = extractor(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = extractor(batch).float()
    assert _centred_row_cosine(full, half) >= 0.99
