from __future__ import annotations

from pathlib import Path

import pytest

from radio_curation.cli import main
from radio_curation.errors import RadioCurationError
from radio_curation.runs.manifest import read_manifest, write_manifest
from tests.runs.toy import toy_run


@pytest.fixture
def store(runs_dir):
    """Three toy runs (two differ only in ``params.b``) and a child of the first."""
    a = toy_run(runs_dir, a=2, b="x")["run_id"]
    b = toy_run(runs_dir, a=2, b="y")["run_id"]
    c = toy_run(runs_dir, a=5, b="x")["run_id"]
    child = toy_run(runs_dir, a=1, source_id=a)["run_id"]
    return {"a": a, "b": b, "c": c, "child": child}


def cli(runs_dir, *args):
    return main(["runs", "--runs-dir", str(runs_dir), *args])


def test_list_filters_by_stage(runs_dir, store, capsys):
    capsys.readouterr()
    assert cli(runs_dir, "list", "--stage", "toy") == 0
    out = capsys.readouterr().out
    assert all(run_id in out for run_id in store.values())
    assert cli(runs_dir, "list", "--stage", "merge") == 0
    assert store["a"] not in capsys.readouterr().out


def test_find_prints_only_the_id_of_a_unique_match(runs_dir, store, capsys):
    capsys.readouterr()
    assert cli(runs_dir, "find", "--stage", "toy", "params.a=2", "params.b=y") == 0
    assert capsys.readouterr().out.strip() == store["b"]


def test_find_with_several_matches_shows_the_keys_that_differ(runs_dir, store, capsys):
    capsys.readouterr()
    assert cli(runs_dir, "find", "--stage", "toy", "params.a=2") == 1
    out = capsys.readouterr().out
    assert store["a"] in out and store["b"] in out and store["c"] not in out
    assert "params.b" in out and "params.a" not in out.split("differs")[-1].split("\n", 2)[-1]
    assert cli(runs_dir, "find", "--stage", "toy", "--all", "params.a=2") == 0
    assert set(capsys.readouterr().out.strip().split(",")) == {store["a"], store["b"]}
    assert cli(runs_dir, "find", "--stage", "toy", "params.a=99") == 1
    assert "no complete toy run matches" in capsys.readouterr().out


def test_show_lineage_and_compare(runs_dir, store, capsys):
    capsys.readouterr()
    assert cli(runs_dir, "show", store["child"]) == 0
    out = capsys.readouterr().out
    assert "status: complete" in out and store["a"] in out
    assert cli(runs_dir, "lineage", store["child"]) == 0
    out = capsys.readouterr().out
    assert out.index(store["child"]) < out.index(store["a"])
    assert cli(runs_dir, "compare", store["a"], store["c"]) == 0
    out = capsys.readouterr().out
    assert "params.a" in out and "metrics.sum" in out and "params.b" not in out
    assert " 10 " in out or "│ 10" in out  # sum(range(5)) of run c


def test_unknown_and_wrong_stage_ids_are_clear_errors(runs_dir, store, capsys):
    typo = store["a"][:-2] + "zz"
    assert cli(runs_dir, "show", typo) == 2
    err = capsys.readouterr().err
    assert "no run" in err and store["a"] in err
    assert cli(runs_dir, "find", "--stage", "toy", "params.a") == 2
    assert "key=value" in capsys.readouterr().err


def test_compare_groups_reports_spread_over_seeds_and_paired_differences(runs_dir, tmp_path, capsys):
    import json

    import numpy as np
    from scipy import stats

    # Seeds move both settings a lot (±0.1); the setting itself adds 0.05 to every seed's score.
    seed_effect = [0.0, 0.12, -0.08, 0.05]
    setting_effect = {"random": 0.0, "balanced": 0.05}
    pair_noise = [0.0, 0.01, -0.01, 0.005]
    scores = {
        name: [0.7 + seed_effect[s] + effect + (pair_noise[s] if effect else 0.0) for s in range(4)]
        for name, effect in setting_effect.items()
    }

    def scored(run):
        run.metrics["knn/accuracy_mean"] = scores[run.cfg.params.setting][run.cfg.params.seed]

    ids = {
        name: [toy_run(runs_dir, work=scored, setting=name, seed=s)["run_id"] for s in range(4)]
        for name in scores
    }
    out = tmp_path / "seeds.json"
    groups = [f"--group={name}={','.join(ids[name])}" for name in ("random", "balanced")]
    capsys.readouterr()
    assert cli(runs_dir, "compare", *groups, "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "knn/accuracy_mean" in printed and "balanced (n=4)" in printed
    summary = json.loads(out.read_text())
    assert "over the training seeds" in summary["spread"]
    spread = summary["groups"]["random"]["metrics"]["knn/accuracy_mean"]
    assert spread["n"] == 4 and spread["std"] == pytest.approx(np.std(scores["random"], ddof=1))
    diff = summary["differences"]["balanced - random"]["knn/accuracy_mean"]
    d = np.subtract(scores["balanced"], scores["random"])
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert diff["mean"] == pytest.approx(d.mean())
    assert (diff["ci_low"], diff["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    # Pairing removes the seed-to-seed spread: the difference is resolved although the spreads overlap.
    assert diff["ci_low"] > 0 and spread["std"] > 0.05
    assert (
        cli(
            runs_dir, "compare", "--group", f"random={ids['random'][0]}", "--group", f"x={ids['balanced'][0]}"
        )
        == 2
    )
    assert "at least 2 seeds" in capsys.readouterr().err
    assert cli(runs_dir, "compare", "--group", "nonsense") == 2


def test_verify_lists_what_is_damaged(runs_dir, store, capsys):
    capsys.readouterr()
    assert cli(runs_dir, "verify") == 0
    assert "4 runs, 4 artifacts: sizes and sha256 checksums match" in capsys.readouterr().out
    numbers = runs_dir / "toy" / store["c"] / "numbers.txt"
    numbers.write_text(numbers.read_text().replace("3", "7"))
    manifest = runs_dir / "toy" / store["b"] / "manifest.yaml"
    manifest.write_text(manifest.read_text()[:40])
    assert cli(runs_dir, "verify") == 1
    out = capsys.readouterr().out
    assert store["c"] in out and "sha256" in out and store["b"] in out and "manifest" in out
    assert store["a"] not in out
    assert cli(runs_dir, "verify", store["a"]) == 0
    assert cli(runs_dir, "list") == 0
    assert "damaged" in capsys.readouterr().out


def test_list_shows_failed_and_interrupted_runs_as_resumable(runs_dir, capsys):
    def broken(run):
        (run.dir / "partial.txt").write_text("half")
        raise RadioCurationError("bad file")

    with pytest.raises(RadioCurationError):
        toy_run(runs_dir, work=broken, a=3)
    killed = toy_run(runs_dir, a=4)
    manifest = read_manifest(Path(killed["run_dir"]))
    write_manifest(Path(killed["run_dir"]), {**manifest, "status": "running"})  # as a kill -9 leaves it
    capsys.readouterr()
    assert cli(runs_dir, "list") == 0
    out = capsys.readouterr().out
    assert "failed (fix the error, rerun to resume)" in out
    assert "interrupted (rerun to resume)" in out
