"""The markdown table of issue 14's searches, from what bench/resnet56_search_report.sh wrote under ROOT.

One row per run (method, seed): evaluations, best search val top-1, re-scored top-1 (5,000 other training
images), predicted latency ratio, MACs ratio, blocks removed, measured batch-1 FP32 and INT8 speed-ups over the
unpruned FP32 model (one interleaved run, one thread), wall time; then mean ± std per method.

    .venv/bin/python bench/resnet56_search_table.py bench/results/resnet56/search-xeon
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

from prunegym.core.io import read_jsonl


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "–"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    root = Path(ap.parse_args().root)
    rescored = {r["run"]: r for r in read_jsonl(root / "rescored.jsonl")}
    speed = json.loads((root / "speed.json").read_text())["benchmark"]["entries"]
    speedup = {e["model"]: e["speedup"] for e in speed if e["threads"] == 1}
    print(
        "| run | evaluations | best search val top-1 | re-scored top-1 | predicted latency ratio | MACs ratio |"
        " blocks removed | FP32 speed-up | INT8 speed-up | time |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    by_method: dict[str, dict[str, list[float]]] = {}
    for name, row in rescored.items():
        run = root / name
        episodes = read_jsonl(run / "episodes.jsonl")
        policy = yaml.safe_load((run / "best_policy.yaml").read_text())
        key = f"{run}/best_policy.yaml"
        fp32, int8 = speedup.get(key), speedup.get(f"{key}+int8")
        minutes = sum(e["seconds"]["total"] for e in episodes if e.get("seconds")) / 60
        method = row["method"]
        stats = by_method.setdefault(method, {"search": [], "rescored": [], "fp32": [], "int8": []})
        stats["search"].append(row["search_val_top1"])
        stats["rescored"].append(row["rescored_top1"])
        if fp32 is not None:
            stats["fp32"].append(fp32)
            stats["int8"].append(int8)
        lat = policy["metrics"].get("latency_ratio")
        print(
            f"| {name} | {len(episodes)} | {row['search_val_top1']:.2f}% | {row['rescored_top1']:.2f}% |"
            f" {lat:.3f} | {row['macs_ratio']:.3f} | {row['removed_blocks']} |"
            f" {'–' if fp32 is None else f'{fp32:.2f}×'} | {'–' if int8 is None else f'{int8:.2f}×'} |"
            f" {minutes:.0f} min |"
        )
    print()
    print("| method | runs | search val top-1 | re-scored top-1 | FP32 speed-up | INT8 speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for method, s in by_method.items():
        print(
            f"| {method} | {len(s['search'])} | {mean_std(s['search'])} | {mean_std(s['rescored'])} |"
            f" {mean_std(s['fp32'])} | {mean_std(s['int8'])} |"
        )


if __name__ == "__main__":
    main()
