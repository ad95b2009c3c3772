"""How far channel pruning alone can speed ResNet-56 up at batch 1 on this CPU (issue 7's latency targets).

Prunes the 27 inner block channels stage-wise (keep K1-K2-K3 of 16-32-64, L1), exports FP32 ONNX and INT8
(QDQ, U8S8, per-channel; random calibration: timing only) and times everything with ONNX Runtime, one thread,
batch 1, interleaved rounds, against the unpruned FP32 model. ``1-1-1`` (one channel per block) is the floor:
what is left there is per-operator overhead and the full-width residual path, which channel pruning cannot
remove.

    .venv/bin/python bench/latency_floor_resnet56.py 8-8-40 8-16-24 8-16-32 1-1-1 \
        --out bench/results/resnet56/latency-floor.json

The same stage-wise candidates, without timing: ``--val-accuracy N`` prints each one's top-1 on N val images
(carved from the training set, seed 0) after BN re-estimation on 1,000 augmented training images, no finetune;
``--write-policy DIR`` saves each as ``DIR/policy-K1-K2-K3.yaml`` (round_to 8) for ``prunegym replay --policy``.

    .venv/bin/python bench/latency_floor_resnet56.py 8-8-40 4-16-40 8-16-24 8-16-32 8-8-48 --no-latency \
        --val-accuracy 2000
    .venv/bin/python bench/latency_floor_resnet56.py 8-8-40 --no-latency --write-policy bench/results/resnet56

A candidate may also be a policy YAML (a search's ``best_policy.yaml``: widths, residual stream, removed blocks),
applied as ``prunegym replay`` applies it (L1, the policy's round_to), to time searched policies the same way:

    .venv/bin/python bench/latency_floor_resnet56.py bench/results/resnet56/search-xeon/*-s*/best_policy.yaml \
        --rounds 20 --repeats 600 --out bench/results/resnet56/search-xeon/speed.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from prunegym.core.checkpoint import load_model
from prunegym.core.data import load_data
from prunegym.core.evaluate import evaluate, input_norm, recalibrate_bn
from prunegym.core.io import write_json
from prunegym.core.onnx_export import export_onnx
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy, prunable_groups
from prunegym.core.stats import model_stats
from prunegym.deploy.benchmark import BenchmarkReport, benchmark_models
from prunegym.deploy.quantize import quantize_int8

WEIGHTS = "../shared/data/pretrained/resnet56-4bfd9763.th"
DATA = "cifar10:../shared/data/cifar-10-batches-py"
STAGE_WIDTH = {1: 16, 2: 32, 3: 64}
SHAPE = (3, 32, 32)


def stage_pruned(base: torch.nn.Module, spec: str, *, round_to: int = 1) -> torch.nn.Module:
    """``base`` with each block's inner channels cut to ``K1-K2-K3`` per stage."""
    keep = dict(zip((1, 2, 3), (int(k) for k in spec.split("-")), strict=True))
    groups = prunable_groups(base, input_shape=SHAPE, residual_stream=False)  # the 27 inner block groups
    stage = {g.name: int(g.name.removeprefix("layer")[0]) for g in groups}
    ratios = {name: 1 - keep[s] / STAGE_WIDTH[s] for name, s in stage.items()}
    return apply_policy(base, {"ratios": ratios, "round_to": round_to}, input_shape=SHAPE).eval()


def candidate(base: torch.nn.Module, spec: str) -> torch.nn.Module:
    """A stage-wise ``K1-K2-K3`` candidate, or the policy YAML file ``spec`` applied to ``base``."""
    if spec.endswith((".yaml", ".yml")):
        return apply_policy(base, Policy.load(Path(spec)), input_shape=SHAPE).eval()
    return stage_pruned(base, spec)


def val_accuracy(base: torch.nn.Module, models: dict[str, torch.nn.Module], *, images: int) -> dict[str, float]:
    """Top-1 on ``images`` val images after BN re-estimation (1,000 augmented training images), no finetune."""
    data = load_data(DATA, seed=0)
    mean, std = input_norm(base, mean=data.mean, std=data.std)
    top1 = {}
    for name, model in models.items():
        if model is not base:
            recalibrate_bn(model, data.train_x, mean=mean, std=std, num_images=1000, augment=data.augment)
        top1[name] = evaluate(model, data.val_x, data.val_y, mean=mean, std=std, limit=images).top1
        print(f"{name}: val top-1 {top1[name]:.2f}% ({images} images, BN re-estimated, no finetune)", flush=True)
    return top1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+", help="kept channels per stage, e.g. 8-8-40, or a policy YAML")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--no-latency", action="store_true", help="skip the ONNX export and timing")
    ap.add_argument("--val-accuracy", type=int, default=0, metavar="N", help="top-1 on N val images (0: skip)")
    ap.add_argument("--write-policy", default=None, metavar="DIR", help="save each candidate's policy YAML")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = load_model("resnet56", weights=WEIGHTS).eval()
    models = {"unpruned": base, **{spec: candidate(base, spec) for spec in args.specs}}
    base_stats = model_stats(base, input_shape=SHAPE)
    stats = {name: model_stats(m, input_shape=SHAPE) for name, m in models.items()}
    macs = {name: st.macs / base_stats.macs for name, st in stats.items()}
    for name, ratio in macs.items():
        print(f"{name}: {ratio:.4f} of the MACs ({1 / ratio:.2f}× fewer)")
    if args.write_policy:
        for spec in args.specs:
            policy = Policy.from_dict(stage_pruned(base, spec, round_to=8).prunegym_policy).with_metrics(
                macs_ratio=macs[spec], params_ratio=stats[spec].params / base_stats.params
            )
            print("wrote", policy.save(Path(args.write_policy) / f"policy-{spec}.yaml"))
    result: dict = {"macs_ratio": macs}
    if args.val_accuracy:
        result["val_top1"] = val_accuracy(base, models, images=args.val_accuracy)
    if not args.no_latency:
        result["benchmark"] = benchmark(models, repeats=args.repeats, rounds=args.rounds).to_dict()
    if args.out:
        write_json(Path(args.out), result)


def benchmark(models: dict[str, torch.nn.Module], *, repeats: int, rounds: int) -> BenchmarkReport:
    """FP32 and INT8 ONNX of every model, timed interleaved at batch 1 on one thread."""
    calib = np.random.default_rng(0).standard_normal((64, *SHAPE)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        paths: dict[str, Path] = {}
        for name, model in models.items():
            fp32 = export_onnx(model, Path(tmp) / f"{name}.onnx", input_shape=SHAPE)
            int8 = Path(tmp) / f"{name}.int8.onnx"
            quantize_int8(fp32, int8, calibration=calib)
            paths[name], paths[f"{name}+int8"] = fp32, int8
        bench = benchmark_models(
            paths, input_shape=SHAPE, threads=(1,), repeats=repeats, rounds=rounds, throughput_repeats=2
        )
    print(bench.to_markdown())
    return bench


if __name__ == "__main__":
    main()
