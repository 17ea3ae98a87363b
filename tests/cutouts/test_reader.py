"""The window reader returns exactly the mosaic pixels, in the order asked, in any process."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from astropy.io import fits
from torch.utils.data import DataLoader, Dataset

from radio_curation.cutouts.merge import Merger
from radio_curation.cutouts.reader import WindowReader
from radio_curation.cutouts.strategies import SlidingWindow
from radio_curation.errors import RadioCurationError
from radio_curation.sky.fitsio import MosaicFiles
from tests.cutouts.helpers import merged_file
from tests.sky.helpers import noise_image, sin_header, write_image


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory):
    """Two float64 mosaics far apart on the sky (so no deduplication) with blanked corners."""
    root = tmp_path_factory.mktemp("reader")
    arrays = {}
    files = []
    for i, ra in enumerate((10.0, 200.0)):
        data = noise_image(200, 230, seed=i)
        data[:40, :40] = np.nan
        path = write_image(root / f"m{i}.fits", data, sin_header(200, 230, crval=(ra, 30.0)))
        arrays[f"m{i}"] = data
        files.append(MosaicFiles(f"m{i}", path))
    return root, files, arrays


@pytest.fixture(scope="module")
def merged(mosaics):
    root, files, _ = mosaics
    return merged_file(
        root / "index",
        [
            (files, SlidingWindow(64, 0.5, nan_policy="max_fraction", max_nan_fraction=0.5, nan_fill=-1.0)),
            (files, SlidingWindow(32, 0.0, nan_policy="max_fraction", max_nan_fraction=0.5, nan_fill=-1.0)),
        ],
        Merger(dedup=False),
    )


def _expected(arrays, table, rows, fill):
    out = []
    for row in rows:
        y0, x0, size = table["y0"][row], table["x0"][row], table["size"][row]
        window = arrays[table["mosaic"][row]][y0 : y0 + size, x0 : x0 + size].astype(np.float32)
        out.append(np.where(np.isnan(window), np.float32(fill), window))
    return np.stack(out)[:, None]


def test_reader_returns_exactly_the_mosaic_pixels_in_the_order_asked(mosaics, merged):
    _, _, arrays = mosaics
    reader = WindowReader(merged)
    table = reader.table()
    assert set(table) >= {
        "cutout_id",
        "mosaic",
        "y0",
        "x0",
        "size",
        "ra",
        "dec",
        "nan_fraction",
        "rms",
        "peak_snr",
        "mask_fraction",
    }
    assert table["mosaic"].dtype.kind == "U" and set(table["mosaic"]) == {"m0", "m1"}
    np.testing.assert_array_equal(reader.cutout_ids, table["cutout_id"])
    assert (np.diff(reader.cutout_ids) > 0).all() and reader.cutout_ids.dtype == np.int64
    rng = np.random.default_rng(0)
    for size in (32, 64):
        rows = rng.permutation(np.flatnonzero(table["size"] == size))[:40]
        batch = reader.read(table["cutout_id"][rows])
        assert batch.dtype == np.float32 and batch.shape == (len(rows), 1, size, size)
        # The recorded nan_fill (-1) replaces blanked pixels; everything else is the mosaic's value.
        np.testing.assert_array_equal(batch, _expected(arrays, table, rows, -1.0))
    assert (table["nan_fraction"] > 0).any()
    reader.close()


def test_nan_fill_can_be_overridden(mosaics, merged):
    _, _, arrays = mosaics
    reader = WindowReader(merged, nan_fill=0.0)
    table = reader.table()
    rows = np.flatnonzero((table["nan_fraction"] > 0) & (table["size"] == 64))[:5]
    np.testing.assert_array_equal(reader.read(table["cutout_id"][rows]), _expected(arrays, table, rows, 0.0))
    assert reader.nan_fill == 0.0


def test_mixed_sizes_and_unknown_ids_are_user_errors(merged):
    reader = WindowReader(merged)
    table = reader.table()
    mixed = [table["cutout_id"][table["size"] == 32][0], table["cutout_id"][table["size"] == 64][0]]
    with pytest.raises(RadioCurationError, match=r"sizes \[32, 64\]"):
        reader.read(mixed)
    with pytest.raises(RadioCurationError, match="not in"):
        reader.read([reader.cutout_ids.max() + 1])
    with pytest.raises(RadioCurationError, match="not found"):
        WindowReader(merged.parent / "nothing.h5")
    cutouts_index = next(merged.parent.glob("run0/*.h5"))
    with pytest.raises(RadioCurationError, match=r"cutout_id.*needs the merged\.h5 of a merge run"):
        WindowReader(cutouts_index)


def test_pickled_reader_opens_its_own_mosaics(merged):
    reader = WindowReader(merged, max_open=1)
    ids = reader.cutout_ids[reader.table()["size"] == 64]
    pick = np.concatenate([ids[:3], ids[-3:]])
    expected = reader.read(pick)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._columns is None and len(pickle.dumps(reader)) < 1000
    np.testing.assert_array_equal(clone.read(pick), expected)
    # Two mosaics with max_open=1: the least recently used one was closed.
    assert len(clone._open) == 1


class _Windows(Dataset):
    def __init__(self, reader, ids):
        self.reader, self.ids = reader, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return torch.from_numpy(self.reader.read([self.ids[i]])[0])


def test_reader_works_in_dataloader_workers(merged):
    reader = WindowReader(merged)
    ids = reader.cutout_ids[reader.table()["size"] == 32][:24]
    loader = DataLoader(_Windows(reader, ids), batch_size=8, num_workers=2)
    batches = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(batches, reader.read(ids))


def test_scaled_integer_mosaic_reads_physical_values(tmp_path):
    rng = np.random.default_rng(5)
    raw = rng.integers(-1000, 1000, (96, 96)).astype(np.int16)
    hdu = fits.PrimaryHDU(raw, header=sin_header(96, 96))
    hdu.header["BSCALE"], hdu.header["BZERO"] = 1e-5, 2e-3
    hdu.writeto(tmp_path / "int.fits")
    path = merged_file(
        tmp_path / "index", [([MosaicFiles("int", tmp_path / "int.fits")], SlidingWindow(32, 0.0))]
    )
    reader = WindowReader(path)
    table = reader.table()
    batch = reader.read(reader.cutout_ids)
    physical = fits.getdata(tmp_path / "int.fits", memmap=False)
    assert physical.dtype == np.float32
    for row in range(len(table["y0"])):
        y0, x0 = table["y0"][row], table["x0"][row]
        np.testing.assert_array_equal(batch[row, 0], physical[y0 : y0 + 32, x0 : x0 + 32])
