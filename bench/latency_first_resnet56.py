"""Latency-first pruning on ResNet-56: which kind of pruning turns fewer MACs into speed (issue 12's table).

Four policy kinds at about 2.2× and 3× fewer MACs, each from the shared checkpoint without finetune:

- ``channel``: the 27 inner block groups at one uniform ratio (the old action space);
- ``stream+channel``: the same plus the three residual-stream groups (padded shortcuts rewritten exactly);
- ``depth``: whole residual blocks removed, evenly per stage (no channel pruned);
- ``depth+width``: half the blocks of the depth policy removed, the rest reached with a uniform ratio on all groups.

Every model is exported to FP32 ONNX and INT8 (QDQ U8S8, random calibration: timing only) and timed in one
interleaved run with ONNX Runtime, one thread: batch-1 latency on the inference thread's CPU time and batch-64
throughput, against the unpruned FP32 model. Val top-1 on 2,000 val images carved from the training set after BN
re-estimation on 1,000 augmented training images (no finetune).

    .venv/bin/python bench/latency_first_resnet56.py --out bench/results/resnet56/latency-first.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_floor_resnet56 import SHAPE, WEIGHTS, benchmark, val_accuracy

from prunegym.core.checkpoint import load_model
from prunegym.core.io import write_json
from prunegym.core.onnxrt import machine_description
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy, cost_table, removable_blocks
from prunegym.core.stats import model_stats


def _uniform_for(table, groups: list[str], removed: tuple[str, ...], fraction: float) -> float:
    """The smallest uniform ratio on ``groups`` (with ``removed`` blocks) reaching ``fraction`` of the MACs."""
    lo, hi = 0.0, 0.95
    for _ in range(40):
        mid = (lo + hi) / 2
        macs, _ = table.predict(dict.fromkeys(groups, mid), removed=removed)
        lo, hi = (lo, mid) if macs / table.macs <= fraction else (mid, hi)
    return hi


def _depth(base: torch.nn.Module, per_stage: int) -> tuple[str, ...]:
    """``per_stage`` removable blocks per stage, the last ones (the first of stages 2 and 3 cannot go)."""
    blocks = removable_blocks(base)
    return tuple(b for s in (1, 2, 3) for b in [b for b in blocks if b.startswith(f"layer{s}.")][-per_stage:])


def policies(base: torch.nn.Module) -> dict[str, Policy]:
    """The eight policies of the table."""
    stream = cost_table(base, input_shape=SHAPE)
    inner = cost_table(base, input_shape=SHAPE, residual_stream=False)
    out = {}
    for label, fraction, per_stage in (("2.2x", 1 / 2.2, 5), ("3x", 1 / 3.0, 6)):
        r = _uniform_for(inner, list(inner.channels), (), fraction)
        out[f"channel {label}"] = Policy(ratios=dict.fromkeys(inner.channels, r))
        r = _uniform_for(stream, list(stream.channels), (), fraction)
        out[f"stream+channel {label}"] = Policy(ratios=dict.fromkeys(stream.channels, r))
        out[f"depth {label}"] = Policy(ratios={}, removed=_depth(base, per_stage))
        half = _depth(base, per_stage // 2)
        r = _uniform_for(stream, list(stream.channels), half, fraction)
        out[f"depth+width {label}"] = Policy(ratios=dict.fromkeys(stream.channels, r), removed=half)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--val-images", type=int, default=2000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = load_model("resnet56", weights=WEIGHTS).eval()
    pols = policies(base)
    models = {"unpruned": base, **{k: apply_policy(base, p, input_shape=SHAPE).eval() for k, p in pols.items()}}
    base_macs = model_stats(base, input_shape=SHAPE).macs
    reduction = {k: base_macs / model_stats(m, input_shape=SHAPE).macs for k, m in models.items()}
    top1 = val_accuracy(base, models, images=args.val_images)
    bench = benchmark(models, repeats=args.repeats, rounds=args.rounds)
    rows = []
    print(f"\n{machine_description()}\n")
    print(
        "| policy | MAC reduction | val top-1 % | FP32 speed-up | INT8 speed-up | FP32 realization | INT8 realization |"
        " FP32 img/s (b64) × | INT8 img/s (b64) × |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in models:
        fp32, int8 = bench.get(name, 1), bench.get(f"{name}+int8", 1)
        row = {
            "policy": name,
            "removed": list(pols[name].removed) if name in pols else [],
            "mac_reduction": reduction[name],
            "val_top1": top1[name],
            "fp32_speedup": fp32.speedup,
            "int8_speedup": int8.speedup,
            "fp32_realization": fp32.speedup / reduction[name],
            "int8_realization": int8.speedup / reduction[name],
            "fp32_fps_ratio": fp32.fps_ratio,
            "int8_fps_ratio": int8.fps_ratio,
        }
        rows.append(row)
        print(
            f"| {name} | {row['mac_reduction']:.2f}× | {row['val_top1']:.2f} | {row['fp32_speedup']:.2f}× | "
            f"{row['int8_speedup']:.2f}× | {row['fp32_realization']:.2f} | {row['int8_realization']:.2f} | "
            f"{row['fp32_fps_ratio']:.2f}× | {row['int8_fps_ratio']:.2f}× |"
        )
    if args.out:
        write_json(Path(args.out), {"machine": machine_description(), "rows": rows, "benchmark": bench.to_dict()})


if __name__ == "__main__":
    main()
