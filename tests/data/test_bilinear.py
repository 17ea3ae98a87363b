"""The separable bilinear upsampling gives torch's CPU kernel bitwise, and torch's kernel where it cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from radio_curation.data import bilinear
from radio_curation.data.bilinear import upsample_bilinear

# Torch's CPU kernels fuse multiply-adds where its build targets AVX2 or AVX-512; the separable kernel
# follows those builds (elsewhere the probe sends every resize to torch's kernel).
fused = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() == "DEFAULT", reason="torch's CPU kernels built without FMA"
)


def radio_windows(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Noise of ~3e-3 Jy/beam with bright compact sources, and one window scaled to [0, 1] (minmax)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(2e-5, 3e-3, (n, 1, height, width)).astype(np.float32)
    x[:, 0, height // 3, width // 2] += 0.5
    x[0] = (x[0] - x[0].min()) / (x[0].max() - x[0].min())
    return torch.from_numpy(x)


def torch_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@pytest.fixture
def one_thread():
    """As in a loader worker, where the separable kernel runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Calls of the separable kernel on data (the per-process probes are made before counting)."""
    calls = []
    kernel = bilinear._upsample

    def counted(x, out):
        calls.append(x.shape)
        kernel(x, out)

    for sizes in [(128, 128, 224, 224), (64, 64, 224, 224), (40, 40, 97, 64), (32, 32, 48, 48)]:
        bilinear._bitwise_torch(*sizes)
    monkeypatch.setattr(bilinear, "_upsample", counted)
    return calls


@fused
@pytest.mark.parametrize(
    ("size", "out_size"), [((128, 128), (224, 224)), ((64, 64), (224, 224)), ((40, 40), (97, 64))]
)
def test_separable_kernel_is_bitwise_torchs(one_thread, kernel_calls, size, out_size):
    x = radio_windows(9, *size)
    want = torch_resize(x, out_size)
    got = upsample_bilinear(x, out_size)
    assert got.shape == (9, 1, *out_size) and torch.equal(got, want)
    # Into a slice of a larger (shared) buffer, as the loader workers write.
    buffer = torch.full((12, 1, *out_size), float("nan"))
    into = upsample_bilinear(x[3:8], out_size, out=buffer[2:7])
    assert into.data_ptr() == buffer[2].data_ptr() and torch.equal(buffer[2:7], want[3:8])
    assert buffer[:2].isnan().all() and buffer[7:].isnan().all()
    # Both calls went through the separable kernel, not torch's.
    assert kernel_calls == [(9, *size), (5, *size)]


@fused
def test_a_window_view_is_read_as_its_values(one_thread, kernel_calls):
    x = radio_windows(4, 160, 160)[:, :, 7:135, 20:148]
    assert not x.is_contiguous()
    assert torch.equal(upsample_bilinear(x, (224, 224)), torch_resize(x, (224, 224)))
    assert len(kernel_calls) == 1


def test_sizes_torch_sends_elsewhere_and_many_threads_take_torchs_kernel(kernel_calls):
    threads = torch.get_num_threads()
    try:
        # Small outputs (height + width <= 128) go to torch's channels-last kernel: another summation order.
        torch.set_num_threads(1)
        assert not bilinear._bitwise_torch(32, 32, 48, 48)
        x = radio_windows(5, 32, 32)
        assert torch.equal(upsample_bilinear(x, (48, 48)), torch_resize(x, (48, 48)))
        # With several compute threads torch's kernel splits the batch over them.
        torch.set_num_threads(2)
        x = radio_windows(5, 128, 128)
        assert torch.equal(upsample_bilinear(x, (224, 224)), torch_resize(x, (224, 224)))
        # float64 and gradients stay with torch too.
        torch.set_num_threads(1)
        x64 = x.double()
        assert torch.equal(upsample_bilinear(x64, (224, 224)), torch_resize(x64, (224, 224)))
        into64 = torch.empty((5, 1, 224, 224), dtype=torch.float64)
        upsample_bilinear(x64, (224, 224), out=into64)
        assert torch.equal(into64, torch_resize(x64, (224, 224)))
        grad = x.clone().requires_grad_()
        upsample_bilinear(grad, (224, 224)).sum().backward()
        assert grad.grad is not None
    finally:
        torch.set_num_threads(threads)
    assert kernel_calls == []
