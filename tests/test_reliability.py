"""Reliability from the command line: a failed run leaves nothing, a damaged store is detected, an empty
result stops where it happens, config mistakes are one line with exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits

from radio_curation.backbones import build_backbone
from radio_curation.errors import RadioCurationError
from tests.sky.helpers import noise_image, sin_header, write_image

ROOT = Path(__file__).resolve().parents[1]
# A one-mosaic 256-px synthetic sky cut into 64-px windows: a cutouts run in a few seconds.
TINY_SKY = ["survey.mosaics=1", "survey.size=256", "cutouts.window_size=64"]


def _run(*args: str, store: Path, data: Path | None = None, prefix: tuple[str, ...] = ()):
    env = {**os.environ, "RC_RUNS_DIR": str(store), "RC_DATA_DIR": str(data or store.parent / "data")}
    return subprocess.run(
        [*prefix, sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def _one_line_exit_2(done: subprocess.CompletedProcess) -> str:
    """The run failed as a user error: exit 2, no traceback, one ``error:`` line on stderr; returns it."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), done.stderr
    return errors[0]


def _run_dirs(store: Path) -> list[Path]:
    return [p for p in store.glob("*/*") if p.is_dir() and not p.parent.name.startswith("_")]


def _cutouts(store: Path, *overrides: str) -> str:
    done = _run("extract.py", "stage=cutouts", *TINY_SKY, *overrides, store=store)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1].split("=", 1)[1]


def test_failures_before_and_after_claiming_a_run_leave_nothing(tmp_path):
    store = tmp_path / "runs"
    line = _one_line_exit_2(_run("extract.py", "stage=cutouts", "cutouts.overlap=1", store=store))
    assert "cutouts.overlap=1" in line
    no_wcs = tmp_path / "images" / "nowcs.fits"
    no_wcs.parent.mkdir()
    fits.PrimaryHDU(noise_image(128, 128)).writeto(no_wcs)  # no WCS keywords at all
    line = _one_line_exit_2(
        _run("extract.py", "stage=cutouts", "survey=fits_glob", f"survey.pattern={no_wcs}", store=store)
    )
    assert "nowcs.fits" in line and "survey.on_error=skip" in line
    assert _run_dirs(store) == []
    listed = _run("-m", "radio_curation.cli", "runs", "list", store=store)
    assert listed.returncode == 0 and "cutouts-" not in listed.stdout


