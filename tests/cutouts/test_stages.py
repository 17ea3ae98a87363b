"""The cutouts and merge stages as runs of the store (extract.py stage=cutouts / stage=merge)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import radio_curation.tasks.cutouts as cutouts_task
from radio_curation.cutouts.index import read_index
from radio_curation.cutouts.reader import WindowReader
from radio_curation.errors import RadioCurationError
from radio_curation.tasks import extract
from tests.kill_after import run_killed
from tests.sky.helpers import noise_image, write_image

SMALL = ["survey.mosaics=2", "survey.size=512"]


def _manifest(result):
    with open(f"{result['run_dir']}/manifest.yaml") as f:
        return yaml.safe_load(f)


def test_cutouts_then_merge_on_the_synthetic_sky(compose):
    first = extract.run(compose("extract", ["stage=cutouts", *SMALL]))
    assert first["stage"] == "cutouts" and not first["reused"]
    counts = first["counts"]
    assert counts["mosaics"] == 2 and counts["windows"] == counts["candidates"] - counts["dropped_nan"] > 0
    index = read_index(f"{first['run_dir']}/cutouts.h5")
    assert len(index) == counts["windows"] and set(index.mosaics["name"]) == set(index.mosaic_names())
    assert len(_manifest(first)["info"]["mosaics"]) == 2
    # Worker count is execution-only: same run, reused.
    again = extract.run(compose("extract", ["stage=cutouts", *SMALL, "survey.num_workers=2"]))
    assert again["run_id"] == first["run_id"] and again["reused"]

    small = extract.run(compose("extract", ["stage=cutouts", *SMALL, "cutouts.window_size=64"]))
    ids = f"cutouts_ids=[{first['run_id']},{small['run_id']}]"
    merged = extract.run(compose("extract", ["stage=merge", ids, "merge.min_peak_snr=5"]))
    mc = merged["counts"]
    assert mc["input"] == counts["windows"] + small["counts"]["windows"]
    assert mc["removed_peak_snr"] > 0 and mc["removed_cross_mosaic"] > 0
    assert mc["windows"] == mc["input"] - sum(v for k, v in mc.items() if k.startswith("removed_"))
    assert sorted(_manifest(merged)["parents"]) == sorted([first["run_id"], small["run_id"]])
    reader = WindowReader(f"{merged['run_dir']}/merged.h5")
    table = reader.table()
    assert len(reader) == mc["windows"] and set(np.unique(table["size"]).tolist()) == {64, 128}
    assert (table["peak_snr"] >= 5).all()
    assert reader.read(reader.cutout_ids[table["size"] == 64][:4]).shape == (4, 1, 64, 64)


def test_shards_split_the_survey(compose):
    shards = [
        extract.run(compose("extract", ["stage=cutouts", *SMALL, f"survey.shard={i}", "survey.n_shards=2"]))
        for i in range(2)
    ]
    assert shards[0]["run_id"] != shards[1]["run_id"]
    names = [read_index(f"{s['run_dir']}/cutouts.h5").mosaics["name"] for s in shards]
    assert len(names[0]) == len(names[1]) == 1 and names[0] != names[1]


@pytest.fixture
def glob_survey(tmp_path):
    for i in range(3):
        write_image(tmp_path / "images" / f"field{i}.fits", noise_image(160, 160, seed=i))
    (tmp_path / "images" / "field1.fits").write_bytes(b"SIMPLE  = broken")
    return ["survey=fits_glob", f"survey.pattern={tmp_path}/images/*.fits", "cutouts.window_size=64"]


def test_unreadable_mosaic_fails_the_run_with_its_name(compose, glob_survey):
    with pytest.raises(RadioCurationError, match=r"field1\.fits.*survey\.on_error=skip") as caught:
        extract.run(compose("extract", ["stage=cutouts", *glob_survey]))
    assert str(caught.value).count("on_error=skip") == 1


def test_worker_processes_give_the_same_index_and_report_unreadable_mosaics(compose, glob_survey):
    serial = extract.run(compose("extract", ["stage=cutouts", *glob_survey, "survey.on_error=skip"]))
    parallel = extract.run(
        compose(
            "extract",
            ["stage=cutouts", *glob_survey, "survey.on_error=skip", "survey.num_workers=2", "force=true"],
        )
    )
    assert parallel["run_id"] != serial["run_id"] and not parallel["reused"]
    assert parallel["counts"] == serial["counts"] and parallel["counts"]["skipped_mosaics"] == 1
    assert "field1.fits" in _manifest(parallel)["info"]["skipped"][0]["error"]
    a = read_index(f"{serial['run_dir']}/cutouts.h5")
    b = read_index(f"{parallel['run_dir']}/cutouts.h5")
    assert a.mosaics == b.mosaics
    for key, values in a.columns.items():
        np.testing.assert_array_equal(values, b.columns[key], err_msg=key)


def test_skipped_mosaics_are_listed_in_the_manifest(compose, glob_survey):
    result = extract.run(compose("extract", ["stage=cutouts", *glob_survey, "survey.on_error=skip"]))
    assert result["counts"]["mosaics"] == 2 and result["counts"]["skipped_mosaics"] == 1
    skipped = _manifest(result)["info"]["skipped"]
    assert [s["mosaic"] for s in skipped] == ["field1"] and "field1.fits" in skipped[0]["path"]
    assert read_index(f"{result['run_dir']}/cutouts.h5").mosaics["name"] == ["field0", "field2"]


def test_interrupted_run_resumes_with_the_mosaics_left(compose, glob_survey, tmp_path, monkeypatch):
    with pytest.raises(RadioCurationError):
        extract.run(compose("extract", ["stage=cutouts", *glob_survey]))
    write_image(tmp_path / "images" / "repaired.fits", noise_image(160, 160, seed=1))
    (tmp_path / "images" / "repaired.fits").replace(tmp_path / "images" / "field1.fits")
    calls = []
    original = cutouts_task.cut_mosaic

    def counting(files, strategy, out, threads):
        calls.append(files.name)
        return original(files, strategy, out, threads)

    monkeypatch.setattr(cutouts_task, "cut_mosaic", counting)
    result = extract.run(compose("extract", ["stage=cutouts", *glob_survey]))
    assert _manifest(result)["attempts"] == 2 and result["counts"]["mosaics"] == 3
    # field0 was cut before the failure; only the others are cut again.
    assert "field0" not in calls and "field2" in calls and "field1" in calls
    assert result["counts"]["windows"] == 3 * 16


def test_catalogue_strategy_as_a_stage(compose, data_dir):
    first = extract.run(compose("extract", ["stage=cutouts", *SMALL]))
    truth = first["info"]["mosaics"][0].split("/mosaics/")[0] + "/truth.fits"
    result = extract.run(
        compose(
            "extract",
            [
                "stage=cutouts",
                *SMALL,
                "cutouts=catalog",
                f"cutouts.catalog={truth}",
                "cutouts.window_size=64",
            ],
        )
    )
    index = read_index(f"{result['run_dir']}/cutouts.h5")
    assert len(index) > 20 and (index.columns["catalog_row"] >= 0).all()
    assert result["info"]["strategy"]["strategy"] == "catalog"


def test_merge_needs_cutouts_runs(compose):
    with pytest.raises(RadioCurationError, match="no cutouts runs to merge"):
        extract.run(compose("extract", ["stage=merge"]))
    cut = extract.run(compose("extract", ["stage=cutouts", *SMALL]))
    merged = extract.run(compose("extract", ["stage=merge", f"cutouts_ids=[{cut['run_id']}]"]))
    with pytest.raises(RadioCurationError, match="is a 'merge' run, but a 'cutouts' run is needed"):
        extract.run(compose("extract", ["stage=merge", f"cutouts_ids=[{merged['run_id']}]"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["survey=lotss_dr2"], r"survey\.root is not set"),
        ([*SMALL, "cutouts=catalog"], r"cutouts\.catalog is not set"),
        ([*SMALL, "cutouts.rms_step=3"], r"rms_step=3 must divide the window stride 64"),
    ],
)
def test_config_mistakes_are_user_errors(compose, overrides, message):
    with pytest.raises(RadioCurationError, match=message):
        extract.run(compose("extract", ["stage=cutouts", *overrides]))


def _killed(target: str, n: int, overrides: list[str], runs_dir, data_dir, cwd) -> None:
    store = [f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}", "logger=csv"]
    run_killed(target, n, "extract.py", [*overrides, *store], cwd)


def _leftovers(run_dir) -> list[str]:
    return sorted(p.name for p in run_dir.rglob(".*.tmp-*"))


def test_cutouts_killed_mid_mosaic_resume_to_the_uninterrupted_index(compose, runs_dir, data_dir, tmp_path):
    sky = ["stage=cutouts", "survey.mosaics=3", "survey.size=256", "cutouts.window_size=32"]
    reference = extract.run(compose("extract", sky))
    want = read_index(f"{reference['run_dir']}/cutouts.h5")
    # A forced new run, killed once the second mosaic's rows are written but before they are in place.
    forced = [*sky, "force=true"]
    _killed("radio_curation.cutouts.cut:write_index", 2, forced, runs_dir, data_dir, tmp_path)
    run_dir = runs_dir / "cutouts" / f"{reference['run_id']}-2"
    assert yaml.safe_load((run_dir / "manifest.yaml").read_text())["status"] == "running"
    assert not (run_dir / "cutouts.h5").exists()
    assert len(list((run_dir / "parts").glob("*.h5"))) == 1 and _leftovers(run_dir)
    calls = []
    original = cutouts_task.cut_mosaic

    def counting(files, strategy, out, threads):
        calls.append(files.name)
        return original(files, strategy, out, threads)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cutouts_task, "cut_mosaic", counting)
        resumed = extract.run(compose("extract", forced))
    assert resumed["run_id"] == run_dir.name and _manifest(resumed)["attempts"] == 2
    assert len(calls) == 2  # the mosaic finished before the kill is not cut again
    got = read_index(f"{resumed['run_dir']}/cutouts.h5")
    assert got.mosaics["name"] == want.mosaics["name"]
    for name, column in want.columns.items():
        np.testing.assert_array_equal(got.columns[name], column)
    assert resumed["counts"] == reference["counts"] and not _leftovers(run_dir)


def test_merge_killed_before_its_index_is_in_place_resumes(compose, runs_dir, data_dir, tmp_path):
    cutouts = extract.run(compose("extract", ["stage=cutouts", *SMALL]))
    merge = ["stage=merge", f"cutouts_ids=[{cutouts['run_id']}]", "merge.min_peak_snr=5"]
    reference = extract.run(compose("extract", merge))
    want = WindowReader(f"{reference['run_dir']}/merged.h5").table()
    forced = [*merge, "force=true"]
    _killed("radio_curation.tasks.merge:write_index", 1, forced, runs_dir, data_dir, tmp_path)
    run_dir = runs_dir / "merge" / f"{reference['run_id']}-2"
    assert yaml.safe_load((run_dir / "manifest.yaml").read_text())["status"] == "running"
    assert not (run_dir / "merged.h5").exists() and _leftovers(run_dir)
    # The interrupted run is not taken for a result: a plain rerun of the same merge reuses the first.
    assert extract.run(compose("extract", merge))["run_id"] == reference["run_id"]
    resumed = extract.run(compose("extract", forced))
    assert resumed["run_id"] == run_dir.name and not resumed["reused"]
    assert _manifest(resumed)["attempts"] == 2 and _manifest(resumed)["status"] == "complete"
    got = WindowReader(f"{resumed['run_dir']}/merged.h5").table()
    assert got.keys() == want.keys()
    for name, column in want.items():
        np.testing.assert_array_equal(got[name], column)
    assert resumed["counts"] == reference["counts"] and not _leftovers(run_dir)


def test_the_entry_point_returns_the_stage_s_headline_metric(compose):
    import extract as entry_point  # the root script: its Hydra task function takes a composed config

    cfg = compose("extract", ["stage=cutouts", *SMALL])
    headline = entry_point.main(cfg)
    assert isinstance(headline, float)
    assert headline == extract.run(cfg)["counts"]["windows"] > 0  # the cutouts stage's headline: windows
