#!/usr/bin/env bash
# Every GPU throughput figure in one command, sized to finish within 9 minutes on one GPU:
#   1. features, ResNet-18 at 224 px: pipeline vs model-only, data path, loader (bench_features.py)
#   2. features, ViT-S/14 at 224 px: the same
#   3. training, BYOL ResNet-18 at 128 px: images/s, GPU busy, data path (bench_train.py)
#   4. k-means 1M x 384, k = 10,000, 20 iterations, and hierarchical 1M x 384 (bench_curation.py)
#   5. distributed hierarchical k-means, one rank on the GPU, 1M x 384 float16 (bench_distributed.py)
# It prints the RESULT lines (the full output goes to the log named at the end) and exits non-zero if a
# step failed or ran out of its time.
#
# Usage: benchmarks/device_check.sh [--dry-run | --tiny]
#   (no option)  on a machine with a CUDA GPU; says so and exits 3 at once where torch sees none
#   --dry-run    print the commands, run nothing
#   --tiny       run every step at toy sizes on the CPU (checks the plumbing; the figures mean nothing)
# Works from a checkout with the project installed or not (the checkout is put on PYTHONPATH).
# PYTHON selects the interpreter (default: python3).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
MODE=gpu
case "${1:-}" in
  "") ;;
  --dry-run) MODE=dry ;;
  --tiny) MODE=tiny ;;
  *) echo "usage: $0 [--dry-run | --tiny]" >&2; exit 2 ;;
esac
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ $MODE == gpu ]]; then
  if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "device_check: torch sees no CUDA device here (torch.cuda.is_available() is False), so there are" \
      "no GPU figures to measure. Run it on a GPU machine; here, --dry-run lists the steps and --tiny" \
      "checks them on the CPU." >&2
    exit 3
  fi
  "$PYTHON" -c "import torch; print('device:', torch.cuda.get_device_name(0))"
fi

B="$ROOT/benchmarks"
if [[ $MODE == tiny ]]; then
  SKY=(--mosaics 1 --size 512 --repeats 1)
  FEATURES=(--device cpu --resize 56 --batch-size 16 --windows 32 --loader-windows 32 --datapath-windows 32
            --datapath-workers 1 --num-workers 1)
  TRAIN=(--device cpu --batch-size 8 --steps 1 --warmup 1 --num-workers 1 --datapath-workers 1)
  CURATION=(--backend torch --device cpu --n 4000 --k 40 --levels 40 8 2 --iters 2 --no-sklearn)
  DISTRIBUTED=(--device cpu --ranks 2 --n 4000 --n-clusters 40 8 2 --iters 2)
  LIMIT=300
else
  SKY=(--mosaics 2 --size 2048 --overlap 0.875 --repeats 2)
  FEATURES=(--device cuda --batch-size 512 --num-workers 8 --loader-windows 8192 --datapath-windows 8192
            --datapath-workers 1 8)
  TRAIN=(--device cuda --batch-size 256 --steps 30 --warmup 5 --num-workers 8 --datapath-workers 1 8)
  CURATION=(--backend torch --device cuda --n 1000000 --k 10000 --levels 2000 200 20 --iters 20 --no-sklearn)
  DISTRIBUTED=(--device cuda --ranks 1 --n 1000000 --n-clusters 2000 200 20 --iters 10 --baseline-threads 16)
  LIMIT=0
fi

STEPS=(
  "110|features resnet18|$B/bench_features.py --backbone resnet18 --windows 20000 ${SKY[*]} ${FEATURES[*]}"
  "110|features vit_small_dinov2|$B/bench_features.py --backbone vit_small_dinov2 --windows 12000 ${SKY[*]} ${FEATURES[*]}"
  "120|training byol resnet18|$B/bench_train.py ${SKY[*]} ${TRAIN[*]}"
  "100|k-means and hierarchical|$B/bench_curation.py ${CURATION[*]} --only kmeans hierarchical"
  "80|distributed k-means|$B/bench_distributed.py ${DISTRIBUTED[*]}"
)

LOG=/dev/null
[[ $MODE != dry ]] && LOG="$(mktemp "${TMPDIR:-/tmp}/device_check.XXXXXX.log")"
failed=0
for step in "${STEPS[@]}"; do
  IFS='|' read -r seconds name command <<<"$step"
  (( LIMIT > 0 )) && seconds=$LIMIT
  echo "== $name (at most ${seconds} s)"
  echo "+ $PYTHON $command"
  [[ $MODE == dry ]] && continue
  # shellcheck disable=SC2086  # the command is a list of words on purpose
  timeout "$seconds" "$PYTHON" $command 2>&1 | tee -a "$LOG" | grep --line-buffered -E "^(RESULT|gpu_utilisation|sky)"
  status=${PIPESTATUS[0]}
  if (( status != 0 )); then
    failed=1
    echo "!! $name: exit status $status$( (( status == 124 )) && echo ' (out of time)')" | tee -a "$LOG"
  fi
done
[[ $MODE == dry ]] && exit 0
echo "== RESULT lines"
grep -E "^(RESULT|gpu_utilisation)" "$LOG"
echo "full output: $LOG"
exit "$failed"
