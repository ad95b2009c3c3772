#!/usr/bin/env bash
# Issue 14's search report, from the finished run folders of bench/search_resnet56.sh under ROOT:
#  1. the uniform policy at the same latency budget (bench/uniform_policy.py, the evaluator of the searches);
#  2. each run's best policy re-scored on 5,000 other training-set images (seed 1's carve; the searches used
#     seed 0's 1,000): ROOT/rescored.jsonl, and per method mean ± std over seeds: ROOT/rescored-summary.json;
#  3. `prunegym compare` over all runs: ROOT/compare.json and ROOT/compare.png;
#  4. the winner (highest re-scored top-1) copied to ROOT/winner.yaml, its per-layer chart (`agent show`);
#  5. every best policy timed interleaved against the unpruned model (FP32 and INT8 ONNX, batch 1, one
#     thread): ROOT/speed.json.
# Usage: [ROOT=bench/results/resnet56/search-xeon] bash bench/resnet56_search_report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-bench/results/resnet56/search-xeon}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
runs=()
for d in "$ROOT"/{ddpg,optuna,random}-s*; do [ -f "$d/best_policy.yaml" ] && runs+=("$d"); done
[ ${#runs[@]} -gt 0 ] || { echo "no finished runs under $ROOT" >&2; exit 2; }
[ -f "$ROOT/uniform/best_policy.yaml" ] || $PY bench/uniform_policy.py --like "${runs[0]}" --out "$ROOT/uniform"
$PY bench/rescore_best.py "${runs[@]}" "$ROOT/uniform" > "$ROOT/rescored.jsonl.tmp"
mv "$ROOT/rescored.jsonl.tmp" "$ROOT/rescored.jsonl"
.venv/bin/prunegym compare "${runs[@]}" "$ROOT/uniform" --plot "$ROOT/compare.png" --json > "$ROOT/compare.json"
winner=$($PY - "$ROOT" <<'PYEOF'
import json, statistics, sys
from pathlib import Path
root = Path(sys.argv[1])
rows = [json.loads(line) for line in (root / "rescored.jsonl").read_text().splitlines() if line.strip()]
summary = {}
for method in sorted({r["method"] for r in rows}):
    mine = [r for r in rows if r["method"] == method]
    summary[method] = {
        key: {"mean": round(statistics.fmean(v), 2), "std": round(statistics.stdev(v), 2) if len(v) > 1 else 0.0,
              "values": v}
        for key in ("search_val_top1", "rescored_top1")
        for v in [[r[key] for r in mine]]
    } | {"runs": [r["run"] for r in mine]}
(root / "rescored-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
searched = [r for r in rows if r["run"] != "uniform"]
print(max(searched, key=lambda r: r["rescored_top1"])["run"])
PYEOF
)
cp "$ROOT/$winner/best_policy.yaml" "$ROOT/winner.yaml"
echo "winner: $winner" >&2
.venv/bin/prunegym agent show "$ROOT/$winner" > "$ROOT/winner-show.txt"
policies=(); for d in "${runs[@]}"; do policies+=("$d/best_policy.yaml"); done
$PY bench/latency_floor_resnet56.py "${policies[@]}" --rounds 20 --repeats 600 --out "$ROOT/speed.json" \
  > "$ROOT/speed.md"
