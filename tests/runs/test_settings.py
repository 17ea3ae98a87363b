"""Every setting every stage declares has a type: a value of the wrong type is one ``error:`` line and exit
2 before a run is claimed, and values written differently but equal give one run ID.

The settings are generated from the stages' declarations and every option of every config group, not
listed by hand. The bulk runs in-process through :func:`run_stage` inside :func:`exit_on_user_error`,
the code path of the entry points below Hydra; a handful run as real commands.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import pytest
from annotated_types import Ge, Interval
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from radio_curation.errors import USER_ERROR_EXIT, exit_on_user_error
from radio_curation.runs.identity import select_keys, semantic_config
from radio_curation.runs.settings import (
    UNTYPED,
    Built,
    SettingError,
    check_settings,
    check_value,
    describe,
    typed_leaves,
)
from radio_curation.runs.stage import run_stage, stage_identity
from tests.conftest import CONFIG_DIR
from tests.test_configs import ROOTS, _compose, _groups, _stages

ROOT = Path(__file__).resolve().parents[2]
# Values tried, in order, until one the setting's type refuses: a word, a fraction, a mapping, a nested list.
WRONG = ["not-a-value", 0.5, {"wrong": 1}, [[1]]]


@functools.cache
def _compositions() -> dict[tuple[str, tuple[str, ...]], DictConfig]:
    """Per root, round ``i`` picks the i-th option of every group but ``experiment`` (a few compositions
    cover every option, as in test_configs), and each experiment alone (it sets keys of the options it
    chooses): composed once, under one Hydra initialisation."""
    cases = []
    for root in ROOTS:
        groups = {g: o for g, o in _groups(root).items() if g != "experiment"}
        for i in range(max(len(options) for options in groups.values())):
            cases.append((root, tuple(f"{g}={o[min(i, len(o) - 1)]}" for g, o in groups.items())))
        cases += [(root, (f"experiment={o}",)) for o in _groups(root).get("experiment", [])]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return {(root, overrides): compose(root, overrides=list(overrides)) for root, overrides in cases}


def _top_keys(stage) -> dict[str, object]:
    """The stage's declared keys, those inside another declared key left out (typed by it)."""
    declared = {**stage.settings, **stage.execution}
    return {k: t for k, t in declared.items() if not any(k.startswith(f"{o}.") for o in declared)}


@functools.cache
def _leaves() -> list[tuple[str, tuple[str, ...], str, str, object, object]]:
    """(root, overrides, stage name, dotted key, value, type) of every declared setting of every stage."""
    leaves, seen = [], set()
    for (root, overrides), cfg in _compositions().items():
        for stage in _stages(root, cfg):
            values = select_keys(cfg, stage.settings, [*stage.parents, *stage.execution])
            for top, kind in _top_keys(stage).items():
                node = OmegaConf.select(OmegaConf.create(values), top, default=None)
                if top.split(".")[0] not in values:
                    continue
                plain = OmegaConf.to_container(node) if OmegaConf.is_config(node) else node
                for key, value, declared in typed_leaves(top, plain, kind):
                    if (stage.name, key) in seen:
                        continue
                    seen.add((stage.name, key))
                    leaves.append((root, overrides, stage.name, key, value, declared))
    return leaves


def _wrong(key: str, declared: object) -> object:
    for value in WRONG:
        try:
            check_value(key, value, declared)
        except SettingError:
            return value
    raise AssertionError(f"{key} accepts anything ({describe(declared)}): declare a type")


def test_every_declared_setting_has_a_type():
    untyped = sorted(
        {f"{stage}: {key}" for _, _, stage, key, _, declared in _leaves() if declared is UNTYPED}
    )
    assert untyped == []
    assert len(_leaves()) > 300


def test_a_setting_without_a_type_is_found():
    leaves = list(typed_leaves("survey", {"_target_": "builtins.dict", "size": 3}, Built))
    assert leaves == [("survey.size", 3, UNTYPED)]
    assert list(typed_leaves("monitor", {"k": 3, "extra": 1}, {"k": int})) == [
        ("monitor.k", 3, int),
        ("monitor.extra", 1, UNTYPED),
    ]


def _set(cfg: DictConfig, key: str, value: object) -> None:
    """``OmegaConf.update``, through an interpolated node on the way (``eval.catalogue: ${catalogue}``)."""
    parts = key.split(".")
    for i in range(1, len(parts)):
        parent, name = ".".join(parts[: i - 1]), parts[i - 1]
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if OmegaConf.is_interpolation(node, name):
            OmegaConf.update(
                cfg, ".".join(parts[:i]), OmegaConf.to_container(node[name], resolve=True), merge=False
            )
    OmegaConf.update(cfg, key, value, merge=False)


