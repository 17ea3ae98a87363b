"""Batched preprocessing on the model's device: raw windows ``[B, 1, S, S]`` → model input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radio_curation.data.bilinear import upsample_bilinear
from radio_curation.errors import RadioCurationError

aten = torch.ops.aten


class Preprocess(nn.Module):
    """Normalise, resize and repeat channels for a whole batch at once.

    The order is the one the per-cutout .npy scripts this project replaces used (normalise, then resize),
    with the channel repeat last so only one channel is resized. Resizing is bilinear with antialiasing, as
    ``torchvision.transforms.Resize`` does on tensors. Three channels are a broadcast view of the one
    (no copy; the model's first layer reads it): ``.contiguous()`` it before writing into it in place.

    Parameters
    ----------
    normalization
        A module mapping ``[B, 1, H, W]`` → ``[B, 1, H, W]`` (``instantiate(cfg.normalization)``), or None.
    in_chans
        Channels the model wants: 1, or 3 (the normalised channel repeated).
    resize
        Output side in pixels, or None to keep the window size.
    """

    def __init__(self, normalization: nn.Module | None, in_chans: int = 1, resize: int | None = None) -> None:
        super().__init__()
        if in_chans not in (1, 3):
            raise RadioCurationError(f"in_chans must be 1 or 3, got {in_chans}")
        if resize is not None and int(resize) < 1:
            raise RadioCurationError(f"resize must be a positive number of pixels or null, got {resize}")
        self.normalization = normalization if normalization is not None else nn.Identity()
        self.in_chans = int(in_chans)
        self.resize = None if resize is None else int(resize)

    def forward(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """Map raw windows ``[B, 1, S, S]`` (any float dtype) to float32 ``[B, in_chans, resize, resize]``.

        ``out``, a float32 ``[B, 1, resize, resize]`` tensor, receives the one channel (the resize writes
        straight into it, e.g. into a reused shared or pinned buffer); the result is then a view of it.
        """
        if x.ndim != 4 or x.shape[1] != 1:
            raise RadioCurationError(f"Preprocess expects windows shaped [B, 1, S, S], got {list(x.shape)}")
        x = self.normalization(x.float())
        if self.resize is not None and tuple(x.shape[-2:]) != (self.resize, self.resize):
            # Antialiasing only changes a downsampling; upsampling takes the faster plain bilinear kernel.
            shrinking = self.resize < min(x.shape[-2:])
            size = [self.resize, self.resize]
            if not shrinking:
                x = upsample_bilinear(x, size, out=out)
            elif out is None:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            else:
                # The kernel F.interpolate calls (bitwise its result), in its form that writes into `out`.
                x = aten._upsample_bilinear2d_aa.out(x, size, False, None, None, out=out)
        elif out is not None:
            x = out.copy_(x)
        if self.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        return x

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, resize={self.resize}"
