#!/usr/bin/env bash
# The whole loop on the built-in synthetic sky (experiment=demo), chaining stages by the run IDs they print.
# Runs are reused when they already exist, so running it again is quick. Environment:
#   RC_RUNS_DIR (default ./runs), RC_DATA_DIR (default ./data): where runs and the generated sky go;
#   MIRABEST: a MiraBest folder (FITS + labels.csv) for the linear probe (default ../shared/data/mirabest;
#             without one, the probe uses labelled windows of the synthetic sky instead).
set -euo pipefail
cd "$(dirname "$0")/.."
MIRABEST=${MIRABEST:-../shared/data/mirabest}
runs=${RC_RUNS_DIR:-runs}

step() {  # step "what" command...: runs a stage, shows its log, returns the run ID it printed last
    echo ">> $1" >&2
    shift
    "$@" | tee /dev/stderr | tail -n1 | cut -d= -f2
}

start=$(date +%s)
cutouts=$(step "cutouts of the synthetic sky" python extract.py experiment=demo stage=cutouts)
merged=$(step "merge with cross-mosaic deduplication" python extract.py experiment=demo stage=merge "cutouts_ids=[$cutouts]")
# No downloaded weights: the loop bootstraps its features from an SSL model trained on a random part of the pool.
# Trained on windows with a detection: on noise-only windows a contrastive model learns noise patterns.
detections=$(step "windows with a detection (peak S/N >= 6)" python extract.py experiment=demo stage=merge "cutouts_ids=[$cutouts]" merge.min_peak_snr=6)
bootstrap=$(step "bootstrap: SSL pretraining on 800 random windows with a detection" python train.py experiment=demo source_id="$detections" random_subset=800)
features=$(step "features with the bootstrap model" python extract.py experiment=demo stage=features source_id="$merged" backbone=run backbone.model_id="$bootstrap")
subsample=$(step "hierarchical k-means + balanced sampling" python curate.py experiment=demo features_id="$features")
random=$(step "a random subsample of the same size (same clustering)" python curate.py experiment=demo features_id="$features" sampler=random)
model=$(step "SimCLR pretraining on the balanced subsample" python train.py experiment=demo subsample_id="$subsample")
random_model=$(step "the same pretraining on the random subsample" python train.py experiment=demo subsample_id="$random")
if [ -f "$MIRABEST/labels.csv" ]; then
    labelled=(dataset=mirabest "dataset.root=$(cd "$MIRABEST" && pwd)")
else
    echo "!! no MiraBest at $MIRABEST: probing on labelled synthetic windows instead" >&2
    labelled=(dataset=synthetic)
fi
probe=$(step "linear probe: curated model" python evaluate.py experiment=demo eval=linear_probe model_id="$model" "${labelled[@]}")
random_probe=$(step "linear probe: random-subsample model" python evaluate.py experiment=demo eval=linear_probe model_id="$random_model" "${labelled[@]}")
# The baseline every pretraining must beat: the same network with random weights, at the same preprocessing
# (experiment=demo's resize is the trained models' input size; the closing table checks it).
init_probe=$(step "linear probe: random weights" python evaluate.py experiment=demo eval=linear_probe "${labelled[@]}")
report=$(step "curation report" python evaluate.py experiment=demo eval=curation_report subsample_id="$subsample")
random_report=$(step "curation report of the random subsample" python evaluate.py experiment=demo eval=curation_report subsample_id="$random")
radio-curation runs probes "curated=$probe" "random subsample=$random_probe" "random weights=$init_probe" >&2

cat <<DONE

Demo finished in $(( $(date +%s) - start )) s. Runs: $runs (radio-curation runs list; radio-curation runs lineage $report)
  linear probe:     $runs/evaluate/$probe/metrics.json  (confusion matrix: $runs/evaluate/$probe/confusion.png)
  random subsample: $runs/evaluate/$random_probe/metrics.json
  random weights:   $runs/evaluate/$init_probe/metrics.json
  curation report:  $runs/evaluate/$report/report.html
  random report:    $runs/evaluate/$random_report/report.html
  trained backbone: $runs/train/$model/backbone.pt  (extract.py stage=features backbone=run backbone.model_id=$model)
DONE