def test_a_wrong_type_of_every_setting_is_one_line_and_exit_2(tmp_path, capsys):
    runs = tmp_path / "runs"
    checked = 0
    for root, overrides, stage_name, key, _, declared in _leaves():
        if declared is Built or "[" in key:
            continue
        cfg = copy.deepcopy(_compositions()[root, overrides])
        cfg.paths.runs_dir = str(runs)
        wrong = _wrong(key, declared)
        _set(cfg, key, wrong)
        (stage,) = [s for s in _stages(root, cfg) if s.name == stage_name]
        with pytest.raises(SystemExit) as stopped, exit_on_user_error():
            run_stage(cfg, stage)
        err = capsys.readouterr().err
        assert stopped.value.code == USER_ERROR_EXIT, (key, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: {key}="), (key, wrong, err)
        assert "Traceback" not in err and "expected" in lines[0]
        checked += 1
    assert checked > 250
    assert not runs.exists() or not any(runs.rglob("manifest.yaml"))


def test_the_message_names_the_expected_type_and_the_closest_choice():
    kind = Literal["fail", "skip"]
    with pytest.raises(
        SettingError, match=r"^survey.on_error=fial: expected one of fail, skip \(did you mean fail\?\)$"
    ):
        check_value("survey.on_error", "fial", kind)
    window = Annotated[int, Ge(2)]
    with pytest.raises(SettingError, match=r"^cutouts.window_size=1: expected an integer ≥ 2$"):
        check_value("cutouts.window_size", 1, window)
    fraction = Annotated[float, Interval(ge=0, lt=1)]
    with pytest.raises(SettingError, match=r"cutouts.overlap=half: expected a number ≥ 0 and < 1$"):
        check_value("cutouts.overlap", "half", fraction)
    with pytest.raises(SettingError, match=r"^seed=true: expected an integer$"):
        check_value("seed", True, int)
    with pytest.raises(SettingError, match=r"expected an integer ≥ 1 or null"):
        check_value("target_size", 1400.5, Annotated[int, Ge(1)] | None)


def test_canonical_forms():
    assert check_value("target_size", 1400.0, Annotated[int, Ge(1)] | None) == 1400
    assert check_value("target_size", "1400", int) == 1400
    assert check_value("overlap", 1, float) == 1.0 and isinstance(check_value("overlap", 1, float), float)
    assert check_value("scale", [1, 2], tuple[float, float]) == [1.0, 2.0]
    assert check_settings({"a": {"b": 2}}, {"a": {"b": float}}) == {"a": {"b": 2.0}}


@pytest.mark.parametrize(
    ("root", "key", "same"),
    [
        ("curate", "target_size", ["1400", "1400.0"]),
        ("extract", "cutouts.overlap", ["0.5", ".5", "5e-1"]),
        ("extract", "cutouts.window_size", ["128", "128.0"]),
        ("train", "data.nan_fill", ["0", "0.0", ".0"]),
    ],
)
def test_equal_values_written_differently_give_one_run_id(tmp_path, root, key, same):
    ids = set()
    for text in same:
        cfg = _compose(root, [f"{key}={text}", f"paths.runs_dir={tmp_path}"])
        (stage,) = [s for s in _stages(root, cfg) if key.split(".")[0] in s.settings]
        ids.add(stage_identity(cfg, stage).base_id)
    assert len(ids) == 1


def test_canonical_forms_keep_every_default_run_id():
    """Every option's values are already in their canonical form: no run made before types changes ID."""
    for (root, overrides), cfg in _compositions().items():
        for stage in _stages(root, cfg):
            excluded = [*stage.execution, *stage.parents]
            values = select_keys(cfg, stage.settings)
            before = semantic_config(values, stage.settings, excluded)
            after = semantic_config(check_settings(values, stage.settings), stage.settings, excluded)
            assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True), (
                root,
                overrides,
                stage.name,
            )


def _run(*args: str, store: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RC_RUNS_DIR": str(store), "RC_DATA_DIR": str(store.parent / "data")}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("command", "key"),
    [
        (["extract.py", "stage=cutouts", "cutouts.window_size=abc"], "cutouts.window_size"),
        (["extract.py", "stage=cutouts", "cutouts.overlap=half"], "cutouts.overlap"),
        (["curate.py", "features_id=F", "target_size=abc"], "target_size"),
        (["extract.py", "stage=features", "source_id=merge-0", "seed=x"], "seed"),
        (["extract.py", "stage=cutouts", "seed=x"], "seed"),
        (["train.py", "source_id=merge-0", "trainer.precision=banana"], "trainer.precision"),
    ],
)
def test_wrong_types_from_the_command_line(tmp_path, command, key):
    store = tmp_path / "runs"
    done = _run(*command, store=store)
    assert done.returncode == USER_ERROR_EXIT, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}="), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not store.exists() or [p for p in store.glob("*/*") if p.is_dir()] == []
