"""Features of in-memory labelled images, through the same ``Preprocess`` contract as the features stage."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from radio_curation.errors import RadioCurationError
from radio_curation.progress import progress


def resolve_device(device: str) -> torch.device:
    """``auto`` → the first CUDA GPU when there is one, else the CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RadioCurationError(f"device={device} but no CUDA GPU is visible; use device=cpu or device=auto")
    return torch.device(device)


def dihedral(x: Tensor) -> Tensor:
    """Each image rotated by 90° and mirrored: an orientation the sky does not distinguish."""
    return torch.flip(torch.rot90(x, 1, dims=(-2, -1)), dims=(-1,))


@torch.inference_mode()
def embed_images(
    extractor: nn.Module,
    preprocess: nn.Module,
    images: np.ndarray,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    transform: Callable[[Tensor], Tensor] | None = None,
) -> np.ndarray:
    """``extractor(preprocess(images))`` in batches, as float32 ``[N, D]``.

    Parameters
    ----------
    extractor : nn.Module
        A ``FeatureExtractor`` (``[B, in_chans, H, W] → [B, D]``).
    preprocess : nn.Module
        ``Preprocess(normalization, in_chans, resize)``: raw ``[B, 1, S, S]`` → model input.
    images : np.ndarray
        ``[N, 1, S, S]`` raw pixels.
    batch_size : int
        Images per forward pass.
    device : torch.device or str
        Where to run.
    transform : callable, optional
        Applied to each raw batch before preprocessing (e.g. :func:`dihedral`).

    Returns
    -------
    np.ndarray
        ``[N, D]`` float32.
    """
    device = torch.device(device)
    extractor = extractor.to(device).eval()
    preprocess = preprocess.to(device).eval()
    out = []
    with progress(len(images), "extracting features", unit="img") as bar:
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            if transform is not None:
                batch = transform(batch)
            out.append(extractor(preprocess(batch)).float().cpu().numpy())
            bar.advance(len(batch))
    if not out:
        raise RadioCurationError("no images to extract features from")
    return np.concatenate(out)
