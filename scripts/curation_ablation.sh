#!/usr/bin/env bash
# experiment=curation_ablation: random vs balanced vs dedup+balanced subsamples of one features run, each
# pretrained with the same SSL recipe and scored by the same MiraBest linear probe, over several seeds
# (SEEDS, default "0 1 2": the seed of the subsample and of the training); one table at the end with each
# setting's mean ± std over seeds and its paired difference to random with a 95% interval.
#   [SEEDS="0 1 2 3 4"] scripts/curation_ablation.sh FEATURES_ID MIRABEST_DIR [extra overrides for every stage...]
# On a cluster, run the same three steps as sweeps instead (-m hydra/launcher=slurm_gpu, see docs/slurm.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: [SEEDS=\"0 1 2\"] $0 FEATURES_ID MIRABEST_DIR [overrides...]" >&2
    exit 2
fi
features=$1
mirabest=$(cd "$2" && pwd)
shift 2
seeds=${SEEDS:-0 1 2}
last_id() { tail -n1 | cut -d= -f2; }

groups=()
for sampler in random balanced dedup_then_balanced; do
    probes=()
    for seed in $seeds; do
        echo ">> $sampler, seed $seed" >&2
        subsample=$(python curate.py experiment=curation_ablation features_id="$features" sampler="$sampler" \
            seed="$seed" "$@" | last_id)
        model=$(python train.py experiment=curation_ablation subsample_id="$subsample" seed="$seed" "$@" | last_id)
        probes+=("$(python evaluate.py experiment=curation_ablation eval=linear_probe model_id="$model" \
            dataset=mirabest dataset.root="$mirabest" "$@" | last_id)")
    done
    groups+=("--group" "$sampler=$(IFS=,; echo "${probes[*]}")")
done
radio-curation runs compare "${groups[@]}" --out curation_ablation.json
