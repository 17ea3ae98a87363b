from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pytorch_lightning.utilities.exceptions import SIGTERMException

from radio_curation.errors import EmptyResultError, RadioCurationError
from radio_curation.runs.manifest import read_manifest
from radio_curation.runs.store import RunStore
from tests.runs.toy import toy_run, toy_run_in_process, write_numbers


def test_same_config_reuses_complete_run_and_prints_id_last(runs_dir, capsys):
    calls = []

    def work(run):
        calls.append(run.run_id)
        write_numbers(run)

    first = toy_run(runs_dir, work=work, a=3)
    second = toy_run(runs_dir, work=work, a=3, workers=8)  # execution-only key: same run
    assert first["run_id"] == second["run_id"]
    assert (first["reused"], second["reused"]) == (False, True)
    assert calls == [first["run_id"]]
    assert second["counts"] == {"numbers": 3}
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"run_id={first['run_id']}"
    manifest = read_manifest(Path(first["run_dir"]))
    assert manifest["status"] == "complete"
    assert manifest["artifacts"]["numbers.txt"]["bytes"] == len("0\n1\n2")
    assert manifest["config"] == {"params": {"a": 3}}


def test_semantic_change_parent_and_force_make_new_runs(runs_dir):
    base = toy_run(runs_dir, a=2)
    other = toy_run(runs_dir, a=5)
    child = toy_run(runs_dir, a=2, source_id=base["run_id"])
    forced = toy_run(runs_dir, a=2, force=True)
    ids = {base["run_id"], other["run_id"], child["run_id"], forced["run_id"]}
    assert len(ids) == 4
    assert forced["run_id"] == f"{base['run_id']}-2"
    assert read_manifest(Path(child["run_dir"]))["parents"] == [base["run_id"]]


def test_incomplete_run_resumes_in_same_directory(runs_dir):
    attempts = []

    def flaky(run):
        attempts.append(run.resumed)
        partial = run.dir / "partial.txt"
        if not partial.exists():
            partial.write_text("first half")
            raise RuntimeError("killed mid-way")
        assert partial.read_text() == "first half"
        write_numbers(run)

    with pytest.raises(RuntimeError):
        toy_run(runs_dir, work=flaky, a=4)
    store = RunStore(runs_dir)
    (record,) = store.runs("toy")
    assert record.manifest["status"] == "failed" and not record.complete
    assert record.manifest["error"] == "killed mid-way"
    with pytest.raises(RadioCurationError, match=r"not complete .*after: killed mid-way"):
        store.resolve(record.run_id)
    # A failed run is never offered to a next stage, not even as a close match.
    with pytest.raises(RadioCurationError) as unknown:
        store.resolve(record.run_id[:-1] + "x")
    assert record.run_id not in str(unknown.value)
    result = toy_run(runs_dir, work=flaky, a=4)
    assert result["run_id"] == record.run_id and not result["reused"]
    assert attempts == [False, True]
    assert read_manifest(record.dir)["attempts"] == 2


def test_resumed_run_removes_temporaries_a_killed_attempt_left_at_any_depth(runs_dir):
    seen = []

    def flaky(run):
        partial = run.dir / "partial.txt"
        if not partial.exists():
            partial.write_text("first half")
            (run.dir / ".numbers.txt.tmp-999-0badc0de").write_text("half a file")
            (run.dir / "levels").mkdir()
            (run.dir / "levels" / ".level_1.h5.tmp-999-0badc0de").write_text("half a level")
            (run.dir / ".cache.tmp-999-0badc0de" / "inner").mkdir(parents=True)
            raise RuntimeError("killed mid-way")
        seen.extend(sorted(str(p.relative_to(run.dir)) for p in run.dir.rglob("*") if ".tmp-" in p.name))
        write_numbers(run)

    with pytest.raises(RuntimeError):
        toy_run(runs_dir, work=flaky, a=2)
    result = toy_run(runs_dir, work=flaky, a=2)
    assert seen == []
    assert (Path(result["run_dir"]) / "partial.txt").read_text() == "first half"
    assert (Path(result["run_dir"]) / "levels").is_dir()


