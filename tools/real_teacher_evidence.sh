#!/usr/bin/env bash
# Real-teacher evidence (issue 32, item 1): scratch / KD / DUKD students of the published SMFANet+ x4, paired seeds.
# Runs one training at a time (two at once share 2 cores far worse than half each), seed by seed, so a partial
# sweep still holds complete pairs; each finished run is evaluated on Set5 / Set14 / B100 into eval.json.
#   SRKD_DATA=runs/data-root srkd teachers download smfanet-plus-x4 [--from FILE]
# (run the script with the same SRKD_DATA: the training sets are linked into that data root below)
#   ITERS=1000 MILESTONE=750 SEEDS="10 11 12" tools/real_teacher_evidence.sh runs/real
set -euo pipefail
out=${1:-runs/real}
iters=${ITERS:-1000}
milestone=${MILESTONE:-750}
srkd=${SRKD:-.venv/bin/srkd}
sets="../shared/data/benchmarks/Set5/HR,../shared/data/benchmarks/Set14/HR,../shared/data/benchmarks/B100/HR"
# The recipes name their data by registry name (T91, BSD200, General100, Set5): point the data root at the copies
# in ../shared (each file checked against srkd's shipped sha256; nothing is copied), unless it has them already.
shared=${SHARED_DATA:-../shared/data}
for spec in train/T91 train/BSD200 train/General100 benchmarks/Set5; do
  name=${spec#*/}
  "$srkd" data verify "$name" > /dev/null 2>&1 || "$srkd" data link "$name" "$shared/$spec"
done
for seed in ${SEEDS:-10 11 12}; do
  for method in scratch kd dukd; do
    run="$out/$method-s$seed-$iters"
    if [ ! -f "$run/eval.json" ]; then
      echo "$(date -u +%FT%TZ) start $run"
      "$srkd" train "configs/smfanet-plus-x4-$method-real.yaml" --set seed="$seed" \
        --set train.iterations="$iters" --set "sched.milestones=[$milestone]" --set train.val_every="$iters" \
        --resume auto --out "$run" > "$run.log" 2>&1
      # shellcheck disable=SC2086
      "$srkd" eval --model "$run/last.safetensors" --scale 4 --data "$sets" --json "$run/eval.json" -q >> "$run.log" 2>&1
      echo "$(date -u +%FT%TZ) done  $run"
    fi
  done
done
