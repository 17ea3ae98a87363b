"""Survey layouts: DR2 directories, glob patterns, the synthetic survey, shards."""

from __future__ import annotations

import numpy as np
import pytest

from radio_curation.errors import RadioCurationError
from radio_curation.sky.survey import FitsGlobSurvey, LotssDR2Survey, SyntheticSurvey, parse_shard
from tests.sky.helpers import write_image


def _dr2_tree(root, names, nested=True, masks=True):
    base = root / "mosaics" if nested else root
    for name in names:
        write_image(base / name / "mosaic-blanked.fits", np.zeros((8, 8)))
        if masks and name != names[-1]:
            write_image(base / name / "mosaic.pybdsmmask.fits", np.zeros((1, 1, 8, 8), dtype=np.float32))
    (base / "notes").mkdir()
    return root


@pytest.mark.parametrize("nested", [True, False])
def test_dr2_layout_lists_images_and_optional_masks(tmp_path, nested):
    root = _dr2_tree(tmp_path, ["P005+21", "P002+18", "P000+23"], nested=nested)
    mosaics = LotssDR2Survey(str(root)).mosaics()
    assert [m.name for m in mosaics] == ["P000+23", "P002+18", "P005+21"]
    assert mosaics[0].image.name == "mosaic-blanked.fits" and mosaics[0].image.is_file()
    # P000+23 was written last, without a mask.
    assert mosaics[0].mask is None and mosaics[1].mask.name == "mosaic.pybdsmmask.fits"


def test_shards_partition_the_mosaics(tmp_path):
    names = [f"P{i:03d}+20" for i in range(7)]
    root = _dr2_tree(tmp_path, names)
    shards = [[m.name for m in LotssDR2Survey(str(root), shard=i, n_shards=3).mosaics()] for i in range(3)]
    assert sorted(name for shard in shards for name in shard) == names
    assert shards[0] == [names[0], names[3], names[6]]


@pytest.mark.parametrize(
    ("shard", "n_shards", "hint"),
    [
        (3, 3, "from 0 to n_shards - 1"),
        ("x", 4, "from 0 to n_shards - 1"),
        (1, 0, "from 0 to n_shards - 1"),
        (-1, 4, "from 0 to n_shards - 1"),
        (True, 4, "from 0 to n_shards - 1"),
        (2, None, "set survey.n_shards too"),
        (None, 64, "set survey.shard too"),
        ("3/64", None, "survey.shard=3 survey.n_shards=64"),
    ],
)
def test_bad_shard_is_a_user_error(shard, n_shards, hint):
    with pytest.raises(RadioCurationError, match=r"survey\.shard") as caught:
        parse_shard(shard, n_shards)
    assert hint in str(caught.value)


def test_no_shard_is_all_mosaics():
    assert parse_shard(None, None) is None
    assert parse_shard(0, 1) == (0, 1)


def test_missing_root_is_a_user_error(tmp_path):
    with pytest.raises(RadioCurationError, match=r"survey\.root is not set"):
        LotssDR2Survey(None)
    with pytest.raises(RadioCurationError, match="not a directory"):
        LotssDR2Survey(str(tmp_path / "absent")).mosaics()
    with pytest.raises(RadioCurationError, match="no mosaics in"):
        LotssDR2Survey(str(tmp_path)).mosaics()


def test_fits_glob_names_files_by_stem(tmp_path):
    for sub in ("a", "b"):
        write_image(tmp_path / sub / "field.fits", np.zeros((8, 8)))
    write_image(tmp_path / "a" / "other.fits", np.zeros((8, 8)))
    mosaics = FitsGlobSurvey(str(tmp_path / "**" / "*.fits")).mosaics()
    assert [m.name for m in mosaics] == ["a/field", "b/field", "other"]
    assert all(m.mask is None for m in mosaics)
    with pytest.raises(RadioCurationError, match="matches no files"):
        FitsGlobSurvey(str(tmp_path / "*.nothing")).mosaics()


def test_synthetic_survey_generates_once_then_reuses(tmp_path):
    survey = SyntheticSurvey(str(tmp_path), mosaics=2, size=128, seed=5)
    first = survey.mosaics()
    assert len(first) == 2 and all(m.mask is not None for m in first)
    assert survey.root.parent == tmp_path / "synthetic"
    stamp = first[0].image.stat().st_mtime_ns
    again = SyntheticSurvey(str(tmp_path), mosaics=2, size=128, seed=5).mosaics()
    assert again == first and again[0].image.stat().st_mtime_ns == stamp
    other = SyntheticSurvey(str(tmp_path), mosaics=2, size=128, seed=6)
    assert other.root != survey.root