def test_failed_artifact_leaves_nothing_behind(runs_dir):
    def broken(run):
        with run.artifact("big.bin") as tmp:
            tmp.write_bytes(b"x" * 100)
            raise ValueError("disk full")

    with pytest.raises(ValueError):
        toy_run(runs_dir, work=broken)
    assert not list(runs_dir.glob("toy/*"))


def test_failure_with_partial_work_keeps_it_and_says_so(runs_dir):
    def broken(run):
        (run.dir / "partial.txt").write_text("one block")
        with run.artifact("big.bin") as tmp:
            tmp.write_bytes(b"x" * 100)
            raise RadioCurationError("checkpoint /x.ckpt has no 'backbone.' keys")

    with pytest.raises(RadioCurationError, match="keeps its partial work; once this is fixed, the same"):
        toy_run(runs_dir, work=broken)
    (record,) = RunStore(runs_dir).runs("toy")
    assert record.manifest["status"] == "failed"
    assert not (record.dir / "big.bin").exists() and not list(record.dir.glob(".big.bin.tmp-*"))
    assert "big.bin" not in record.manifest["artifacts"]


def test_empty_result_removes_the_run_even_with_partial_work(runs_dir):
    def empty(run):
        (run.dir / "partial.txt").write_text("nothing in it")
        raise EmptyResultError("window 4096 px is larger than every mosaic (2048 px)")

    with pytest.raises(EmptyResultError):
        toy_run(runs_dir, work=empty)
    assert not list(runs_dir.glob("toy/*"))


WRITER = """
import sys
from pathlib import Path
from radio_curation.runs.manifest import write_manifest
run_dir = Path(sys.argv[1])
big = {"rows": list(range(20000))}
i = 0
while True:
    write_manifest(run_dir, {"version": i % 2, **big})
    i += 1
"""


def test_manifest_is_never_half_written(tmp_path):
    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
        # The kill must land while it writes: wait for its first manifest (slow to start on a loaded machine).
        deadline = time.monotonic() + 60
        while not (tmp_path / "manifest.yaml").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3 + 0.13 * attempt)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        manifest = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
        assert manifest["version"] in (0, 1)
        assert manifest["rows"] == list(range(20000))


def _in_pool(args):
    return toy_run_in_process(*args)


