#!/usr/bin/env bash
# Issue 16: Deep Compression (Han et al. 2016) of the shared CIFAR-10 ResNets, resumable (rerun the same command).
#   prunegym compress: AGP fine-grained pruning to SPARSITY over STEPS steps, EPOCHS finetune epochs each (masks
#   kept), k-means weight sharing at BITS bits (linear init) + CENTROID centroid-finetune steps, the .dc file
#   (CSR/CSC relative indices + Huffman) written, read back bit-exactly and evaluated on the test split.
# Every step is stamped with its settings: a changed setting redoes the stale steps only. The run folder is named by
# its settings, runs/bench/dc-MODEL-sSPARSITY-bBITS[-kd][-TAG] (KD=1: each step's finetune distils from the dense
# model; TEACHER_PRECISION=bf16 runs that model in bfloat16); report.json/.md are copied to
# bench/results/deep-compression/ under the run folder's name when the run finishes (a run with other EPOCHS or
# STEPS needs its own TAG to keep an earlier report). FOLDER_ONLY=1 prints the run folder and stops. Smoke runs:
# MAXSTEPS=N caps every finetune epoch, LIMIT=N evaluates N test images, TAG=smoke.
#   MODEL=resnet20 bench/deep_compression.sh           # labels only, 2 epochs a step (EPOCHS=3 lost 2.97 points)
#   KD=1 EPOCHS=12 TEACHER_PRECISION=bf16 TAG=e12 MODEL=resnet20 bench/deep_compression.sh  # the acceptance run
#                                                      # (20.3x smaller, 0.85 point lost; ~79 min, one thread)
#   MODEL=resnet56 SPARSITY=0.85 bench/deep_compression.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
MODEL=${MODEL:-resnet20}
case "$MODEL" in
  resnet20) W=../shared/data/pretrained/resnet20-12fca82f.th ;;
  resnet56) W=../shared/data/pretrained/resnet56-4bfd9763.th ;;
  *) echo "error: MODEL must be resnet20 or resnet56, got $MODEL" >&2; exit 2 ;;
esac
SPARSITY=${SPARSITY:-0.85}
BITS=${BITS:-4}
case "${KD:-0}" in 0) KD= ;; *) KD=1 ;; esac  # KD=0 or unset: labels only
NAME=dc-$MODEL-s$SPARSITY-b$BITS${KD:+-kd}${TAG:+-$TAG}
RUN=runs/bench/$NAME
[ "${FOLDER_ONLY:-0}" = 1 ] && { echo "$RUN"; exit 0; }  # bench/gpu_run.sh asks where a run lives
resume() { [ -e "$1/config.yaml" ] && echo --resume || true; }
.venv/bin/prunegym compress --model "$MODEL" --weights "$W" --data cifar10:../shared/data/cifar-10-batches-py \
  --sparsity "$SPARSITY" --bits "$BITS" --prune-steps "${STEPS:-4}" --epochs-per-step "${EPOCHS:-2}" \
  --lr "${LR:-0.01}" --centroid-steps "${CENTROID:-300}" --init "${INIT:-linear}" --index-bits "${INDEX_BITS:-5}" \
  ${KD:+--distill --teacher-precision "${TEACHER_PRECISION:-fp32}"} ${MAXSTEPS:+--max-steps-per-epoch $MAXSTEPS} ${LIMIT:+--eval-limit $LIMIT} --out "$RUN" $(resume "$RUN")
OUT=${RESULTS:-bench/results/deep-compression}
mkdir -p "$OUT"
cp "$RUN/report.json" "$OUT/$NAME.json"
cp "$RUN/report.md" "$OUT/$NAME.md"
echo "→ $OUT/$NAME.json"
