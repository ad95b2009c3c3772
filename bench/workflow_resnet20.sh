#!/usr/bin/env bash
# Issue 3 benchmark: the Vitis-AI/DeePhi workflow on ResNet-20 / CIFAR-10.
# ana (9 groups x 9 ratios, BN re-calibrated val top-1 on 1,000 training-set images), then prune to -50% MACs
# from the analysis and uniformly, both scored the same way; then iterate (prune, finetune, next rate).
set -euo pipefail
cd "$(dirname "$0")/.."
P=.venv/bin/prunegym
M=(--model resnet20 --weights ../shared/data/pretrained/resnet20-12fca82f.th --data cifar10:../shared/data/cifar-10-batches-py)
resume() { [ -e "$1/config.yaml" ] && echo --resume || true; }
$P ana "${M[@]}" --val-size 1000 --bn-recalib-images 500 --out runs/r20-ana $(resume runs/r20-ana)
$P prune "${M[@]}" --val-size 1000 --bn-recalib-images 500 --ana runs/r20-ana --rate 0.5 --out runs/r20-prune-ana --overwrite
$P prune "${M[@]}" --val-size 1000 --bn-recalib-images 500 --uniform --rate 0.5 --out runs/r20-prune-uniform --overwrite
if [ "${ITERATE:-1}" = 1 ]; then
  # MAXSTEPS caps each round's finetune (a full CIFAR epoch is ~7 min on these 2 shared cores)
  $P iterate "${M[@]}" --ana runs/r20-ana --rates "${RATES:-0.2,0.35,0.5}" --epochs-per-round "${EPOCHS:-1}" \
     ${MAXSTEPS:+--max-steps-per-epoch $MAXSTEPS} --val-size 1000 --eval-test --out runs/r20-iterate \
     $(resume runs/r20-iterate)
fi
