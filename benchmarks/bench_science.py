"""Does curation help? Every arm of the bootstrap loop (experiment=bootstrap), scored on windows no model saw.

Runs :class:`radio_curation.bootstrap.BootstrapLoop` in a run store: a bootstrap SSL model on the pool's
windows with a detection → its features → hierarchical k-means; then for every seed s, every arm draws its
subsample of 10 % of the pool anew with s (``random``, ``detections``, ``size_cut``, ``balanced_stats``,
``balanced``; ``bootstrap.arms``) and the recipe (SimCLR) pretrains on it with s; ``balanced`` and ``random``
also with BYOL, DINO and VICReg (``bootstrap.methods``, ``bootstrap.method_seeds``). It prints:

- ``RESULT features knn_ssl=<a> knn_random_bn=<a> knn_random_init=<a> knn_stats=<a> gap_bn=<d> ci_low=<l>
  ci_high=<h> seeds=<n>``: balanced kNN accuracy on the held-out sky's truth classes (folds grouped by
  source) of the bootstrap model, random weights with batch-norm statistics of the probe sky's common set,
  random weights as initialised, and the radio-statistics vector; gap_bn = ssl − random_bn paired over seeds
  (the kNN folds and the random weights), with its 95 % t interval;
- ``RESULT enrichment ratio_pool=<mean> ratio_pool_min=<x> ratio_pool_max=<x> clustering_seeds=<n>
  rare_sources_balanced=<n> rare_sources_random=<n> empty_ratio=<x>``: rare-class share of the balanced
  subsample over the pool's, over clusterings with different seeds; distinct rare *sources* in the balanced
  and random subsamples (mean over seeds); their ratio of empty windows;
- ``RESULT mirabest representation=<r> probe=<p> accuracy=<a>``: the bootstrap model and the baselines on
  MiraBest at the models' pixel scale;
- ``RESULT pretraining arm=<arm> vs=random ssl=<method> probe=<probe> diff=<d> ci_low=<l> ci_high=<h>
  seeds=<n> bn=<common|own>``, per arm, method and probe: the mean paired difference (same seed) and its
  95 % t interval. Probes: ``heldout_sky`` (truth-class kNN on a sky of its own, the headline),
  ``pool_excluded`` (the pool without every source either model saw), ``mirabest_split`` and
  ``mirabest_cv`` (MiraBest Confident linear probe: the published split, and 5-fold CV grouped by position).

The recipe was tuned on ``survey.seed=1`` (pool) and ``survey.seed=11`` (probe sky, ``--quick``) only; the
full run scores the sky of ``SCORED`` once (docs/science.md lists every scored run).

Runs are kept in ``--runs-dir`` (default ``runs/bench_science``): a second invocation reuses them.

Usage::

    python benchmarks/bench_science.py                    # the scored study: 81 models (see docs/science.md)
    python benchmarks/bench_science.py --quick            # the tuning skies, small, 1 epoch: 28 models
    python benchmarks/bench_science.py --mirabest /data/mirabest --json science.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from radio_curation.bootstrap import BootstrapLoop, markdown_tables, result_lines, summary
from radio_curation.tasks.resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]

#: The scored skies: a pool and a probe sky no one had looked at before the scored run (docs/science.md).
SCORED = ["survey.seed=2026", "bootstrap.probe_sky=['survey.seed=2027','survey.dec=60.0']"]

#: The tuning skies, small, and a short training: shows the protocol works in minutes, not the answer.
QUICK = [
    "survey.seed=1",
    "bootstrap.probe_sky=['survey.seed=11','survey.dec=60.0']",
    "survey.mosaics=2",
    "survey.size=1536",
    "bootstrap.pretrain_subset=600",
    "bootstrap.max_epochs=2",
    "target_size=280",
    "trainer.max_epochs=1",
    "bootstrap.seeds=[0,1,2]",
    "bootstrap.method_seeds=[0,1]",
    "bootstrap.common_windows=128",
    "clustering.n_clusters=[100,20,4]",
    "clustering.sample_size=[3,3,3]",
    "clustering.n_resampling_steps=[1,10,10]",
    "ssl.warmup_epochs=0",
    "eval.folds=3",
    "eval.cs=[1.0e-2,1.0]",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sky, 2 epochs: checks the loop in minutes"
    )
    parser.add_argument(
        "--experiment",
        default="bootstrap",
        help="the study's experiment config: bootstrap (2 CPU cores), curation_ablation (SLURM)",
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench_science"))
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="where the synthetic sky is cached"
    )
    parser.add_argument(
        "--mirabest",
        type=Path,
        default=Path("data") / "mirabest",
        help="MiraBest folder (FITS + labels.csv); the MiraBest probe is skipped when it is not there",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every figure (per seed) here")
    parser.add_argument(
        "--markdown", type=Path, default=None, help="also write the arms x probes tables (Markdown) here"
    )
    parser.add_argument("overrides", nargs="*", help="further config overrides for every step")
    args = parser.parse_args(argv)

    register_resolvers()
    progress = logging.getLogger("radio_curation.bootstrap")
    progress.setLevel(logging.INFO)
    progress.addHandler(logging.StreamHandler(sys.stderr))
    base = [
        f"experiment={args.experiment}",
        f"paths.runs_dir={args.runs_dir.resolve()}",
        f"paths.data_dir={args.data_dir.resolve()}",
        "logger=csv",
        *(QUICK if args.quick else SCORED),
        *args.overrides,
    ]

    def composer(name: str, overrides: list[str]) -> DictConfig:
        with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
            return compose(name, overrides=overrides)

    mirabest = args.mirabest if (args.mirabest / "labels.csv").is_file() else None
    if mirabest is None:
        print(f"no MiraBest at {args.mirabest}: the MiraBest probe is skipped", file=sys.stderr)
    start = time.perf_counter()
    loop = BootstrapLoop(composer, base)
    runs = loop.run()
    measurement = loop.measure(runs, mirabest.resolve() if mirabest else None)
    print(f"runs: {runs.ids()}", file=sys.stderr)
    print(f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs.ids(), **summary(measurement)}, indent=2, default=str))
    if args.markdown is not None:
        args.markdown.write_text(markdown_tables(measurement, loop.recipe))
    for line in result_lines(measurement):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
