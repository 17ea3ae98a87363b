#!/usr/bin/env bash
# experiment=curation_ablation: does curation help, at cluster scale. Every arm (random, detections, size_cut,
# balanced_stats, balanced) and every SSL method (simclr, byol, dino, vicreg), 10 seeds each; every model is
# trained as one submitit job array on SLURM (bootstrap.launcher), then probed on a held-out sky, the pool
# without the sources the models saw, and MiraBest (published split and grouped CV). The RESULT lines and the
# Markdown tables are those of benchmarks/bench_science.py (docs/science.md explains them).
#   scripts/curation_ablation.sh [overrides...]     e.g. bootstrap.launcher.slurm_partition=gpu
# A rerun reuses every finished run (also after an interrupted job array).
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/bench_science.py --experiment curation_ablation --runs-dir runs/curation_ablation \
    --json curation_ablation.json --markdown curation_ablation.md "$@"