def test_eight_processes_create_distinct_valid_runs(runs_dir, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    ctx = mp.get_context("spawn")
    with ctx.Pool(8) as pool:
        forced = pool.map(_in_pool, [(str(runs_dir), True, 3, str(markers))] * 8)
        distinct = pool.map(_in_pool, [(str(runs_dir), False, 10 + i, str(markers)) for i in range(8)])
    assert len(set(forced)) == 8
    assert len(set(distinct)) == 8
    store = RunStore(runs_dir)
    for run_id in forced + distinct:
        record = store.resolve(run_id, stage="toy")
        assert record.complete
        assert (record.dir / "numbers.txt").is_file()
    assert len(list(markers.iterdir())) == 16


def test_concurrent_identical_runs_compute_once(runs_dir, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        ids = pool.map(_in_pool, [(str(runs_dir), False, 7, str(markers))] * 4)
    assert len(set(ids)) == 1
    assert len(list(markers.iterdir())) == 1


def test_resolve_errors_name_closest_ids_and_the_real_stage(runs_dir):
    run_id = toy_run(runs_dir, a=2)["run_id"]
    store = RunStore(runs_dir)
    assert store.resolve(run_id[:9]).run_id == run_id  # a unique prefix is enough
    typo = run_id[:-1] + ("0" if run_id[-1] != "0" else "1")
    with pytest.raises(RadioCurationError, match=f"Closest IDs: {run_id}"):
        store.resolve(typo)
    with pytest.raises(RadioCurationError, match="is a 'toy' run, but a 'merge' run is needed"):
        store.resolve(run_id, stage="merge")
    with pytest.raises(RadioCurationError, match="no run"):
        store.resolve("features-0000000000")


def test_damaged_artifacts_are_refused_naming_the_file_and_the_fix(runs_dir):
    run = toy_run(runs_dir, a=50)
    path = Path(run["run_dir"]) / "numbers.txt"
    store = RunStore(runs_dir)
    assert store.resolve(run["run_id"]).artifact("numbers.txt") == path
    original = path.read_bytes()
    path.write_bytes(original[:-3])
    with pytest.raises(RadioCurationError, match=r"numbers\.txt .*has \d+ bytes, but the run wrote"):
        store.resolve(run["run_id"]).artifact("numbers.txt")
    with pytest.raises(RadioCurationError, match=f"remove {run['run_dir']} and run .* again"):
        toy_run(runs_dir, a=50)  # reusing a complete run checks its sizes too
    path.write_bytes(original[:-1] + b"7")  # same size, other content
    with pytest.raises(RadioCurationError, match="sha256"):
        RunStore(runs_dir).resolve(run["run_id"]).artifact("numbers.txt")
    # store.verify=size: the cheap check only.
    assert RunStore(runs_dir, verify="size").resolve(run["run_id"]).artifact("numbers.txt") == path


def test_truncated_manifest_is_one_clear_error(runs_dir):
    run = toy_run(runs_dir, a=3)
    manifest = Path(run["run_dir"]) / "manifest.yaml"
    manifest.write_text(manifest.read_text()[:25])
    with pytest.raises(RadioCurationError, match=r"manifest .* is damaged"):
        RunStore(runs_dir).resolve(run["run_id"])
    with pytest.raises(RadioCurationError, match=r"manifest .* is damaged"):
        toy_run(runs_dir, a=3)
    assert RunStore(runs_dir).runs() == []
    assert list(RunStore(runs_dir).damaged()) == [run["run_id"]]


def _fail_after(runs_dir: str, delay: float) -> None:
    def work(run):
        time.sleep(delay)
        raise RadioCurationError("bad input")

    with pytest.raises(RadioCurationError):
        toy_run(Path(runs_dir), work=work, a=9)


def test_a_waiting_process_claims_afresh_a_run_its_holder_removed(runs_dir):
    ctx = mp.get_context("spawn")
    holder = ctx.Process(target=_fail_after, args=(str(runs_dir), 1.5))
    holder.start()
    deadline = time.time() + 30
    while not list(runs_dir.glob("toy/*/manifest.yaml")) and time.time() < deadline:
        time.sleep(0.05)
    result = toy_run(runs_dir, a=9)  # waits for the holder, which removes the run when it fails
    holder.join()
    assert holder.exitcode == 0
    assert read_manifest(Path(result["run_dir"]))["status"] == "complete"
    assert (Path(result["run_dir"]) / "numbers.txt").is_file()


@pytest.mark.parametrize(
    "stop",
    [SystemExit(-1), SIGTERMException(), KeyboardInterrupt()],
    ids=["submitit-timeout-exit", "lightning-sigterm", "ctrl-c"],
)
def test_a_run_stopped_from_outside_is_interrupted_not_failed_and_resumes(runs_dir, stop):
    def stopped_once(run):
        if not run.resumed:
            raise stop
        write_numbers(run)

    with pytest.raises(type(stop)):
        toy_run(runs_dir, work=stopped_once, a=2)
    (record,) = RunStore(runs_dir).runs("toy")
    assert record.manifest["status"] == "interrupted" and not record.complete
    result = toy_run(runs_dir, work=stopped_once, a=2)
    assert result["run_id"] == record.run_id and read_manifest(record.dir)["status"] == "complete"
