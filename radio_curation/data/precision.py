"""Does a normalised batch survive the cast to the model's precision?

Under ``bf16-mixed`` / ``16-mixed`` the first layer casts its input to bfloat16 / float16. Both are floating
point: what they keep is a fixed number of significant bits (8 for bfloat16, 11 for float16), so a
normalisation that moves the sky noise to a large constant offset (raw Jy/beam pixels of ~1e-4 minus
ImageNet's 0.45) leaves only a handful of representable values in a window, and the model sees a flat
image. :func:`check_precision` measures that on the first batch a stage feeds its model and stops with a
user error before any work is done.

What is measured, per window: the rms of the rounding error (cast − float32) over the background pixels
relative to the window's robust rms (1.4826 × the median absolute deviation, i.e. the noise level; the standard deviation when
more than half the pixels are equal, e.g. a background clipped to zero), and how many distinct values are
left. A batch is lost when, in the median window, the rounding error exceeds :data:`MAX_RELATIVE_ERROR`
of the noise or fewer than ``min(MIN_DISTINCT, half the float32 distinct values)`` remain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch import Tensor, nn

from radio_curation.cutouts.reader import WindowReader
from radio_curation.errors import RadioCurationError

#: Largest tolerated rms rounding error, as a fraction of the window's robust rms (noise level).
MAX_RELATIVE_ERROR = 0.1
#: Distinct values a window must keep after the cast (or half of those it had, if it had fewer).
MIN_DISTINCT = 256


def half_dtype(precision: str | int) -> torch.dtype | None:
    """The reduced dtype a Lightning ``precision`` runs the model in, or None for 32/64 bits.

    ``bf16-mixed``, ``bf16-true``, ``bf16`` → bfloat16; ``16-mixed``, ``16-true``, ``16``, 16 → float16.
    """
    text = str(precision).strip().lower()
    if text.startswith("bf16"):
        return torch.bfloat16
    if text == "16" or text.startswith(("16-", "half")):
        return torch.float16
    return None


@dataclass(frozen=True)
class CastLoss:
    """What the cast to ``dtype`` does to a batch (medians over its non-constant windows).

    Attributes
    ----------
    dtype
        The reduced dtype.
    relative_error
        rms(cast − float32) / robust rms of the window.
    distinct_before, distinct_after
        Distinct pixel values of the window in float32 and after the cast.
    windows
        Non-constant windows measured.
    """

    dtype: torch.dtype
    relative_error: float
    distinct_before: int
    distinct_after: int
    windows: int

    @property
    def lost(self) -> bool:
        """Whether the cast destroys the windows' information."""
        if self.windows == 0:
            return False
        wanted = min(MIN_DISTINCT, self.distinct_before // 2)
        return self.relative_error > MAX_RELATIVE_ERROR or self.distinct_after < wanted


def _robust_rms(flat: Tensor) -> Tensor:
    median = flat.median(dim=1, keepdim=True).values
    mad = 1.4826 * (flat - median).abs().median(dim=1).values
    return torch.where(mad > 0, mad, flat.std(dim=1, correction=0))


def cast_loss(x: Tensor, dtype: torch.dtype) -> CastLoss:
    """Measure what casting the normalised batch ``x`` ``[B, ...]`` to ``dtype`` loses (see the module doc)."""
    flat = x.detach().float().reshape(x.shape[0], -1).cpu()
    scale = _robust_rms(flat)
    keep = scale > 0
    flat, scale = flat[keep], scale[keep]
    if len(flat) == 0:
        return CastLoss(dtype, 0.0, 0, 0, 0)
    cast = flat.to(dtype).float()
    # The error is taken over the background (within 5 rms of the median): a bright source's pixels are
    # rounded to a fixed fraction of their own value, which is no loss, and would dominate the rms.
    background = (flat - flat.median(dim=1, keepdim=True).values).abs() <= 5.0 * scale.unsqueeze(1)
    squared = ((cast - flat) ** 2 * background).sum(dim=1) / background.sum(dim=1).clamp(min=1)
    error = squared.sqrt() / scale
    before = torch.tensor([float(row.unique().numel()) for row in flat])
    after = torch.tensor([float(row.unique().numel()) for row in cast])
    return CastLoss(
        dtype=dtype,
        relative_error=float(error.median()),
        distinct_before=int(before.median()),
        distinct_after=int(after.median()),
        windows=len(flat),
    )


def check_precision(x: Tensor, precision: str | int, normalization: str, where: str) -> CastLoss | None:
    """Stop when the normalised first batch ``x`` loses its information in the model's ``precision``.

    Parameters
    ----------
    x
        The batch as the model gets it (after normalisation and resizing), float32.
    precision
        The Lightning precision the model runs in (already resolved, not ``auto``).
    normalization
        How the batch was normalised (:func:`describe`), for the message.
    where
        The setting that chose ``precision`` (``precision``, ``trainer.precision``), for the message.

    Returns
    -------
    CastLoss or None
        The measurement, or None when ``precision`` keeps float32.

    Raises
    ------
    RadioCurationError
        The cast loses the batch's information.
    """
    dtype = half_dtype(precision)
    if dtype is None:
        return None
    loss = cast_loss(x, dtype)
    if loss.lost:
        name = "bfloat16" if dtype == torch.bfloat16 else "float16"
        raise RadioCurationError(
            f"{normalization} with {where}={precision} destroys the images: after the cast to "
            f"{name} a typical window keeps {loss.distinct_after} of its {loss.distinct_before} distinct "
            f"values and its rounding error is {loss.relative_error:.2g} × its noise rms (at most "
            f"{MAX_RELATIVE_ERROR} is safe). Choose a normalization that brings pixels to O(1) around zero "
            f"(normalization=minmax, asinh, zscale, zscore) or run in float32 ({where}=32-true)."
        )
    return loss


def check_first_batch(
    merged: Path,
    cutout_ids: np.ndarray | None,
    batch_size: int,
    preprocess: nn.Module,
    precision: str | int,
    normalization: str,
    where: str,
) -> CastLoss | None:
    """:func:`check_precision` on the first batch a stage feeds its model.

    Parameters
    ----------
    merged
        The merge run's ``merged.h5``.
    cutout_ids
        The windows the stage processes, in its order (None: the index's); the first ``batch_size`` of
        the first one's size are read.
    batch_size
        Windows per batch.
    preprocess
        Raw windows ``[B, 1, S, S]`` → model input (normalisation and resizing), on the CPU.
    precision, normalization, where
        See :func:`check_precision`.
    """
    if half_dtype(precision) is None:
        return None
    reader = WindowReader(merged)
    try:
        ids = np.asarray(reader.cutout_ids if cutout_ids is None else cutout_ids, dtype=np.int64)
        if len(ids) == 0:
            return None
        sizes = reader.table()["size"][reader.rows(ids)]
        first = ids[sizes == sizes[0]][: max(1, int(batch_size))]
        pixels = torch.from_numpy(reader.read(first))
    finally:
        reader.close()
    with torch.no_grad():
        x = preprocess(pixels)
    return check_precision(x, precision, normalization, where)


def describe(cfg: DictConfig) -> str:
    """``normalization=<option> (<target> <settings>)`` of a composed root config, for messages."""
    node = cfg.normalization
    target = str(node.get("_target_", "?")).rsplit(".", 1)[-1]
    settings = " ".join(f"{k}={node[k]}" for k in ("mean", "std") if node.get(k) is not None)
    option = None
    if HydraConfig.initialized():
        option = HydraConfig.get().runtime.choices.get("normalization")
    described = f"{target} {settings}".strip()
    return f"normalization={option} ({described})" if option else f"normalization {described}"
