"""Speed-ups measured on a quiet machine and twice on a loaded one (a busy process on every core) must agree.

    .venv/bin/python bench/loaded_machine.py --baseline runs/demo/replay/onnx/baseline.onnx \
        --model runs/demo/replay/bundle/model.onnx --model runs/demo/replay/bundle/model.int8.onnx

Each measurement is ``prunegym.deploy.benchmark.benchmark_models`` at one intra-op thread (the inference thread's
CPU time, rounds interleaved): the speed-up of every model over the baseline, quiet, then loaded twice. Prints a
Markdown table and exits 1 when a loaded speed-up is more than ``--tolerance`` off the quiet one. The busy
processes spin for at most ``--busy-seconds`` and are stopped as soon as the measurement ends.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

from prunegym.core.onnxrt import machine_description
from prunegym.deploy.benchmark import benchmark_models


def _spin(deadline: float) -> None:
    x = 0
    while time.time() < deadline:
        x = (x * 31 + 7) % 1_000_003


def _speedups(models: dict[str, Path], *, repeats: int, rounds: int) -> dict[str, float]:
    report = benchmark_models(models, threads=(1,), repeats=repeats, rounds=rounds, throughput_repeats=1)
    return {e.model: e.speedup for e in report.entries}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the unpruned model's ONNX file")
    parser.add_argument("--model", action="append", required=True, help="an ONNX file to compare (repeatable)")
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="busy processes while loaded")
    parser.add_argument("--busy-seconds", type=float, default=300.0, help="longest a busy process spins")
    parser.add_argument("--repeats", type=int, default=400, help="timed batch-1 runs per model")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--tolerance", type=float, default=0.10, help="largest relative disagreement")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    models = {"baseline": Path(args.baseline), **{Path(m).name: Path(m) for m in args.model}}
    quiet = _speedups(models, repeats=args.repeats, rounds=args.rounds)
    loaded = []
    for _ in range(2):
        deadline = time.time() + args.busy_seconds
        procs = [mp.Process(target=_spin, args=(deadline,), daemon=True) for _ in range(args.busy)]
        for p in procs:
            p.start()
        try:
            loaded.append(_speedups(models, repeats=args.repeats, rounds=args.rounds))
        finally:
            for p in procs:
                p.terminate()
                p.join()
    print(f"{machine_description()}; {args.busy} busy process(es) while loaded\n")
    print("| model | quiet | loaded 1 | loaded 2 | worst disagreement |")
    print("|---|---:|---:|---:|---:|")
    worst_all = 0.0
    for name in models:
        values = [quiet[name], loaded[0][name], loaded[1][name]]
        worst = max(abs(a - b) / min(a, b) for a in values for b in values)
        worst_all = max(worst_all, worst)
        print(f"| {name} | {values[0]:.3f}× | {values[1]:.3f}× | {values[2]:.3f}× | {100 * worst:.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_description(), "quiet": quiet, "loaded": loaded}))
    return 0 if worst_all <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
