"""``expected_run_dir``: the directory a run will get, known before it starts (Hydra's output dir, DDP ranks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from radio_curation.runs.stage import expected_run_dir
from tests.runs.toy import toy_cfg, toy_run


def _expected(runs_dir: Path, **kwargs) -> Path:
    return expected_run_dir(toy_cfg(runs_dir, **kwargs))


def test_expected_run_dir_is_where_each_run_lands(runs_dir):
    predicted = _expected(runs_dir, a=3)
    first = toy_run(runs_dir, a=3)
    assert Path(first["run_dir"]) == predicted
    # The same result again (an execution-only key changed): the complete run, which is reused.
    assert _expected(runs_dir, a=3, workers=4) == predicted
    assert toy_run(runs_dir, a=3, workers=4)["reused"]
    # Another result: another directory.
    other = _expected(runs_dir, a=4)
    assert other != predicted and Path(toy_run(runs_dir, a=4)["run_dir"]) == other
    # Forced: the first of base, base-2, base-3 ... that is not complete.
    forced = _expected(runs_dir, a=3, force=True)
    assert forced == predicted.with_name(f"{first['run_id']}-2")
    assert Path(toy_run(runs_dir, a=3, force=True)["run_dir"]) == forced
    assert _expected(runs_dir, a=3, force=True) == predicted.with_name(f"{first['run_id']}-3")


def test_a_forced_run_that_did_not_finish_is_expected_back_in_its_directory(runs_dir):
    first = toy_run(runs_dir, a=2)

    def stopped(run):
        raise KeyboardInterrupt("the job's time limit")  # as a signal stops a job: kept to be resumed

    with pytest.raises(KeyboardInterrupt):
        toy_run(runs_dir, work=stopped, a=2, force=True)
    # A requeued forced job (same overrides) and the DDP ranks of the retry work in the unfinished run.
    unfinished = Path(first["run_dir"]).with_name(f"{first['run_id']}-2")
    assert (unfinished / "manifest.yaml").is_file()
    assert _expected(runs_dir, a=2, force=True) == unfinished
    assert Path(toy_run(runs_dir, a=2, force=True)["run_dir"]) == unfinished
