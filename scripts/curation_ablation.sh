#!/usr/bin/env bash
# experiment=curation_ablation: random vs balanced vs dedup+balanced subsamples of one features run, each
# pretrained with the same SSL recipe and scored by the same MiraBest linear probe; one table at the end.
#   scripts/curation_ablation.sh FEATURES_ID MIRABEST_DIR [extra overrides for every stage...]
# On a cluster, run the same three steps as sweeps instead (-m hydra/launcher=slurm_gpu, see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: $0 FEATURES_ID MIRABEST_DIR [overrides...]" >&2
    exit 2
fi
features=$1
mirabest=$(cd "$2" && pwd)
shift 2
last_id() { tail -n1 | cut -d= -f2; }

probes=()
for sampler in random balanced dedup_then_balanced; do
    echo ">> $sampler" >&2
    subsample=$(python curate.py experiment=curation_ablation features_id="$features" sampler="$sampler" "$@" | last_id)
    model=$(python train.py experiment=curation_ablation subsample_id="$subsample" "$@" | last_id)
    probes+=("$(python evaluate.py experiment=curation_ablation eval=linear_probe model_id="$model" \
        dataset=mirabest dataset.root="$mirabest" "$@" | last_id)")
done
radio-curation runs compare "${probes[@]}"
