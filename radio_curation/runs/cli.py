"""``radio-curation runs list|show|lineage|find|compare|probes|verify``: find, inspect and check runs without
a database."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.pretraining import preprocessing_note, probe_row
from radio_curation.evaluation.seeds import SPREAD_OVER_SEEDS, paired_difference, seed_spread
from radio_curation.runs.manifest import DamagedRunError
from radio_curation.runs.store import RunRecord, RunStore, check_artifact, stage_of
from radio_curation.tracking.base import flatten

# Wide enough for run IDs and config keys when piped (rich assumes 80 columns off a terminal).
console = Console(width=None if sys.stdout.isatty() else 200)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``runs`` command and its subcommands."""
    runs = subparsers.add_parser("runs", help="list, inspect, find and compare runs")
    runs.add_argument(
        "--runs-dir",
        default=os.environ.get("RC_RUNS_DIR", "runs"),
        help="the run store (default: $RC_RUNS_DIR or ./runs)",
    )
    sub = runs.add_subparsers(dest="runs_command", required=True)
    listing = sub.add_parser("list", help="every run, oldest first")
    listing.add_argument("--stage", help="only runs of this stage")
    listing.set_defaults(func=_with_store(cmd_list))
    show = sub.add_parser("show", help="a run's manifest")
    show.add_argument("run_id")
    show.set_defaults(func=_with_store(cmd_show))
    lineage = sub.add_parser("lineage", help="the tree of a run's parents down to the mosaics")
    lineage.add_argument("run_id")
    lineage.set_defaults(func=_with_store(cmd_lineage))
    find = sub.add_parser("find", help="the ID of the one run whose config matches key=value ...")
    find.add_argument("--stage", required=True)
    find.add_argument("conditions", nargs="*", metavar="key=value")
    find.add_argument(
        "--all",
        action="store_true",
        help="print every matching ID, comma-separated (e.g. the shards of a sharded cutouts sweep)",
    )
    find.set_defaults(func=_with_store(cmd_find))
    compare = sub.add_parser(
        "compare",
        help="runs side by side: params that differ, and metrics; with --group, settings over seeds",
    )
    compare.add_argument("run_ids", nargs="*")
    compare.add_argument("--all", action="store_true", help="show params that are equal too")
    compare.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="NAME=ID,ID,...",
        help="one setting's runs, one per training seed, in the same seed order in every group: each "
        "metric's mean and std over seeds, and each group's paired difference to the first group with "
        "its 95%% interval",
    )
    compare.add_argument("--out", help="also write the --group summary to this JSON file")
    compare.set_defaults(func=_with_store(cmd_compare))
    probes = sub.add_parser(
        "probes",
        help="linear probes side by side: accuracy with its spread over folds, the preprocessing, and the "
        "rare-class enrichment of each model's pretraining subsample (from its curation report)",
    )
    probes.add_argument("probes", nargs="+", metavar="[NAME=]ID", help="linear-probe runs, one row each")
    probes.set_defaults(func=_with_store(cmd_probes))
    verify = sub.add_parser(
        "verify", help="check runs' manifests and artifacts (size and sha256); list what is damaged"
    )
    verify.add_argument("run_ids", nargs="*", help="the runs to check (default: every run)")
    verify.set_defaults(func=_with_store(cmd_verify))


