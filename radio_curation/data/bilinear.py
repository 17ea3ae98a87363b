"""Bilinear upsampling of one-channel CPU batches, bitwise torch's kernel, in half its time on one thread.

``F.interpolate(x, size, mode="bilinear", align_corners=False)`` on a contiguous ``[B, 1, H, W]`` CPU batch
computes, for every output pixel, ``r(h) = x[h, w0]·a0 + x[h, w1]·a1`` for its two source rows, then
``r(h0)·b0 + r(h1)·b1``, each pair summed with one fused multiply-add where torch's build contracts it.
Torch recomputes ``r`` for every output pixel; :func:`upsample_bilinear` computes each source row's ``r``
once (separable), with the same operations on the same values, so the result is bitwise the same.

Whether it is the same is not taken on trust: the first time a process resizes ``H×W`` to ``OH×OW``, it
compares both on a random probe and keeps torch's kernel where they differ (a torch build without fused
multiply-adds, or sizes that torch sends to another kernel).
"""

from __future__ import annotations

from functools import cache

import numba
import numpy as np
import torch
from numba import types
from numba.extending import intrinsic
from torch import Tensor

__all__ = ["upsample_bilinear"]

aten = torch.ops.aten


@intrinsic
def _fma(typingctx, a, b, c):
    """``a·b + c`` rounded once (float32), as the compiler fuses ``a * b + c`` in torch's CPU kernels."""
    signature = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, sig, args):
        return builder.fma(*args)

    return signature, codegen


@numba.njit(cache=True, nogil=True)
def _axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of one axis, as torch computes them (``align_corners=False``)."""
    scale = np.float32(n_in) / np.float32(n_out)
    first = np.empty(n_out, np.int64)
    second = np.empty(n_out, np.int64)
    w_first = np.empty(n_out, np.float32)
    w_second = np.empty(n_out, np.float32)
    for o in range(n_out):
        source = _fma(scale, np.float32(o) + np.float32(0.5), np.float32(-0.5))
        if source < np.float32(0.0):
            source = np.float32(0.0)
        index = min(np.int64(np.floor(source)), n_in - 1)
        weight = min(max(source - np.float32(index), np.float32(0.0)), np.float32(1.0))
        first[o] = index
        second[o] = index + 1 if index < n_in - 1 else index
        w_first[o] = np.float32(1.0) - weight
        w_second[o] = weight
    return first, second, w_first, w_second


@numba.njit(cache=True, nogil=True)
def _upsample(x: np.ndarray, out: np.ndarray) -> None:
    """``x`` ``[B, H, W]`` → ``out`` ``[B, OH, OW]``, float32, both C-contiguous."""
    batch, height, width = x.shape
    out_height, out_width = out.shape[1], out.shape[2]
    col0, col1, a0, a1 = _axis(width, out_width)
    row0, row1, b0, b1 = _axis(height, out_height)
    rows = np.empty((height, out_width), np.float32)
    for b in range(batch):
        for h in range(height):
            source = x[b, h]
            target = rows[h]
            for o in range(out_width):
                target[o] = _fma(source[col0[o]], a0[o], source[col1[o]] * a1[o])
        for o in range(out_height):
            top, bottom = rows[row0[o]], rows[row1[o]]
            w_top, w_bottom = b0[o], b1[o]
            line = out[b, o]
            for j in range(out_width):
                line[j] = _fma(top[j], w_top, bottom[j] * w_bottom)


@cache
def _bitwise_torch(height: int, width: int, out_height: int, out_width: int) -> bool:
    """Whether :func:`_upsample` gives torch's CPU result bitwise for these sizes, on a random probe."""
    probe = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, height, width), np.float32))
    want = aten.upsample_bilinear2d(probe, [out_height, out_width], False, None, None)
    got = torch.empty_like(want)
    _upsample(probe.numpy()[:, 0], got.numpy()[:, 0])
    return torch.equal(got, want)


def upsample_bilinear(x: Tensor, size: tuple[int, int], out: Tensor | None = None) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` of a ``[B, 1, H, W]`` batch, bitwise.

    On one CPU thread (a loader worker's) a float32 batch goes through the separable kernel; otherwise,
    or where the probe found it differs from torch's, through torch's kernel (which splits a batch over
    several threads).

    Parameters
    ----------
    x
        ``[B, 1, H, W]`` windows.
    size
        ``(OH, OW)``.
    out
        A float32 ``[B, 1, OH, OW]`` tensor for the result (else a new one).
    """
    out_height, out_width = (int(s) for s in size)
    fast = (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.shape[1] == 1
        and not (x.requires_grad and torch.is_grad_enabled())
        and (out is None or (out.dtype == torch.float32 and out.device.type == "cpu" and out.is_contiguous()))
        and torch.get_num_threads() == 1
        and _bitwise_torch(x.shape[-2], x.shape[-1], out_height, out_width)
    )
    if not fast:
        # The kernel F.interpolate calls, or its form that writes into `out`.
        if out is None:
            return aten.upsample_bilinear2d(x, [out_height, out_width], False, None, None)
        return aten.upsample_bilinear2d.out(x, [out_height, out_width], False, None, None, out=out)
    if out is None:
        out = torch.empty((x.shape[0], 1, out_height, out_width), dtype=torch.float32)
    _upsample(x.contiguous().numpy()[:, 0], out.numpy()[:, 0])
    return out
