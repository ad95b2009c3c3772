#!/usr/bin/env bash
# Issue 14: ResNet-56 / CIFAR-10 from the shared checkpoint under a latency budget: predicted latency <= 0.4 of the
# unpruned model (2.5x faster) on the committed depth-aware table of this project's machine, width + residual
# stream + depth actions, the same evaluator for every method (BN re-estimation on 500 training images, val
# top-1 on 1,000 images carved from the training set: ~6 s an evaluation), 200 evaluations per run, seeds 0 1 2.
# One run at a time (one PyTorch thread: two would fight over this 2-core machine). The run folders live under
# bench/results/resnet56/search/ and are committed as they progress: rerunning this script resumes each one
# (a finished run returns at once), so a later session continues instead of restarting.
# A run whose episodes.jsonl holds EVALS evaluations is finished and skipped, so the resume state (checkpoints/,
# study.db: git-ignored, several MB a run) is needed only while a run is unfinished.
# Usage: [TABLE=…json] [TARGET=0.4] [ROOT=…] [SEEDS="0 1 2"] bash bench/search_resnet56.sh [METHOD ...]
#        (methods: ddpg optuna random; default all, seed-major)
set -euo pipefail
cd "$(dirname "$0")/.."
PG=.venv/bin/prunegym
ROOT=${ROOT:-bench/results/resnet56/search}
EVALS=${EVALS:-200}
TABLE=${TABLE:-bench/results/latency/resnet56-depth-cpu-1t.json}
TARGET=${TARGET:-0.4}
SEEDS=${SEEDS:-0 1 2}
COMMON=(--model resnet56 --weights ../shared/data/pretrained/resnet56-4bfd9763.th
        --data cifar10:../shared/data/cifar-10-batches-py --val-size 1000 --bn-recalib-images 500
        --latency predicted --latency-table "$TABLE"
        --target latency --target-ratio "$TARGET" --max-ratio 0.8 --reward acc --torch-threads 1)
methods=("${@:-ddpg optuna random}")
mkdir -p "$ROOT" bench/logs
export OMP_NUM_THREADS=1
run() {  # method seed
  local m=$1 s=$2 out=$ROOT/$1-s$2
  if [ -f "$out/episodes.jsonl" ] && [ "$(wc -l < "$out/episodes.jsonl")" -ge "$EVALS" ]; then
    echo "$(date -u +%FT%TZ) finished already: $m seed $s" >&2; return 0
  fi
  local resume=(); [ -e "$out/config.yaml" ] && resume=(--resume)
  echo "$(date -u +%FT%TZ) start $m seed $s" >&2
  case $m in
    ddpg|random) $PG agent train "${COMMON[@]}" --agent "$m" --episodes "$EVALS" --warmup-episodes 50 \
                   --checkpoint-every 5 --seed "$s" --out "$out" "${resume[@]}" ;;
    optuna) $PG optuna run "${COMMON[@]}" --n-trials "$EVALS" --seed "$s" --out "$out" "${resume[@]}" ;;
  esac >> "bench/logs/$(basename "$ROOT")-$m-s$s.log" 2>&1
  echo "$(date -u +%FT%TZ) done $m seed $s" >&2
}
for s in $SEEDS; do for m in ${methods[*]}; do run "$m" "$s"; done; done
