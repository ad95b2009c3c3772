#!/usr/bin/env bash
# Issue 16: the DeePhi/Vitis-AI CIFAR-10 tutorial's flow on miniVGGNet, resumable (rerun the same command).
#   train  the tutorial's solver: SGD momentum 0.9 (no Nesterov), weight decay 5e-4, base lr 0.01, poly policy
#          (power 1), batch 128, TRAIN_ITERS iterations (tutorial: 40,000)
#   ana    per-group sensitivities, then 7 iterate rounds at rates 0.1 ... 0.7, each finetuned ROUND_ITERS
#          iterations with the same solver (tutorial: 20,000; default here 5,000 = 1/4, see BENCHMARKS.md: one
#          CPU thread does 0.375 s a step, so 7 x 20,000 would be 14.6 h), compress + finetune summaries in
#          DeePhi's counting convention every round
#   int8   the final model through ONNX export + static INT8 (deploy/quantize.py), top-1 by ONNX Runtime
# Iterations become epochs of 351 steps (45,000 training images after the 5,000-image val split, batch 128).
# Smoke runs: MAXSTEPS=N caps every epoch at N steps (iterations then count N-step epochs), LIMIT=N evaluates INT8
# on N test images, RUN=folder. The summary is copied to bench/results/deephi-minivggnet/ when everything is done.
set -euo pipefail
cd "$(dirname "$0")/.."
P=.venv/bin/prunegym
PY=.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RUN=${RUN:-runs/bench/deephi-minivggnet}
DATA=${DATA:-cifar10:../shared/data/cifar-10-batches-py}
TRAIN_ITERS=${TRAIN_ITERS:-40000}
ROUND_ITERS=${ROUND_ITERS:-5000}
PER_EPOCH=${MAXSTEPS:-351}
epochs() { $PY -c "print(max(1, round($1 / $PER_EPOCH)))"; }
resume() { [ -e "$1/config.yaml" ] && echo --resume || true; }
CAP=(${MAXSTEPS:+--max-steps-per-epoch $MAXSTEPS})
SOLVER=(--lr 0.01 --lr-schedule poly --lr-power 1 --weight-decay 5e-4 --batch-size 128 --no-nesterov)
echo "train: $(epochs "$TRAIN_ITERS") epochs of $PER_EPOCH steps; rounds: $(epochs "$ROUND_ITERS") epochs each"

$P train --model minivggnet --data "$DATA" --epochs "$(epochs "$TRAIN_ITERS")" "${SOLVER[@]}" --momentum 0.9 \
   --warmup-epochs 0 "${CAP[@]}" --out "$RUN/train" $(resume "$RUN/train")
W=(--model minivggnet --weights "$RUN/train/best.pt" --data "$DATA")
$P ana "${W[@]}" --val-size 1000 --out "$RUN/ana" $(resume "$RUN/ana")
$P iterate "${W[@]}" --ana "$RUN/ana" --rates 0.1,0.2,0.3,0.4,0.5,0.6,0.7 --epochs-per-round "$(epochs "$ROUND_ITERS")" \
   "${SOLVER[@]}" "${CAP[@]}" --convention deephi --eval-test --out "$RUN/iterate" $(resume "$RUN/iterate")
$PY bench/deephi_int8.py --model "$RUN/iterate/model.pt" --data "$DATA" --out "$RUN/int8" ${LIMIT:+--limit $LIMIT}
$PY bench/collect_deephi.py --run "$RUN" --out "${RESULTS:-bench/results/deephi-minivggnet}"