def _with_store(
    command: Callable[[RunStore, argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return command(RunStore(args.runs_dir), args)

    return run


def _params(record: RunRecord) -> dict[str, Any]:
    return {**flatten(record.manifest.get("config") or {}), "parents": ",".join(record.parents)}


def _results(record: RunRecord) -> dict[str, Any]:
    manifest = record.manifest
    return {
        **{f"metrics.{k}": v for k, v in flatten(manifest.get("metrics") or {}).items()},
        **{f"counts.{k}": v for k, v in flatten(manifest.get("counts") or {}).items()},
    }


def cmd_list(store: RunStore, args: argparse.Namespace) -> int:
    table = Table(title=f"runs in {store.root}")
    for column in ("run_id", "stage", "status", "created", "parents", "experiment"):
        table.add_column(column)
    for record in store.runs(args.stage):
        m = record.manifest
        table.add_row(
            record.run_id,
            record.stage,
            store.display_status(record),
            str(m.get("created")),
            ", ".join(record.parents),
            str(m.get("experiment")),
        )
    for run_id in store.damaged(args.stage):
        table.add_row(run_id, stage_of(run_id), "damaged (runs verify says more)", "", "", "")
    console.print(table)
    return 0


def cmd_show(store: RunStore, args: argparse.Namespace) -> int:
    record = store.resolve(args.run_id, require_complete=False)
    console.print(f"[bold]{record.run_id}[/bold]  {record.dir}")
    console.print(Syntax(yaml.safe_dump(record.manifest, sort_keys=False), "yaml"))
    return 0


def _lineage_node(store: RunStore, record: RunRecord, tree: Tree) -> None:
    node = tree.add(f"[bold]{record.run_id}[/bold] ({record.stage}, {record.manifest.get('status')})")
    for mosaic in (record.manifest.get("info") or {}).get("mosaics") or []:
        node.add(f"[dim]mosaic[/dim] {mosaic}")
    for parent in record.parents:
        _lineage_node(store, store.resolve(parent, require_complete=False), node)


def cmd_lineage(store: RunStore, args: argparse.Namespace) -> int:
    record = store.resolve(args.run_id, require_complete=False)
    tree = Tree(f"lineage of {record.run_id}")
    _lineage_node(store, record, tree)
    console.print(tree)
    return 0


def _matches(value: Any, wanted: str) -> bool:
    return str(value) == wanted or value == yaml.safe_load(wanted)


def _differing(records: list[RunRecord], values: dict[str, dict[str, Any]]) -> list[str]:
    keys = sorted({k for r in records for k in values[r.run_id]})
    return [k for k in keys if len({repr(values[r.run_id].get(k)) for r in records}) > 1]


def cmd_find(store: RunStore, args: argparse.Namespace) -> int:
    conditions = []
    for condition in args.conditions:
        if "=" not in condition:
            raise RadioCurationError(f"'{condition}' is not a key=value condition (e.g. clustering.seed=0)")
        conditions.append(condition.split("=", 1))
    params = {r.run_id: _params(r) for r in store.runs(args.stage)}
    found = [
        r
        for r in store.runs(args.stage)
        if r.complete
        and all(k in params[r.run_id] and _matches(params[r.run_id][k], v) for k, v in conditions)
    ]
    if found and (args.all or len(found) == 1):
        print(",".join(r.run_id for r in found))
        return 0
    if not found:
        console.print(f"no complete {args.stage} run matches {' '.join(args.conditions)}", style="red")
        return 1
    differing = _differing(found, params)
    table = Table(title=f"{len(found)} {args.stage} runs match; add a condition on a key that differs")
    table.add_column("run_id")
    for key in differing:
        table.add_column(key)
    for record in found:
        table.add_row(record.run_id, *(str(params[record.run_id].get(k)) for k in differing))
    console.print(table)
    return 1


def cmd_compare(store: RunStore, args: argparse.Namespace) -> int:
    if args.group:
        if args.run_ids:
            raise RadioCurationError("give either run IDs or --group NAME=ID,ID,... options, not both")
        return _compare_groups(store, args.group, args.out)
    if not args.run_ids:
        raise RadioCurationError("give the run IDs to compare, or --group NAME=ID,ID,... per setting")
    records = [store.resolve(run_id, require_complete=False) for run_id in args.run_ids]
    params = {r.run_id: _params(r) for r in records}
    results = {r.run_id: _results(r) for r in records}
    keys = sorted({k for p in params.values() for k in p}) if args.all else _differing(records, params)
    table = Table(title="runs side by side")
    table.add_column("")
    for record in records:
        table.add_column(record.run_id)
    for key in keys:
        table.add_row(key, *(str(params[r.run_id].get(key, "—")) for r in records))
    table.add_section()
    for key in sorted({k for v in results.values() for k in v}):
        table.add_row(key, *(_format(results[r.run_id].get(key)) for r in records))
    console.print(table)
    return 0


def _parse_groups(groups: list[str]) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for group in groups:
        name, sep, ids = group.partition("=")
        if not sep or not name or not ids or name in parsed:
            raise RadioCurationError(
                f"--group {group!r}: write NAME=ID,ID,... with a new name for each setting "
                "(e.g. --group random=evaluate-1a,evaluate-2b --group balanced=evaluate-3c,evaluate-4d)"
            )
        parsed[name] = [i for i in ids.split(",") if i]
    return parsed


def seed_summary(store: RunStore, groups: dict[str, list[str]]) -> dict[str, Any]:
    """Each metric's spread over the seeds of each group, and paired differences to the first group."""
    values: dict[str, dict[str, list[float]]] = {}
    for name, ids in groups.items():
        metrics = [flatten(store.resolve(i).manifest.get("metrics") or {}) for i in ids]
        shared = set.intersection(*(set(m) for m in metrics))
        values[name] = {
            k: [float(m[k]) for m in metrics]
            for k in sorted(shared)
            if all(isinstance(m[k], int | float) for m in metrics)
        }
    reference = next(iter(groups))
    summary: dict[str, Any] = {
        "spread": SPREAD_OVER_SEEDS,
        "pairing": f"the i-th run of every group has the i-th seed; differences are group - {reference}",
        "groups": {
            name: {
                "runs": groups[name],
                "metrics": {k: seed_spread(v).as_dict() for k, v in values[name].items()},
            }
            for name in groups
        },
        "differences": {},
    }
    for name in list(groups)[1:]:
        shared = sorted(set(values[name]) & set(values[reference]))
        summary["differences"][f"{name} - {reference}"] = {
            k: paired_difference(values[name][k], values[reference][k]).as_dict() for k in shared
        }
    return summary


def _compare_groups(store: RunStore, groups: list[str], out: str | None) -> int:
    parsed = _parse_groups(groups)
    summary = seed_summary(store, parsed)
    table = Table(
        title=f"over seeds (mean ± std over seeds; Δ: paired difference to {next(iter(parsed))}, 95% CI)"
    )
    table.add_column("metric")
    for name in parsed:
        table.add_column(f"{name} (n={len(parsed[name])})")
    for name in list(parsed)[1:]:
        table.add_column(f"Δ {name}")
    metrics = sorted({k for g in summary["groups"].values() for k in g["metrics"]})
    for metric in metrics:
        cells = []
        for name in parsed:
            spread = summary["groups"][name]["metrics"].get(metric)
            cells.append("—" if spread is None else f"{spread['mean']:.4g} ± {spread['std']:.2g}")
        for name in list(parsed)[1:]:
            diff = summary["differences"][f"{name} - {next(iter(parsed))}"].get(metric)
            cells.append(
                "—"
                if diff is None
                else f"{diff['mean']:+.3g} [{diff['ci_low']:+.3g}, {diff['ci_high']:+.3g}]"
            )
        table.add_row(metric, *cells)
    console.print(table)
    if out:
        Path(out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def cmd_probes(store: RunStore, args: argparse.Namespace) -> int:
    rows = []
    for given in args.probes:
        name, _, run_id = given.rpartition("=")
        rows.append(probe_row(store, name or run_id, run_id))
    folds = sorted({row.folds for row in rows})
    table = Table(title=f"linear probes (mean ± std over {'/'.join(map(str, folds))} folds)")
    for column in ("", "accuracy", "macro-F1", "pretrained on", "rare-class share / pool's", "probe"):
        table.add_column(column)
    for row in rows:
        enrichment = "—" if row.enrichment is None else f"{row.enrichment:.2f}x ({row.report})"
        table.add_row(
            row.name,
            f"{row.accuracy[0]:.3f} ± {row.accuracy[1]:.3f}",
            f"{row.macro_f1[0]:.3f} ± {row.macro_f1[1]:.3f}",
            row.subsample or ("—" if row.model is None else f"{row.model} (no subsample)"),
            enrichment,
            row.probe,
        )
    console.print(table)
    console.print(preprocessing_note(rows))
    return 0


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def cmd_verify(store: RunStore, args: argparse.Namespace) -> int:
    """Exit 0 when every checked run is whole, 1 when something is damaged (listed on stdout)."""
    problems: list[tuple[str, str]] = []
    if args.run_ids:
        records = []
        for run_id in args.run_ids:
            try:
                records.append(store.resolve(run_id, require_complete=False))
            except DamagedRunError as err:
                problems.append((run_id, str(err)))
    else:
        records = store.runs()
        problems.extend(store.damaged().items())
    files = 0
    for record in records:
        for name in record.manifest.get("artifacts") or {}:
            files += 1
            try:
                check_artifact(record.dir, name, record.manifest, checksum=True)
            except DamagedRunError as err:
                problems.append((record.run_id, str(err)))
    if not problems:
        console.print(f"{len(records)} runs, {files} artifacts: sizes and sha256 checksums match")
        return 0
    table = Table(title=f"{len(problems)} damaged in {store.root}")
    table.add_column("run_id")
    table.add_column("problem", overflow="fold")
    for run_id, problem in problems:
        table.add_row(run_id, problem)
    console.print(table)
    return 1
