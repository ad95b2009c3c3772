#!/usr/bin/env bash
# The long bench runs on a lent GPU machine (the device tool), finished here. A 30-epoch ResNet-56 finetune is
# ~89 min of one CPU core on the best machine this project has had (5.5 h on the AVX2 EPYC), DeePhi's miniVGGNet
# training 2.4 h; on an H100 they are minutes. The device tool sends the work tree (~16 MB) plus at most 64 MiB of
# carried files a call, and the GPU image has PyTorch, ONNX, ONNX Runtime, scikit-learn and TensorBoard but not
# gymnasium, SB3, Optuna or Torch-Pruning. So:
#
#   here:    bash bench/gpu_run.sh stage          # .gpu/ (git-ignored): wheels, prunegym's wheel, CIFAR-10 packed
#                                                 # by bench/gpu_data.py (lossless, SHA-256 checked), checkpoints
#   device:  run(command="bash bench/gpu_run.sh recv", carry=[".gpu/whl", ".gpu/part1"], timeout_s=120)
#            run(command="bash bench/gpu_run.sh recv", carry=[".gpu/part2"], timeout_s=120)
#            run(command="POLICY=… bash bench/gpu_run.sh job replay56", carry=[".gpu/part3"], timeout_s=600)
#            (call after call: a machine stays warm 30 s after a call and keeps what earlier calls left in .gpu/
#            and runs/; a job that needs longer than one call is continued by the same job call again)
#   here:    POLICY=… bash bench/gpu_run.sh fetch replay56 FILES_AT   # FILES_AT: where that call's files landed
#
# Jobs (each one of the resumable bench scripts, with the same variables as here):
#   replay56  bench/replay_resnet56.sh with STEP=finetune (POLICY, REPLAY=runs/r56-replay-gpu, EPOCHS, LR); fetch
#             then runs transform → ONNX → INT8 → verify → bench → bundle here, on the CPU the bundle is for
#   deephi    bench/deephi_minivggnet.sh (TRAIN_ITERS, ROUND_ITERS); fetch reruns it here (finished steps skip)
#   dc        bench/deep_compression.sh (MODEL, SPARSITY, BITS, KD, STEPS, EPOCHS, CENTROID, TAG); fetch likewise
# On the device the data path ../shared/data/… is rebuilt beside the tree and .venv/bin/{python,prunegym} point at
# its python3, so the scripts and their step stamps (which name the data path, not the device) are the same as
# here. Every job call runs under `timeout` (JOB_SECONDS, default 540) and always sends back its run folder (resume
# state included) as job.tgz.part-* pieces of at most 15 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-}  # on the GPU machine the device tool's $OUT: the folder whose files come back
SHARED=../shared/data
GPU=.gpu
PIECES=job.tgz.part-
REPLAY=${REPLAY:-runs/r56-replay-gpu}
# what the GPU image lacks, at the versions this project's .venv has
WHEELS=(torch-pruning==1.6.1 gymnasium==1.4.0 farama-notifications==0.0.6 stable-baselines3==2.9.2 optuna==5.1.0
        alembic==1.20.1 sqlalchemy==2.1.9 mako==1.4.3 colorlog==6.12.0 bitarray==3.12.3 greenlet)
PRETRAINED=(resnet20-12fca82f.th resnet56-4bfd9763.th)
CIFAR_FILES=(batches.meta data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch)

folder_of() {  # the run folder a job writes (what comes back)
  case "$1" in
    replay56) echo "$REPLAY" ;;
    deephi) echo "${RUN:-runs/bench/deephi-minivggnet}" ;;
    dc) FOLDER_ONLY=1 bash bench/deep_compression.sh ;;
    *) echo "error: unknown job '$1'; use replay56, deephi or dc" >&2; exit 2 ;;
  esac
}

run_job() {  # the bench script of a job, here or there
  case "$1" in
    replay56) OUT=$REPLAY STEP=${2:-all} bash bench/replay_resnet56.sh ;;
    deephi) bash bench/deephi_minivggnet.sh ;;
    dc) bash bench/deep_compression.sh ;;
  esac
}

