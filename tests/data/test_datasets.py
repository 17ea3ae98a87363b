"""Labelled evaluation sets: MiraBest folder and pickled batches, FITS folders, synthetic windows, catalogues."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from radio_curation.data.catalogue import WindowCatalogue
from radio_curation.data.datasets import (
    MIRABEST_CODES,
    FitsFolder,
    MiraBest,
    SyntheticWindows,
    mirabest_labels,
)
from radio_curation.errors import RadioCurationError
from radio_curation.sky.survey import SyntheticSurvey


def test_mirabest_folder_reads_all_images_with_labels(shared_data):
    data = MiraBest(shared_data / "mirabest", subset="all").load()
    assert len(data) == 1255
    assert data.images.shape == (1255, 1, 150, 150) and data.images.dtype == np.float32
    assert np.isfinite(data.images).all()
    assert data.class_counts() == {"FRI": 591, "FRII": 630, "hybrid": 34}
    assert set(data.split.tolist()) == {"train", "test"}
    assert data.names[0].startswith("images/")


def test_mirabest_confident_subset_has_832(shared_data):
    data = MiraBest(shared_data / "mirabest", subset="confident").load()
    assert len(data) == 832
    assert data.class_names == ("FRI", "FRII")
    assert data.class_counts() == {"FRI": 397, "FRII": 435}


def test_mirabest_subsets_from_codes():
    codes = np.array(MIRABEST_CODES)
    keep, labels, names = mirabest_labels(codes, "confident")
    assert codes[keep].tolist() == [100, 102, 104, 200, 201]
    assert labels.tolist() == [0, 0, 0, 1, 1] and names == ("FRI", "FRII")
    keep, labels, _ = mirabest_labels(codes, "uncertain")
    assert codes[keep].tolist() == [110, 112, 210] and labels.tolist() == [0, 0, 1]
    keep, labels, names = mirabest_labels(codes, "all")
    assert keep.all() and labels.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 2, 2] and len(names) == 3
    with pytest.raises(RadioCurationError, match=r"dataset\.subset"):
        mirabest_labels(codes, "bogus")


def _write_batch(path, labels, side=8, with_filenames=True, seed=0):
    rng = np.random.default_rng(seed)
    batch = {
        "batch_label": path.name,
        "labels": list(labels),
        "data": rng.integers(0, 256, size=(len(labels), side * side), dtype=np.uint8),
    }
    if with_filenames:
        batch["filenames"] = [f"{path.name}_{i}.png" for i in range(len(labels))]
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return batch


def test_official_batches_are_read_with_split_and_subset(tmp_path):
    folder = tmp_path / "batches"
    folder.mkdir()
    b1 = _write_batch(folder / "data_batch_1", [0, 5, 3, 8])
    _write_batch(folder / "data_batch_2", [1, 6], seed=1)
    test = _write_batch(folder / "test_batch", [2, 7, 5], with_filenames=False, seed=2)

    everything = MiraBest(tmp_path, subset="all").load()  # finds batches/ under the root
    assert len(everything) == 9
    assert everything.images.shape == (9, 1, 8, 8)
    np.testing.assert_array_equal(everything.images[0, 0], b1["data"][0].reshape(8, 8))
    assert everything.split.tolist() == ["train"] * 6 + ["test"] * 3
    assert everything.labels.tolist() == [0, 1, 0, 2, 0, 1, 0, 1, 1]
    assert everything.names[-1] == "test_batch:2"

    confident = MiraBest(folder, subset="confident", layout="batches").load()
    # Official indices 0,1,2 = confident FRI, 5,6 = confident FRII.
    assert confident.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert confident.split.tolist() == ["train"] * 4 + ["test"] * 2
    np.testing.assert_array_equal(confident.images[-1, 0], test["data"][2].reshape(8, 8))


def _official_batch(path, labels, value, side=150, data=None):
    """A batch as the distributed files are: a protocol-2 pickle with bytes keys and bytes file names,
    ``side``-pixel images flattened to uint8 rows (every pixel of image ``i`` = ``value + i``)."""
    if data is None:
        data = (value + np.arange(len(labels), dtype=np.uint8))[:, None].repeat(side * side, axis=1)
    batch = {
        b"batch_label": f"{path.name} of 10".encode(),
        b"labels": list(labels),
        b"data": data,
        b"filenames": [f"{path.name}_{i}.png".encode() for i in range(len(labels))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def test_official_batches_with_bytes_keys_150_px_images_and_ten_train_batches(tmp_path):
    # Written out of order, and past data_batch_9: numeric order puts data_batch_10 last, not after _1.
    for number in (10, 2, 9, 1):
        _official_batch(tmp_path / f"data_batch_{number}", [0, 5], value=10 * number)
    _official_batch(tmp_path / "test_batch", [1, 6, 3], value=200)
    data = MiraBest(tmp_path, subset="all").load()
    assert data.images.shape == (11, 1, 150, 150) and data.images.dtype == np.float32
    assert data.images[:, 0, 75, 75].tolist() == [10, 11, 20, 21, 90, 91, 100, 101, 200, 201, 202]
    assert data.names[:2].tolist() == ["data_batch_1_0.png", "data_batch_1_1.png"]
    assert data.names[-1] == "test_batch_2.png"
    assert data.split.tolist() == ["train"] * 8 + ["test"] * 3
    assert data.labels.tolist() == [0, 1] * 4 + [0, 1, 0]  # official 0 and 1: FRI, 5 and 6: FRII
    cropped = MiraBest(tmp_path, subset="confident", center_crop=128).load()
    assert cropped.images.shape == (10, 1, 128, 128)  # test_batch's index 3 (uncertain FRI) left out


@pytest.mark.parametrize(
    ("labels", "pixels", "match"),
    [
        ([0, 10], None, "labels must be 0–9"),
        ([-1, 0], None, "labels must be 0–9"),
        ([0, 5], 150 * 149, "rows of 22350 pixels are not square images"),
    ],
)
def test_official_batches_with_bad_labels_or_shapes_are_clear_errors(tmp_path, labels, pixels, match):
    data = None if pixels is None else np.zeros((len(labels), pixels), dtype=np.uint8)
    _official_batch(tmp_path / "data_batch_1", labels, value=0, data=data)
    with pytest.raises(RadioCurationError, match=match):
        MiraBest(tmp_path, subset="all").load()


def test_a_pickle_that_is_not_a_batch_is_a_clear_error(tmp_path):
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 4), dtype=np.uint8)}, f, protocol=2)
    with pytest.raises(RadioCurationError, match="is not a MiraBest batch"):
        MiraBest(tmp_path).load()


def test_mirabest_root_without_data_is_a_clear_error(tmp_path):
    with pytest.raises(RadioCurationError, match=r"neither labels\.csv"):
        MiraBest(tmp_path).load()
    with pytest.raises(RadioCurationError, match="does not exist"):
        MiraBest(tmp_path / "missing").load()


def test_fits_folder_loads_raw_archive_files_with_non_ascii_cards(shared_data, tmp_path):
    raw = shared_data / "mirabest" / "raw_examples"
    files = sorted(p.name for p in raw.glob("*.fits"))
    table = tmp_path / "labels.csv"
    table.write_text("file,label\n" + "".join(f"{f},{f[0]}xx\n" for f in files))
    data = FitsFolder(raw, labels=table, center_crop=150).load()
    assert len(data) == 3
    assert data.images.shape == (3, 1, 150, 150)
    with fits.open(raw / files[0]) as hdul:
        full = hdul[0].data.astype(np.float32)
    np.testing.assert_array_equal(data.images[0, 0], full[75:225, 75:225])
    assert data.class_names == ("1xx", "3xx")
    assert data.split is None


def test_fits_folder_mixed_sizes_need_center_crop(tmp_path):
    for name, shape in (("a.fits", (20, 20)), ("b.fits", (16, 16))):
        image = np.ones(shape, dtype=np.float32)
        image[0, 0] = np.nan
        fits.PrimaryHDU(image[None, None]).writeto(tmp_path / name)  # 4-D like radio archives
    (tmp_path / "labels.csv").write_text("file,label,split\na.fits,x,train\nb.fits,y,test\n")
    with pytest.raises(RadioCurationError, match=r"dataset\.center_crop"):
        FitsFolder(tmp_path).load()
    data = FitsFolder(tmp_path, center_crop=12, nan_fill=-1.0).load()
    assert data.images.shape == (2, 1, 12, 12)
    assert data.split.tolist() == ["train", "test"]
    assert (data.images == 1.0).all()  # the NaN corner is cropped away
    uncropped_b = FitsFolder(tmp_path, center_crop=16, nan_fill=-1.0).load().images[1, 0]
    assert uncropped_b[0, 0] == -1.0 and uncropped_b[1, 1] == 1.0


def test_fits_folder_reports_missing_columns(tmp_path):
    (tmp_path / "labels.csv").write_text("path,class\nx.fits,a\n")
    with pytest.raises(RadioCurationError, match="lacks column"):
        FitsFolder(tmp_path).load()


@pytest.fixture(scope="module")
def small_sky(data_dir):
    return SyntheticSurvey(str(data_dir), mosaics=1, size=512, seed=0)


def test_synthetic_windows_are_centred_on_truth_sources(small_sky):
    data = SyntheticWindows(
        small_sky, window=32, classes=["compact", "resolved"], per_class=15, min_flux=0
    ).load()
    truth = Table.read(Path(small_sky.root) / "truth.fits")
    assert data.class_names == ("compact", "resolved")
    assert data.images.shape[1:] == (1, 32, 32) and np.isfinite(data.images).all()
    counts = data.class_counts()
    assert counts["compact"] == 15 and 1 <= counts["resolved"] <= 15
    by_id = {int(s): str(c) for s, c in zip(truth["source_id"], truth["class"], strict=True)}
    for name, label in zip(data.names, data.labels, strict=True):
        assert by_id[int(name.removeprefix("source_"))] == data.class_names[label]
    bright = SyntheticWindows(small_sky, window=32, classes=["compact"], per_class=50, min_flux=5e-3).load()
    peaks = np.array([np.unravel_index(np.argmax(im[0]), im[0].shape) for im in bright.images])
    assert (np.abs(peaks - 16).max(axis=1) <= 1).mean() > 0.7  # mostly the source itself


def test_synthetic_windows_reject_unknown_classes(small_sky):
    with pytest.raises(RadioCurationError, match="not truth classes"):
        SyntheticWindows(small_sky, classes=["spiral"]).load()


def test_catalogue_labels_windows_by_brightest_source_within_radius(tmp_path):
    table = Table(
        {
            "RA": [10.0, 10.0 + 20 / 3600, 20.0],
            "DEC": [5.0, 5.0, -3.0],
            "kind": ["faint", "bright", "far"],
            "S": [1.0, 9.0, 5.0],
            "P": [0.8, 0.5, 4.0],  # peak brightness: the bright source is extended, faint per beam
        }
    )
    path = tmp_path / "cat.ecsv"
    table.write(path)
    ra = np.array([10.0, 20.0 + 50 / 3600, 30.0])
    dec = np.array([5.0, -3.0, 0.0])
    brightest = WindowCatalogue(path, "RA", "DEC", "kind", "S", radius_arcsec=30.0)
    assert brightest.labels(ra, dec).tolist() == ["bright", "empty", "empty"]
    nearest = WindowCatalogue(path, "RA", "DEC", "kind", None, radius_arcsec=60.0, empty_label="none")
    assert nearest.labels(ra, dec).tolist() == ["faint", "far", "none"]
    per_window = WindowCatalogue(path, "RA", "DEC", "kind", "S")
    assert per_window.labels(ra, dec, np.array([10.0, 60.0, 1.0])).tolist() == ["faint", "far", "empty"]
    # Sources below min_flux label nothing: the faint one no longer labels the first window.
    detected = WindowCatalogue(path, "RA", "DEC", "kind", "S", min_flux=2.0)
    assert detected.labels(ra, dec, np.array([10.0, 60.0, 1.0])).tolist() == ["empty", "far", "empty"]
    with pytest.raises(RadioCurationError, match="flux column"):
        WindowCatalogue(path, "RA", "DEC", "kind", None, min_flux=2.0)
    # Sources below min_peak label nothing, however bright in total: the faint compact one labels instead.
    seen = WindowCatalogue(path, "RA", "DEC", "kind", "S", radius_arcsec=30.0, peak_column="P", min_peak=0.6)
    assert seen.labels(ra, dec).tolist() == ["faint", "empty", "empty"]
    with pytest.raises(RadioCurationError, match="peak brightness column"):
        WindowCatalogue(path, "RA", "DEC", "kind", "S", min_peak=0.6)
    with pytest.raises(RadioCurationError, match="lacks column"):
        WindowCatalogue(path, "RA", "DEC", "kind", "S", peak_column="Peak_flux", min_peak=0.6)
    with pytest.raises(RadioCurationError, match="match radius"):
        per_window.labels(ra, dec)
    with pytest.raises(RadioCurationError, match="lacks column"):
        WindowCatalogue(path, label_column="class")
