"""How far channel pruning alone can speed ResNet-56 up at batch 1 on this CPU (issue 7's latency targets).

Prunes the 27 inner block channels stage-wise (keep K1-K2-K3 of 16-32-64, L1), exports FP32 ONNX and INT8
(QDQ, U8S8, per-channel; random calibration: timing only) and times everything with ONNX Runtime, one thread,
batch 1, interleaved rounds, against the unpruned FP32 model. ``1-1-1`` (one channel per block) is the floor:
what is left there is per-operator overhead and the full-width residual path, which channel pruning cannot
remove.

    .venv/bin/python bench/latency_floor_resnet56.py 8-8-40 8-16-24 8-16-32 1-1-1 \
        --out bench/results/resnet56/latency-floor.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from prunegym.core.checkpoint import load_model
from prunegym.core.io import write_json
from prunegym.core.onnx_export import export_onnx
from prunegym.core.pruning import apply_policy, prunable_groups
from prunegym.core.stats import model_stats
from prunegym.deploy.benchmark import benchmark_models
from prunegym.deploy.quantize import quantize_int8

WEIGHTS = "../shared/data/pretrained/resnet56-4bfd9763.th"
STAGE_WIDTH = {1: 16, 2: 32, 3: 64}
SHAPE = (3, 32, 32)


def stage_pruned(base: torch.nn.Module, spec: str) -> torch.nn.Module:
    """``base`` with each block's inner channels cut to ``K1-K2-K3`` per stage."""
    keep = dict(zip((1, 2, 3), (int(k) for k in spec.split("-")), strict=True))
    groups = prunable_groups(base, input_shape=SHAPE)
    stage = {g.name: int(g.name.removeprefix("layer")[0]) for g in groups}
    ratios = {name: 1 - keep[s] / STAGE_WIDTH[s] for name, s in stage.items()}
    return apply_policy(base, {"ratios": ratios}, input_shape=SHAPE).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+", help="kept channels per stage, e.g. 8-8-40")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = load_model("resnet56", weights=WEIGHTS).eval()
    models = {"unpruned": base, **{spec: stage_pruned(base, spec) for spec in args.specs}}
    base_macs = model_stats(base, input_shape=SHAPE).macs
    macs = {name: model_stats(m, input_shape=SHAPE).macs / base_macs for name, m in models.items()}
    calib = np.random.default_rng(0).standard_normal((64, *SHAPE)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        paths: dict[str, Path] = {}
        for name, model in models.items():
            fp32 = export_onnx(model, Path(tmp) / f"{name}.onnx", input_shape=SHAPE)
            int8 = Path(tmp) / f"{name}.int8.onnx"
            quantize_int8(fp32, int8, calibration=calib)
            paths[name], paths[f"{name}+int8"] = fp32, int8
        bench = benchmark_models(paths, input_shape=SHAPE, threads=(1,), repeats=args.repeats, rounds=args.rounds,
                                 throughput_repeats=2)  # fmt: skip
    print(bench.to_markdown())
    for name, ratio in macs.items():
        print(f"{name}: {ratio:.4f} of the MACs ({1 / ratio:.2f}× fewer)")
    if args.out:
        write_json(Path(args.out), {"macs_ratio": macs, "benchmark": bench.to_dict()})


if __name__ == "__main__":
    main()
