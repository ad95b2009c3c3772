#!/usr/bin/env bash
# Issue 14's replay: the best re-scored ResNet-56 policy, finetuned with knowledge distillation from the unpruned
# model (30 epochs, cosine LR, channels-last, one thread by default), then transform → ONNX → INT8 → verify on all
# 10,000 test images with ONNX Runtime → interleaved batch-1 bench → bundle.
# The replay folder (checkpoints, ONNX of every step: tens of MB) lives under the git-ignored runs/ and resumes
# when this script is rerun with the same settings (a changed setting redoes the stale steps); when the replay
# has finished, the bundle and its reports are copied to PUBLISH (small files only: they are what is committed).
# Usage: POLICY=…/best_policy.yaml [OUT=runs/r56-replay-xeon] [PUBLISH=bench/results/resnet56/replay-xeon]
#        [EPOCHS=30] [LR=0.01] [THREADS=1] [DEVICE=auto] [STEP=all] [MAXSTEPS=N] [VAL_SIZE=N] [COMPILE=1]
#        [TEACHER_PRECISION=bf16]
#        bash bench/replay_resnet56.sh
# VAL_SIZE=0 finetunes on all 50,000 training images and ships the last epoch (the default carves 5,000 val images
# from them, which the pretrained teacher was trained on, so they hardly tell epochs apart). COMPILE=1 finetunes
# through torch.compile; TEACHER_PRECISION=bf16 runs the teacher under bfloat16 autocast (0.74x of the step on the
# AVX-512 BF16 EPYC, bench/results/resnet56/finetune-step-time-epyc-bf16.json).
# STEP=finetune stops after that step and publishes nothing (so does any STEP but all); MAXSTEPS caps every epoch
# (smoke runs); PG replaces .venv/bin/prunegym. bench/gpu_run.sh runs STEP=finetune on a lent GPU and then this
# script here: the step stamps leave out the device, so the replay resumes after the GPU's finetune.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${POLICY:?name the policy YAML to replay: POLICY=…/best_policy.yaml}"
OUT=${OUT:-runs/r56-replay-xeon}
PUBLISH=${PUBLISH:-bench/results/resnet56/replay-xeon}
EPOCHS=${EPOCHS:-30}
LR=${LR:-0.01}
THREADS=${THREADS:-1}
DEVICE=${DEVICE:-auto}
STEP=${STEP:-all}
COMPILE_FLAG=--no-compile
[ "${COMPILE:-0}" = 1 ] && COMPILE_FLAG=--compile
read -r -a PG <<< "${PG:-.venv/bin/prunegym}"
export OMP_NUM_THREADS=$THREADS
mkdir -p bench/logs
"${PG[@]}" replay "$STEP" --device "$DEVICE" --policy "$POLICY" --model resnet56 \
  --weights ../shared/data/pretrained/resnet56-4bfd9763.th --data cifar10:../shared/data/cifar-10-batches-py \
  --epochs "$EPOCHS" --lr "$LR" ${MAXSTEPS:+--max-steps-per-epoch "$MAXSTEPS"} ${VAL_SIZE:+--val-size "$VAL_SIZE"} \
  "$COMPILE_FLAG" --teacher-precision "${TEACHER_PRECISION:-fp32}" \
  --bench-threads 1 --bench-rounds 20 --bench-repeats 600 \
  --torch-threads "$THREADS" --out "$OUT" >> "bench/logs/$(basename "$OUT").log" 2>&1
[ "$STEP" = all ] || { echo "replay step $STEP done in $OUT"; exit 0; }
mkdir -p "$PUBLISH"
cp -r "$OUT/bundle" "$PUBLISH/"
cp "$POLICY" "$PUBLISH/policy.yaml"
cp "$OUT/finetune/metrics.jsonl" "$PUBLISH/finetune-metrics.jsonl"
echo "published $OUT/bundle to $PUBLISH"
