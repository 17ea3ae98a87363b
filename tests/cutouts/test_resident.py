"""Resident mosaics give bitwise the window reader's pixels, load ahead in order and hold a bounded number."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from astropy.io import fits

from radio_curation.cutouts.merge import Merger
from radio_curation.cutouts.reader import WindowReader
from radio_curation.cutouts.resident import ResidentMosaics, load_mosaic
from radio_curation.cutouts.strategies import SlidingWindow
from radio_curation.sky.fitsio import MosaicFiles
from tests.cutouts.helpers import merged_file
from tests.sky.helpers import noise_image, sin_header, write_image

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """Three big-endian float64 mosaics with blanked corners, cut into 64 px (50%) and 32 px windows."""
    root = tmp_path_factory.mktemp("resident")
    files = []
    for i, ra in enumerate((10.0, 120.0, 240.0)):
        data = noise_image(200, 230, seed=i)
        data[:40, :40] = np.nan
        files.append(
            MosaicFiles(
                f"m{i}", write_image(root / f"m{i}.fits", data, sin_header(200, 230, crval=(ra, 30.0)))
            )
        )
    strategy = {"nan_policy": "max_fraction", "max_nan_fraction": 0.5, "nan_fill": -1.0}
    return merged_file(
        root / "index",
        [(files, SlidingWindow(64, 0.5, **strategy)), (files, SlidingWindow(32, 0.0, **strategy))],
        Merger(dedup=False),
    )


def _where(reader: WindowReader, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    pos = reader.positions(ids)
    return pos["mosaic"], pos["y0"], pos["x0"], int(pos["size"][0])


def test_gather_is_bitwise_the_reader_in_any_order_and_mix_of_mosaics(merged):
    reader = WindowReader(merged)
    resident = ResidentMosaics(reader.mosaic_paths, reader.nan_fill)
    sizes = reader.table()["size"]
    rng = np.random.default_rng(0)
    for size in (32, 64):
        # A shuffled batch across all three mosaics, blanked windows included.
        ids = rng.permutation(reader.cutout_ids[sizes == size])[:60]
        got = resident.gather(*_where(reader, ids))
        assert got.dtype == torch.float32 and got.shape == (60, 1, size, size)
        want = reader.read(ids)
        assert (want == -1.0).any()
        assert np.array_equal(got.numpy(), want)
    # One mosaic only (the fast path).
    ids = reader.cutout_ids[(sizes == 64) & (reader.positions(reader.cutout_ids)["mosaic"] == 1)][:9]
    assert np.array_equal(resident.gather(*_where(reader, ids)).numpy(), reader.read(ids))


def test_scaled_integer_mosaic_is_bitwise_the_reader(tmp_path):
    rng = np.random.default_rng(5)
    raw = rng.integers(-1000, 1000, (96, 96)).astype(np.int32)
    raw[:10, :10] = -32768
    hdu = fits.PrimaryHDU(raw, header=sin_header(96, 96))
    hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 1e-5, 2e-3, -32768
    hdu.writeto(tmp_path / "int.fits")
    strategy = SlidingWindow(32, 0.5, nan_policy="max_fraction", max_nan_fraction=0.5, nan_fill=3.0)
    path = merged_file(tmp_path / "index", [([MosaicFiles("int", tmp_path / "int.fits")], strategy)])
    reader = WindowReader(path)
    resident = ResidentMosaics(reader.mosaic_paths, reader.nan_fill)
    want = reader.read(reader.cutout_ids)
    assert (want == 3.0).any()
    assert np.array_equal(resident.gather(*_where(reader, reader.cutout_ids)).numpy(), want)
    assert load_mosaic(tmp_path / "int.fits", 3.0).shape == (96, 96)


def test_loads_ahead_in_order_and_holds_a_bounded_number(merged, monkeypatch):
    reader = WindowReader(merged)
    resident = ResidentMosaics(reader.mosaic_paths, reader.nan_fill, order=[2, 0, 1], ahead=1, keep=1)
    loaded = []
    real = resident._load

    def spy(mosaic: int) -> torch.Tensor:
        loaded.append(mosaic)
        return real(mosaic)

    monkeypatch.setattr(resident, "_load", spy)
    first = resident.image(2)
    # Using mosaic 2 started loading the next one of the order (0) in the background, and nothing else.
    resident._loading[0].result()
    assert loaded == [2, 0] and list(resident._held) == [2]
    assert torch.equal(resident.image(0), load_mosaic(reader.mosaic_paths[0], reader.nan_fill))
    resident._loading[1].result()  # the next one of the order (1), loading in the background
    assert loaded == [2, 0, 1] and list(resident._held) == [0]
    assert first.shape == (200, 230)
    # Settings travel, mosaics and threads do not.
    clone = pickle.loads(pickle.dumps(resident))
    assert not clone._held and not clone._loading and clone.order == [2, 0, 1]
    resident.close()
    assert not resident._held and resident._pool is None


@cuda
def test_gather_on_a_cuda_device_is_bitwise_the_cpu_gather(merged):
    reader = WindowReader(merged)
    ids = reader.cutout_ids[reader.table()["size"] == 64]
    on_gpu = ResidentMosaics(reader.mosaic_paths, reader.nan_fill, "cuda", order=[0, 1, 2], ahead=2)
    got = on_gpu.gather(*_where(reader, ids))
    assert got.is_cuda
    assert np.array_equal(got.cpu().numpy(), reader.read(ids))
    on_gpu.close()
