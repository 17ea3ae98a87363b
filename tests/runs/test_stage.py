"""The Stage declaration: a stage reads only what it declared; parents are typed; old-scheme runs are refused."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf.errors import ConfigAttributeError, ReadonlyConfigError

from radio_curation.cli import main
from radio_curation.errors import RadioCurationError
from radio_curation.runs.manifest import read_manifest, write_manifest
from radio_curation.runs.stage import Stage, expected_run_dir, run_stage
from radio_curation.runs.store import RunStore
from tests.runs.toy import TOY, toy_cfg, toy_run, write_numbers


def test_a_stage_that_reads_an_undeclared_setting_fails(runs_dir):
    read = []

    def peeks(run):
        write_numbers(run)
        read.append(run.cfg.source_id)  # a parent key: declared
        read.append(run.cfg.params.workers)  # an execution key: declared
        read.append(run.cfg.experiment_name)  # in the config, but not declared by the stage

    with pytest.raises(ConfigAttributeError, match="experiment_name"):
        toy_run(runs_dir, work=peeks, a=2)
    assert read == [None, 1]
    # Nothing is left looking complete.
    assert not list(runs_dir.glob("toy/*/manifest.yaml"))


def test_the_view_holds_only_declared_keys_and_cannot_be_changed(runs_dir):
    seen = {}

    def looks(run):
        seen["keys"] = set(run.cfg.keys())
        seen["params"] = dict(run.cfg.params)
        with pytest.raises(ReadonlyConfigError):
            run.cfg.params.a = 10
        write_numbers(run)

    toy_run(runs_dir, work=looks, a=2, workers=3)
    assert seen == {"keys": {"params", "source_id"}, "params": {"a": 2, "workers": 3}}


def test_a_declared_setting_missing_from_the_config_is_named(runs_dir):
    stage = replace(TOY, settings={**TOY.settings, "threshold": float})
    with pytest.raises(RadioCurationError, match="'threshold'"):
        run_stage(toy_cfg(runs_dir), stage)


def test_a_parent_of_the_wrong_stage_or_unknown_is_one_readable_error(runs_dir):
    other = Stage(name="other", work=write_numbers, settings={"params": dict}, headline="metrics.sum")
    wrong = run_stage(toy_cfg(runs_dir, a=1), other)["run_id"]
    with pytest.raises(RadioCurationError, match=rf"source_id={wrong}: .*'other' run, but a 'toy' run"):
        toy_run(runs_dir, a=2, source_id=wrong)
    with pytest.raises(RadioCurationError, match=r"source_id=toy-0000000000: no run 'toy-0000000000'"):
        toy_run(runs_dir, a=2, source_id="toy-0000000000")
    assert not (runs_dir / "toy").exists()


def test_a_parent_given_by_a_prefix_is_the_same_run(runs_dir):
    parent = toy_run(runs_dir, a=1)["run_id"]
    full = toy_run(runs_dir, a=2, source_id=parent)
    short = toy_run(runs_dir, a=2, source_id=parent[:8])
    assert short["run_id"] == full["run_id"] and short["reused"]


def test_ancestor_walks_up_the_lineage(runs_dir):
    root = toy_run(runs_dir, a=1)["run_id"]
    middle = toy_run(runs_dir, a=2, source_id=root)["run_id"]
    leaf = toy_run(runs_dir, a=3, source_id=middle)["run_id"]
    store = RunStore(runs_dir)
    other = Stage(name="other", work=write_numbers, settings={"params": dict}, headline="metrics.sum")
    assert store.ancestor(store.resolve(leaf), "toy").run_id == leaf
    assert store.ancestor(store.resolve(leaf), "other") is None
    top = run_stage(toy_cfg(runs_dir, a=9), other)["run_id"]
    found = []

    def climbs(run):
        found.append(run.ancestor(run.parent("source_id"), "toy").run_id)
        with pytest.raises(RadioCurationError, match=f"{leaf} does not descend from a other run"):
            run.ancestor(run.parent("source_id"), "other")
        write_numbers(run)

    toy_run(runs_dir, work=climbs, a=4, source_id=leaf)
    assert found == [leaf] and top


def test_the_headline_is_the_declared_metric(runs_dir):
    assert toy_run(runs_dir, a=4)["headline"] == 0 + 1 + 2 + 3

    def records_nothing(run):
        with run.artifact("numbers.txt") as tmp:
            tmp.write_text("")

    assert math.isnan(toy_run(runs_dir, work=records_nothing, a=5)["headline"])


def _make_old_scheme(run_dir: Path) -> None:
    manifest = read_manifest(run_dir)
    del manifest["scheme"]
    write_manifest(run_dir, manifest)


def test_runs_of_the_old_id_scheme_are_flagged_and_never_taken_as_input(runs_dir, capsys):
    old = toy_run(runs_dir, a=1)
    _make_old_scheme(Path(old["run_dir"]))
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(runs_dir), "list"]) == 0
    assert "old run-ID scheme" in capsys.readouterr().out
    with pytest.raises(RadioCurationError, match=rf"source_id={old['run_id']}: .*earlier version.*rerun"):
        toy_run(runs_dir, a=2, source_id=old["run_id"])
    # A prefix is never completed to an old run, and hints do not offer it.
    with pytest.raises(RadioCurationError, match="no run") as err:
        toy_run(runs_dir, a=2, source_id=old["run_id"][:7])
    assert old["run_id"] not in str(err.value)


def test_the_expected_run_dir_is_the_leased_one_while_a_run_works(runs_dir):
    seen = []

    def notes(run):
        seen.append(expected_run_dir(toy_cfg(runs_dir, a=99)))
        write_numbers(run)

    done = toy_run(runs_dir, work=notes, a=2, force=True)
    again = toy_run(runs_dir, work=notes, a=2, force=True)
    assert seen == [Path(done["run_dir"]), Path(again["run_dir"])]
    assert again["run_id"] == f"{done['run_id']}-2"
