"""``radio-curation runs probes``: linear probes with their spread, preprocessing and pretraining enrichment."""

from __future__ import annotations

import pytest

from radio_curation.cli import main
from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.pretraining import preprocessing_note, probe_row
from radio_curation.runs.manifest import COMPLETE, SCHEME, write_manifest
from radio_curation.runs.store import RunStore

ASINH = {"_target_": "radio_curation.data.normalization.AsinhStretch", "a": 0.001}


def _run(store: RunStore, run_id: str, parents=(), created="2026-01-01T00:00:00", **manifest) -> str:
    stage = run_id.split("-")[0]
    store.run_dir(run_id).mkdir(parents=True)
    write_manifest(
        store.run_dir(run_id),
        {"run_id": run_id, "stage": stage, "status": COMPLETE, "scheme": SCHEME, "parents": list(parents),
         "created": created, "config": {}, "counts": {}, "metrics": {}, "info": {}, "artifacts": {}, **manifest},
    )  # fmt: skip
    return run_id


def _probe(store: RunStore, run_id: str, parents, accuracy: float, resize: int = 48) -> str:
    metrics = {
        "linear_probe/accuracy_mean": accuracy, "linear_probe/accuracy_std": 0.01,
        "linear_probe/macro_f1_mean": accuracy - 0.01, "linear_probe/macro_f1_std": 0.02,
    }  # fmt: skip
    info = {"resize": resize, "normalization": ASINH}
    return _run(store, run_id, parents, config={"eval": {"folds": 5}}, metrics=metrics, info=info)


@pytest.fixture
def store(runs_dir):
    """Two models, each pretrained on a subsample; reports of the first subsample (an older and a newer)."""
    store = RunStore(runs_dir)
    for name in ("a", "b"):
        _run(store, f"sample-{name}")
        _run(store, f"train-{name}", [f"sample-{name}"])
    enrichment = "curation/enrichment/ratio_pool"
    _run(store, "evaluate-old", ["sample-a"], metrics={enrichment: 2.0})
    _run(store, "evaluate-new", ["sample-a"], created="2026-02-01T00:00:00", metrics={enrichment: 3.5})
    _probe(store, "evaluate-pa", ["train-a"], 0.8)
    _probe(store, "evaluate-pb", ["train-b"], 0.7)
    _probe(store, "evaluate-p0", [], 0.6)
    _probe(store, "evaluate-p64", [], 0.65, resize=64)
    return store


def test_each_probe_row_has_its_pretraining_subsample_and_that_subsample_s_enrichment(store):
    curated, random, init = (probe_row(store, n, i) for n, i in [("c", "evaluate-pa"), ("r", "evaluate-pb"), ("0", "evaluate-p0")])  # fmt: skip
    assert (curated.model, curated.subsample, curated.report, curated.enrichment) == (
        "train-a", "sample-a", "evaluate-new", 3.5,
    )  # fmt: skip
    assert (random.subsample, random.enrichment) == ("sample-b", None)  # no report of that subsample
    assert (init.model, init.subsample) == (None, None)
    assert curated.accuracy == (0.8, 0.01) and curated.macro_f1 == (0.79, 0.02) and curated.folds == 5
    assert curated.preprocessing == "48 px, AsinhStretch(0.001)"
    assert preprocessing_note([curated, random, init]).startswith(
        "every row probed at the same preprocessing"
    )
    odd = probe_row(store, "64", "evaluate-p64")
    assert preprocessing_note([curated, odd]) == (
        "NOT comparable, the rows were probed at different preprocessing: c: 48 px, AsinhStretch(0.001); "
        "64: 64 px, AsinhStretch(0.001)"
    )
    with pytest.raises(RadioCurationError, match="evaluate-new is not a linear probe"):
        probe_row(store, "report", "evaluate-new")


def test_the_probes_command_prints_the_table_and_the_preprocessing_check(store, runs_dir, capsys):
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(runs_dir), "probes", "curated=evaluate-pa", "evaluate-p0"]) == 0
    out = capsys.readouterr().out
    assert "mean ± std over 5 folds" in out
    (curated,) = [line for line in out.splitlines() if "curated" in line]
    assert "0.800 ± 0.010" in curated and "0.790 ± 0.020" in curated and "3.50x (evaluate-new)" in curated
    assert "sample-a" in curated
    assert (
        out.strip().splitlines()[-1]
        == "every row probed at the same preprocessing: 48 px, AsinhStretch(0.001)"
    )
