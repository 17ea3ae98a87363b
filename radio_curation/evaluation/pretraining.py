"""Linear probes of pretrained models side by side with what each model's pretraining subsample held.

One row per linear-probe run: the probe's accuracy and macro-F1 with their spread over the folds, the
preprocessing the probe actually applied (a ``backbone=run`` model brings its own input size and
normalization, whatever ``resize=`` says), and the rare-class enrichment that a curation report of the
model's pretraining subsample measured. Rows are only comparable at equal preprocessing, so
:func:`preprocessing_note` says whether they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from radio_curation.errors import RadioCurationError
from radio_curation.runs.store import RunRecord, RunStore

#: The curation report's rare-class figure: the subsample's rare-class share over the pool's.
ENRICHMENT = "curation/enrichment/ratio_pool"


@dataclass(frozen=True)
class ProbeRow:
    """One linear probe and the pretraining behind it.

    Attributes
    ----------
    name, probe
        The row's label and the probe's run ID.
    model
        The probed model's train run ID (None: a backbone with no training run, e.g. random weights).
    subsample
        The sample run the model was pretrained on (None: none in its lineage).
    enrichment, report
        The latest curation report of ``subsample``: its rare-class share over the pool's, and its run ID.
    preprocessing
        The input size and normalization the probe applied, as text.
    folds
        The cross-validation folds the spreads are over.
    accuracy, macro_f1
        ``(mean, std)`` over the folds.
    """

    name: str
    probe: str
    model: str | None
    subsample: str | None
    enrichment: float | None
    report: str | None
    preprocessing: str
    folds: int
    accuracy: tuple[float, float]
    macro_f1: tuple[float, float]


def _described(node: Any) -> str:
    """``IntervalStretch(ManualInterval(-0.0005, 0.5), AsinhStretch(0.001))`` for a ``_target_`` config."""
    if isinstance(node, Mapping):
        args = ", ".join(_described(v) for k, v in node.items() if k != "_target_")
        return f"{str(node.get('_target_', '')).rsplit('.', 1)[-1]}({args})"
    return str(node)


def _curation_report(store: RunStore, subsample: RunRecord) -> RunRecord | None:
    reports = [
        r
        for r in store.runs("evaluate")
        if r.complete and subsample.run_id in r.parents and ENRICHMENT in (r.manifest.get("metrics") or {})
    ]
    return reports[-1] if reports else None


def probe_row(store: RunStore, name: str, probe_id: str) -> ProbeRow:
    """The row of linear-probe run ``probe_id``.

    Raises
    ------
    RadioCurationError
        ``probe_id`` is not a complete linear-probe run.
    """
    probe = store.resolve(probe_id, stage="evaluate")
    metrics, info = probe.manifest.get("metrics") or {}, probe.manifest.get("info") or {}
    if "linear_probe/accuracy_mean" not in metrics:
        raise RadioCurationError(f"{probe.run_id} is not a linear probe (evaluate.py eval=linear_probe)")
    model = store.ancestor(probe, "train")
    subsample = store.ancestor(probe, "sample")
    report = _curation_report(store, subsample) if subsample is not None else None
    return ProbeRow(
        name=name,
        probe=probe.run_id,
        model=None if model is None else model.run_id,
        subsample=None if subsample is None else subsample.run_id,
        enrichment=None if report is None else float(report.manifest["metrics"][ENRICHMENT]),
        report=None if report is None else report.run_id,
        preprocessing=f"{info.get('resize')} px, {_described(info.get('normalization'))}",
        folds=int(probe.manifest["config"]["eval"]["folds"]),
        accuracy=(metrics["linear_probe/accuracy_mean"], metrics["linear_probe/accuracy_std"]),
        macro_f1=(metrics["linear_probe/macro_f1_mean"], metrics["linear_probe/macro_f1_std"]),
    )


def preprocessing_note(rows: list[ProbeRow]) -> str:
    """One line: every row at the same preprocessing, or which rows differ (they do not compare)."""
    kinds = {row.preprocessing for row in rows}
    if len(kinds) == 1:
        return f"every row probed at the same preprocessing: {kinds.pop()}"
    return "NOT comparable, the rows were probed at different preprocessing: " + "; ".join(
        f"{row.name}: {row.preprocessing}" for row in rows
    )
