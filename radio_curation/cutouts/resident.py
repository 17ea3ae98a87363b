"""Mosaics held whole in memory: each is read and converted to float32 once, windows are cut from it there.

A DR2 mosaic is stored as big-endian float64; reading every window through the memory map converts each
pixel once per window that covers it (64 times at 87.5% overlap). :class:`ResidentMosaics` converts the
whole image once (byte swap, float32, NaN fill, integer scaling) into a tensor on the device that consumes
the windows, and cuts any batch of windows from it with one indexing operation on that device. Windows come
in mosaic-major order (``cutout_id`` order is mosaic-major), so each process holds one or two mosaics at a
time; background threads load the next ones while the current one is in use.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor

from radio_curation.sky.fitsio import open_image

__all__ = ["ResidentMosaics", "load_mosaic", "window_view"]

#: Rows converted per step while loading a mosaic (a strip stays in the CPU caches for the NaN pass).
STRIP_ROWS = 64


def load_mosaic(path: str | Path, fill: float, pin_memory: bool = False) -> Tensor:
    """The whole image of a FITS mosaic as a native float32 CPU tensor, NaN replaced by ``fill``.

    The values are exactly those :meth:`WindowReader.read` returns for any window of the mosaic (the same
    casts in the same order, done once per pixel).

    Parameters
    ----------
    path
        FITS file (float or integer-scaled image; degenerate extra axes are squeezed).
    fill
        Value for NaN (blank) pixels.
    pin_memory
        Allocate the tensor in page-locked memory (for fast asynchronous copies to a GPU).
    """
    hdul, image, _ = open_image(path)
    with hdul:
        ny, nx = image.shape
        out = torch.empty((ny, nx), dtype=torch.float32, pin_memory=pin_memory)
        pixels = out.numpy()
        fill32 = np.float32(fill)
        for start in range(0, ny, STRIP_ROWS):
            stop = min(start + STRIP_ROWS, ny)
            strip = pixels[start:stop]
            source = image.rows(start, stop) if image.scaled else image.raw[start:stop]
            np.copyto(strip, source, casting="unsafe")
            np.copyto(strip, fill32, where=np.isnan(strip))
    return out


def window_view(image: Tensor, size: int) -> Tensor:
    """Every ``size``² window of a 2-D image as a ``[ny - size + 1, nx - size + 1, size, size]`` view."""
    ny, nx = image.shape
    sy, sx = image.stride()
    return image.as_strided((ny - size + 1, nx - size + 1, size, size), (sy, sx, sy, sx))


class ResidentMosaics:
    """Whole mosaics on one device, loaded ahead in background threads; windows gathered from them.

    Parameters
    ----------
    paths
        Mosaic files; position ``i`` is mosaic code ``i`` of the window index.
    fill
        Value for NaN (blank) pixels.
    device
        Where the mosaics live and windows are cut (the model's device, or the CPU of a loader process).
    order
        Mosaic codes in the order they will be used; the next ``ahead`` of them are loaded in the
        background while the current one is in use. Codes outside it are loaded when first asked for.
    ahead
        Background loader threads (0: load when first needed, in the calling thread).
    keep
        Most mosaics held at once besides those being loaded ahead (least recently used ones are dropped).

    Notes
    -----
    Picklable: only the settings travel; a process holds its own mosaics and threads.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        fill: float,
        device: torch.device | str = "cpu",
        order: Sequence[int] = (),
        ahead: int = 0,
        keep: int = 2,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.fill = float(fill)
        self.device = torch.device(device)
        self.order = [int(m) for m in order]
        self.ahead = int(ahead)
        self.keep = max(1, int(keep))
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._held: OrderedDict[int, Tensor] = OrderedDict()
        self._loading: dict[int, Future[Tensor]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        keys = ("paths", "fill", "device", "order", "ahead", "keep")
        return {key: getattr(self, key) for key in keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def _load(self, mosaic: int) -> Tensor:
        return load_mosaic(self.paths[mosaic], self.fill, pin_memory=self.device.type == "cuda")

    def _prefetch_after(self, mosaic: int) -> None:
        if self.ahead < 1 or mosaic not in self.order:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.ahead, thread_name_prefix="mosaic-loader")
        position = self.order.index(mosaic)
        for following in self.order[position + 1 : position + 1 + self.ahead]:
            if following not in self._held and following not in self._loading:
                self._loading[following] = self._pool.submit(self._load, following)

    def image(self, mosaic: int) -> Tensor:
        """The whole float32 image of mosaic ``mosaic`` on :attr:`device` (loaded if not held yet)."""
        if self._pid != os.getpid():
            # A forked copy must not wait on the parent's threads.
            self._reset()
        mosaic = int(mosaic)
        if mosaic in self._held:
            self._held.move_to_end(mosaic)
            return self._held[mosaic]
        pending = self._loading.pop(mosaic, None)
        host = pending.result() if pending is not None else self._load(mosaic)
        # From page-locked memory the copy to a GPU is asynchronous; the caching host allocator keeps the
        # buffer alive until the copy is done.
        image = host.to(self.device, non_blocking=True)
        self._held[mosaic] = image
        while len(self._held) > self.keep:
            self._held.popitem(last=False)
        self._prefetch_after(mosaic)
        return image

    def gather(
        self, mosaic: np.ndarray | Tensor, y0: np.ndarray | Tensor, x0: np.ndarray | Tensor, size: int
    ) -> Tensor:
        """Windows of ``size`` px with top-left corners ``(y0, x0)`` of mosaics ``mosaic``, in the order given.

        Positions given as NumPy arrays are grouped by mosaic on the host, so cutting windows on a GPU
        never waits for it.

        Returns
        -------
        torch.Tensor
            float32 ``[B, 1, size, size]`` on :attr:`device`: bitwise the pixels ``WindowReader.read``
            gives for the same windows.
        """
        mosaic = np.asarray(mosaic.cpu() if isinstance(mosaic, Tensor) else mosaic, dtype=np.int64)
        codes = np.unique(mosaic)
        if self.device.type == "cpu":
            return self._gather_host(mosaic, codes, y0, x0, size)
        y0, x0 = (torch.as_tensor(v, dtype=torch.int64).to(self.device, non_blocking=True) for v in (y0, x0))
        out = torch.empty((len(mosaic), 1, size, size), dtype=torch.float32, device=self.device)
        if len(codes) == 1:
            out[:, 0] = window_view(self.image(codes[0]), size)[y0, x0]
            return out
        for code in codes:
            rows = torch.from_numpy(np.flatnonzero(mosaic == code)).to(self.device, non_blocking=True)
            out[rows, 0] = window_view(self.image(code), size)[y0[rows], x0[rows]]
        return out

    def _gather_host(
        self,
        mosaic: np.ndarray,
        codes: np.ndarray,
        y0: np.ndarray | Tensor,
        x0: np.ndarray | Tensor,
        size: int,
    ) -> Tensor:
        """:meth:`gather` on the CPU, by NumPy's fancy indexing (half the time of torch's on a window view)."""
        y0, x0 = (np.asarray(v.cpu() if isinstance(v, Tensor) else v, dtype=np.int64) for v in (y0, x0))
        if len(codes) == 1:
            windows = sliding_window_view(self.image(codes[0]).numpy(), (size, size))[y0, x0]
            return torch.from_numpy(windows)[:, None]
        out = np.empty((len(mosaic), 1, size, size), dtype=np.float32)
        for code in codes:
            rows = np.flatnonzero(mosaic == code)
            out[rows, 0] = sliding_window_view(self.image(code).numpy(), (size, size))[y0[rows], x0[rows]]
        return torch.from_numpy(out)

    def close(self) -> None:
        """Drop the held mosaics and stop the loader threads of this process."""
        if self._pool is not None and self._pid == os.getpid():
            for pending in self._loading.values():
                pending.cancel()
            self._pool.shutdown(wait=True)
        self._reset()
