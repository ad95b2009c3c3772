#!/usr/bin/env bash
# Issue 5/6 benchmark: ResNet-20 / CIFAR-10, keep 50% of the MACs, the same evaluator for every method
# (BN re-calibration on 500 training images, val top-1 on 1,000 images carved from the training set),
# 300 evaluations per run, seeds 0 1 2. Runs two searches at a time (one PyTorch thread each).
# BN re-calibration on clean images (--bn-recalib-augment none) is what these runs measured; the default now
# re-estimates with the training augmentation, which matches the published statistics (see BENCHMARKS.md).
# Usage: bash bench/search_resnet20.sh [METHOD ...]   (methods: ddpg random optuna; default all)
set -euo pipefail
cd "$(dirname "$0")/.."
PG=.venv/bin/prunegym
COMMON=(--model resnet20 --weights ../shared/data/pretrained/resnet20-12fca82f.th
        --data cifar10:../shared/data/cifar-10-batches-py --val-size 1000 --bn-recalib-images 500
        --target macs --target-ratio 0.5 --max-ratio 0.8 --reward acc --bn-recalib-augment none)
methods=("${@:-ddpg random optuna}")
mkdir -p bench/logs
run() {  # method seed
  local m=$1 s=$2 out=runs/bench-r20-$1-s$2
  local resume=(); [ -e "$out/config.yaml" ] && resume=(--resume)
  case $m in
    ddpg|random) $PG agent train "${COMMON[@]}" --agent "$m" --episodes 300 --warmup-episodes 100 --seed "$s" --out "$out" "${resume[@]}" ;;
    optuna) $PG optuna run "${COMMON[@]}" --n-trials 300 --seed "$s" --out "$out" "${resume[@]}" ;;
  esac > "bench/logs/r20-$m-s$s.log" 2>&1
}
jobs_list=()
for m in ${methods[*]}; do for s in 0 1 2; do jobs_list+=("$m $s"); done; done
for ((i = 0; i < ${#jobs_list[@]}; i += 2)); do
  run ${jobs_list[i]} &
  if ((i + 1 < ${#jobs_list[@]})); then run ${jobs_list[i+1]} & fi
  wait
done
