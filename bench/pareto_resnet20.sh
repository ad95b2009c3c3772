#!/usr/bin/env bash
# Issue 6: accuracy vs measured ONNX Runtime latency (1 thread, batch 1) on ResNet-20 / CIFAR-10, NSGA-II,
# no action wall (the full front), BN re-estimated with the training augmentation, 1,000 val images.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/pareto-r20
resume=(); [ -e "$out/config.yaml" ] && resume=(--resume)
.venv/bin/prunegym optuna run --model resnet20 --weights ../shared/data/pretrained/resnet20-12fca82f.th \
  --data cifar10:../shared/data/cifar-10-batches-py --val-size 1000 --bn-recalib-images 500 \
  --objectives accuracy,latency --sampler nsga2 --population-size 20 --no-action-wall --target-ratio 1.0 \
  --latency measured --latency-repeats 30 --n-trials "${TRIALS:-80}" --seed 0 --out "$out" "${resume[@]}"