case "${1:-}" in
stage)
  rm -rf "$GPU"
  mkdir -p "$GPU/whl"
  .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$GPU/whl" "${WHEELS[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
  .venv/bin/pip wheel -q --no-deps --no-build-isolation -w "$GPU/whl" .
  D=$SHARED/cifar-10-batches-py
  .venv/bin/python bench/gpu_data.py pack "$D" "$GPU/part1" batches.meta data_batch_1 data_batch_2
  .venv/bin/python bench/gpu_data.py pack "$D" "$GPU/part2" data_batch_3 data_batch_4
  .venv/bin/python bench/gpu_data.py pack "$D" "$GPU/part3" data_batch_5 test_batch
  .venv/bin/python bench/gpu_data.py pack "$SHARED/pretrained" "$GPU/part3" "${PRETRAINED[@]}"
  du -sh "$GPU"/* | sed 's/^/  /'
  echo "the tree travels with each part: $(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1) bytes"
  ;;
recv)
  python3 bench/gpu_data.py unpack "$GPU/files" "$GPU"/part*
  ;;
job)
  JOB=${2:?name the job: replay56, deephi or dc}
  FOLDER=$(folder_of "$JOB")
  python3 bench/gpu_data.py unpack "$GPU/files" "$GPU"/part*
  for f in "${CIFAR_FILES[@]}" "${PRETRAINED[@]}"; do
    [ -f "$GPU/files/$f" ] || { echo "error: $f has not arrived; make the recv calls first" >&2; exit 2; }
  done
  if ! python3 -c "import prunegym.cli.main, torch_pruning, gymnasium, stable_baselines3, optuna, bitarray" 2>/dev/null
  then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$GPU"/whl/*.whl
    export PYTHONPATH=/tmp/site
  fi
  if [ ! -x .venv/bin/prunegym ]; then  # the bench scripts call .venv/bin/…: point them at this python3
    mkdir -p .venv/bin
    ln -sf "$(command -v python3)" .venv/bin/python
    printf '#!/bin/sh\nexec python3 -m prunegym.cli.main "$@"\n' > .venv/bin/prunegym
    chmod +x .venv/bin/prunegym
  fi
  mkdir -p "$SHARED/cifar-10-batches-py" "$SHARED/pretrained"
  for f in "${CIFAR_FILES[@]}"; do ln -sf "$PWD/$GPU/files/$f" "$SHARED/cifar-10-batches-py/$f"; done
  for f in "${PRETRAINED[@]}"; do ln -sf "$PWD/$GPU/files/$f" "$SHARED/pretrained/$f"; done
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi: running on the CPU"
  start=$(date +%s)
  status=0
  export THREADS=${THREADS:-4} OMP_NUM_THREADS=${THREADS:-4}
  timeout "${JOB_SECONDS:-540}" bash bench/gpu_run.sh _run "$JOB" finetune || status=$?
  echo "job $JOB: $(( $(date +%s) - start )) s, exit $status"
  [ "$status" != 124 ] || echo "stopped after JOB_SECONDS: call the job again to continue it (its state is in $FOLDER)"
  [ "$JOB" != replay56 ] || tail -n 5 "bench/logs/$(basename "$REPLAY").log" || true
  [ -d "$FOLDER" ] || exit "$status"
  tar czf - --exclude tb "$FOLDER" | split -b 15M - "${RESULTS:?the device tool sets OUT}/$PIECES"
  ls -la "$RESULTS"
  exit "$status"
  ;;
_run)  # job STEP: the bench script itself, under the job call's timeout
  run_job "$2" "$3"
  ;;
fetch)
  JOB=${2:?name the job: replay56, deephi or dc}
  FILES_AT=${3:?name the folder the job call returned its files to}
  folder_of "$JOB" > /dev/null
  compgen -G "$FILES_AT/$PIECES*" > /dev/null || { echo "error: no $PIECES* in $FILES_AT; call the job again" >&2; exit 2; }
  cat "$FILES_AT/$PIECES"* | .venv/bin/python -c \
    'import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode="r|gz").extractall(".", filter="data")'
  run_job "$JOB" "${STEP:-all}"
  ;;
*)
  echo "usage: bash bench/gpu_run.sh stage | recv | job JOB | fetch JOB FILES_AT   (JOB: replay56, deephi, dc)" >&2
  exit 2
  ;;
esac
