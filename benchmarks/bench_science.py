"""Does curation help? The bootstrap loop (experiment=bootstrap) measured on a synthetic sky with truth labels.

Runs :class:`radio_curation.bootstrap.BootstrapLoop` (pretrain a small SSL model on a random part of the
pool → its features → hierarchical k-means → balanced and random subsamples of 10 % of the pool → the
same SSL recipe on each, several seeds) in a run store, then prints:

- ``RESULT features knn_ssl=<a> knn_random_init=<a> knn_stats=<a> knn_random_bn=<a>``: balanced kNN accuracy
  over the truth classes (windows labelled by the brightest visible truth source within half a window side;
  empty windows left out), 5-fold cross-validated with all windows of a source in one fold, for the
  bootstrap model's features, the same network with random weights, a hand-made radio-statistics vector,
  and the random network again with its batch-norm statistics taken from the windows (no weight changes:
  the stronger baseline, since a random network's initial statistics suit no real input);
- ``RESULT enrichment rare_subsample=<share> rare_random=<share> ratio=<x> empty_ratio=<x> rare_pool=<share>
  ratio_pool=<x>``: share of the rare classes (pool share < 1 % each) in the balanced subsample and in the
  random one (the one the random arm pretrains on), their ratio, the ratio of their shares of empty windows,
  and the rare classes' share of the whole pool with the balanced subsample's ratio to it: the random
  subsample's expected share (its one draw holds only a dozen or so rare windows, so ``ratio`` spreads);
- ``RESULT pretraining curated=<m> random=<m> diff=<d> ci_low=<l> ci_high=<h> seeds=<n> probe=<name>``, per
  probe (``synthetic``: the truth-class kNN above; ``mirabest_confident``: the MiraBest Confident linear
  probe): means over seeds, the mean paired difference (same seed) and its 95 % t interval.

The recipe (normalisation, batch size, epochs, the detection cut of the bootstrap model's windows, the
clustering) was chosen on another sky (``survey.seed=1``, 3 or 6 mosaics) than the one scored here
(``survey.seed=0``).

Runs are kept in ``--runs-dir`` (default ``runs/bench_science``): a second invocation reuses them.

Usage::

    python benchmarks/bench_science.py                    # the full experiment=bootstrap, 10 seeds (≈ 12 min on 2 cores)
    python benchmarks/bench_science.py --quick            # a small sky, short training, 3 seeds (≈ 1 min)
    python benchmarks/bench_science.py --mirabest /data/mirabest --json science.json --plot recall.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from radio_curation.bootstrap import BootstrapLoop, result_lines, summary
from radio_curation.evaluation.plots import bar_plot
from radio_curation.tasks.resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]

#: A sky and a training short enough for a few minutes on 2 cores: it shows the loop works, not the answer.
QUICK = [
    "survey.mosaics=2",
    "survey.size=1536",
    "bootstrap.pretrain_subset=600",
    "bootstrap.max_epochs=2",
    "target_size=280",
    "trainer.max_epochs=2",
    "bootstrap.seeds=[0,1,2]",
    "ssl.warmup_epochs=0",
    "eval.folds=3",
    "eval.cs=[1.0e-2,1.0]",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sky, 2 epochs: checks the loop in minutes"
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench_science"))
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="where the synthetic sky is cached"
    )
    parser.add_argument(
        "--mirabest",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "mirabest",
        help="MiraBest folder (FITS + labels.csv); the MiraBest probe is skipped when it is not there",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every figure (per seed) here")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="also write a PNG of each representation's kNN recall per truth class here",
    )
    parser.add_argument("overrides", nargs="*", help="further config overrides for every step")
    args = parser.parse_args(argv)

    register_resolvers()
    base = [
        "experiment=bootstrap",
        f"paths.runs_dir={args.runs_dir.resolve()}",
        f"paths.data_dir={args.data_dir.resolve()}",
        "logger=csv",
        *(QUICK if args.quick else []),
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
    print(f"runs: {vars(runs)}", file=sys.stderr)
    print(f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": vars(runs), **summary(measurement)}, indent=2))
    if args.plot is not None:
        bar_plot(
            measurement.recall,
            args.plot,
            "truth-class kNN recall (balanced accuracy = mean over classes)",
            "recall",
        )
    for line in result_lines(measurement):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
