"""ResNet-56, unpruned and depth+width pruned, FP32 and QDQ INT8: ONNX Runtime vs OpenVINO in one interleaved run.

Latency at batch 1 (the inference thread's CPU time, 1 thread), throughput at batch 64 (wall clock), and top-1 on
the 10,000 CIFAR-10 test images on each runtime. The pruned model is the Optuna search's best policy
(bench/results/resnet56/search/optuna-s0/best_policy.yaml) applied with BatchNorm re-estimation and no finetune,
so its accuracy is low: it is here for its shapes (blocks removed, channels cut), not its accuracy.

.venv/bin/python bench/runtimes_resnet56.py --out bench/results/runtimes-resnet56.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from prunegym.core.checkpoint import load_model
from prunegym.core.data import load_data, normalize
from prunegym.core.evaluate import input_norm, recalibrate_bn
from prunegym.core.io import write_json
from prunegym.core.onnx_export import export_onnx
from prunegym.core.onnxrt import machine_description, runtime_version
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy
from prunegym.deploy.benchmark import benchmark_models
from prunegym.deploy.quantize import quantize_int8
from prunegym.deploy.runtime import evaluate_onnx

SHARED = Path("../shared/data")
POLICY = Path("bench/results/resnet56/search/optuna-s0/best_policy.yaml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=str(POLICY))
    ap.add_argument("--test-images", type=int, default=10000)
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=300, help="timed batch-1 runs per model and runtime")
    ap.add_argument("--throughput-repeats", type=int, default=10, help="timed batch-64 runs per model and runtime")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data(f"cifar10:{SHARED / 'cifar-10-batches-py'}")
    base = load_model("resnet56", weights=str(SHARED / "pretrained" / "resnet56-4bfd9763.th")).eval()
    mean, std = input_norm(base, mean=data.mean, std=data.std)
    policy = Policy.load(args.policy)
    pruned = apply_policy(
        base, policy, input_shape=data.input_shape, criterion=policy.criterion, round_to=policy.round_to
    )
    recalibrate_bn(pruned, data.train_x, mean=mean, std=std, num_images=500, augment="crop+flip")
    pruned.eval()
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data.train_x), generator=g)[: args.calib_images]
    calib = normalize(data.train_x[idx].float() / 255.0, mean=mean, std=std).numpy().astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, Path] = {}
        for name, net in (("resnet56", base), ("pruned", pruned)):
            fp32 = export_onnx(net, Path(tmp) / f"{name}.onnx", input_shape=data.input_shape)
            int8 = Path(tmp) / f"{name}.int8.onnx"
            quantize_int8(fp32, int8, calibration=calib)
            files[f"{name} fp32"], files[f"{name} int8"] = fp32, int8
        models = {f"{k} @{rt}": p for k, p in files.items() for rt in ("ort", "openvino")}
        runtimes = {k: k.rsplit("@", 1)[1] for k in models}
        start = time.perf_counter()
        report = benchmark_models(
            models,
            input_shape=data.input_shape,
            threads=(1,),
            batch_throughput=64,
            repeats=args.repeats,
            throughput_repeats=args.throughput_repeats,
            rounds=args.rounds,
            runtimes=runtimes,
        )
        bench_s = time.perf_counter() - start
        n = args.test_images
        xs, ys = data.test_x[:n].numpy(), data.test_y[:n].numpy()
        start = time.perf_counter()
        top1 = {
            k: evaluate_onnx(p, xs, ys, mean=mean, std=std, runtime=runtimes[k], threads=1).top1
            for k, p in models.items()
        }
        eval_s = time.perf_counter() - start
        sizes = {k: round(p.stat().st_size / 1e6, 3) for k, p in files.items()}
    print(report.to_markdown())
    print("\ntop-1 on", n, "test images:", {k: round(v, 2) for k, v in top1.items()})
    result = {
        "machine": machine_description(),
        "runtimes": {rt: runtime_version(rt) for rt in ("ort", "openvino")},
        "policy": args.policy,
        "policy_removed_blocks": len(policy.removed),
        "policy_macs_ratio": policy.metrics.get("macs_ratio"),
        "test_images": n,
        "top1": top1,
        "size_mb": sizes,
        "benchmark": report.to_dict(),
        "seconds": {"benchmark": round(bench_s, 1), "top1": round(eval_s, 1)},
    }
    if args.out:
        write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