def test_damaged_store_is_one_clear_line(tmp_path):
    store = tmp_path / "runs"
    cutouts = _cutouts(store)
    index = store / "cutouts" / cutouts / "cutouts.h5"
    whole = index.read_bytes()
    index.write_bytes(whole[: len(whole) // 2])
    line = _one_line_exit_2(_run("extract.py", "stage=merge", f"cutouts_ids=[{cutouts}]", store=store))
    assert str(index) in line and "bytes, but the run wrote" in line
    assert f"remove {index.parent} and run `python extract.py" in line
    assert not list(store.glob("merge/*"))

    verified = _run("-m", "radio_curation.cli", "runs", "verify", store=store)
    assert verified.returncode == 1 and cutouts in verified.stdout and "bytes" in verified.stdout
    index.write_bytes(whole)
    assert _run("-m", "radio_curation.cli", "runs", "verify", store=store).returncode == 0

    manifest = index.parent / "manifest.yaml"
    manifest.write_text(manifest.read_text()[:60])
    for again in (
        _run("extract.py", "stage=cutouts", *TINY_SKY, store=store),
        _run("extract.py", "stage=merge", f"cutouts_ids=[{cutouts}]", store=store),
    ):
        assert "manifest" in _one_line_exit_2(again) and "is damaged" in again.stderr


def test_read_only_store_is_one_clear_line(tmp_path):
    store = tmp_path / "runs"
    store.mkdir()
    if os.geteuid() == 0:  # root ignores permissions: mount the store read-only in a private namespace
        if shutil.which("unshare") is None:
            pytest.skip("no unshare to make a read-only mount")
        probe = subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount --bind {store} {store}"], capture_output=True
        )
        if probe.returncode != 0:
            pytest.skip("cannot make a read-only mount here")
        script = f'mount --bind "{store}" "{store}" && mount -o remount,ro,bind "{store}" && exec "$0" "$@"'
        prefix: tuple[str, ...] = ("unshare", "-m", "sh", "-c", script)
    else:
        store.chmod(0o555)
        prefix = ()
    done = _run("extract.py", "stage=cutouts", *TINY_SKY, store=store, data=tmp_path / "data", prefix=prefix)
    line = _one_line_exit_2(done)
    assert "paths.runs_dir" in line and str(store) in line


def test_empty_results_stop_where_they_happen_with_the_reason(tmp_path):
    store = tmp_path / "runs"
    line = _one_line_exit_2(
        _run("extract.py", "stage=cutouts", *TINY_SKY[:2], "cutouts.window_size=512", store=store)
    )
    assert "window 512 px is larger than every mosaic (256 px)" in line
    blank = write_image(tmp_path / "images" / "blank.fits", np.full((128, 128), np.nan), sin_header(128, 128))
    line = _one_line_exit_2(
        _run("extract.py", "stage=cutouts", "survey=fits_glob", f"survey.pattern={blank}", store=store)
    )
    assert "too many NaN pixels" in line
    line = _one_line_exit_2(
        _run("curate.py", "features_id=features-0000000000", "target_size=0", store=store)
    )
    assert line == "error: target_size=0: expected an integer ≥ 1 or null"
    assert _run_dirs(store) == []


def test_duplicate_cutouts_ids_are_merged_once_with_a_warning(tmp_path):
    store = tmp_path / "runs"
    cutouts = _cutouts(store)
    twice = _run("extract.py", "stage=merge", f"cutouts_ids=[{cutouts},{cutouts}]", store=store)
    assert twice.returncode == 0, twice.stderr
    assert f"cutouts_ids names {cutouts} more than once" in twice.stdout + twice.stderr
    once = _run("extract.py", "stage=merge", f"cutouts_ids=[{cutouts}]", store=store)
    merged = once.stdout.strip().splitlines()[-1]
    assert merged == twice.stdout.strip().splitlines()[-1]
    manifest = yaml.safe_load((store / "merge" / merged.split("=")[1] / "manifest.yaml").read_text())
    assert manifest["parents"] == [cutouts]
    assert len(list(store.glob("merge/*"))) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["train.py", "trainer.max_epoch=3"],
            "unknown config key 'trainer.max_epoch' (did you mean trainer.max_epochs",
        ),
        (["extract.py", "backbone=resnet19"], "backbone=resnet19 is not an option (did you mean resnet18"),
        (["extract.py", "stage=features", "precision=banana"], "precision=banana: expected one of"),
        (["train.py", "source_id=merge-0", "trainer.precision=banana"], "trainer.precision=banana: expected"),
        (["extract.py", "cutouts=catalog", "cutouts.catalog=/no/such.csv"], "cutouts.catalog=/no/such.csv"),
    ],
)
def test_config_mistakes_are_one_line_and_exit_2(tmp_path, args, expected):
    line = _one_line_exit_2(_run(*args, store=tmp_path / "runs"))
    assert expected in line
    assert "survey.on_error" not in line
    assert _run_dirs(tmp_path / "runs") == []


@pytest.mark.slow
def test_concurrent_forced_runs_each_log_into_their_own_directory(tmp_path):
    store = tmp_path / "runs"
    first = _cutouts(store)
    env = {**os.environ, "RC_RUNS_DIR": str(store), "RC_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "extract.py", "stage=cutouts", *TINY_SKY, "force=true"]
    procs = [
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    ids = [p.communicate(timeout=300)[0].strip().splitlines()[-1].split("=")[1] for p in procs]
    assert sorted(ids) == sorted(f"{first}-{n}" for n in range(2, 6))
    for run_id in ids:
        log = (store / "cutouts" / run_id / "extract.log").read_text()
        assert log.count("starting run ") == 1 and f"starting run {run_id} " in log, log


def test_an_experiments_backbone_does_not_leak_into_another_backbone(compose):
    cfg = compose(
        "extract", ["experiment=demo", "stage=features", "backbone=run", "backbone.model_id=train-0"]
    )
    assert "name" not in cfg.backbone
    with pytest.raises(RadioCurationError, match="no run 'train-0'"):
        build_backbone(cfg.backbone)
    assert compose("extract", ["experiment=demo"]).backbone.name == "resnet10t"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_reliability_benchmark_quick_meets_its_targets():
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_reliability.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT reliability"))
    result = {k: int(v) for k, v in (item.split("=") for item in line.split()[2:])}
    assert result["tried"] >= 10 and result["clear_exit2"] == result["tried"], done.stdout
    assert result["left_dirs"] == result["tracebacks"] == result["changed_finished"] == 0, done.stdout
    assert result["kill_trials"] >= 2 and result["kill_identical"] == result["kill_trials"], done.stdout
