"""Unpruned ResNet-56: FP32 vs INT8 with ONNX Runtime (batch 1, 1 thread, interleaved), and top-1 of both.

.venv/bin/python bench/onnx_resnet56.py --out bench/results/onnx-resnet56.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from prunegym.core.checkpoint import load_model
from prunegym.core.data import load_data, normalize
from prunegym.core.evaluate import input_norm
from prunegym.core.io import write_json
from prunegym.core.onnx_export import export_onnx
from prunegym.deploy.benchmark import benchmark_models
from prunegym.deploy.quantize import quantize_int8
from prunegym.deploy.runtime import evaluate_onnx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument(
        "--reduce-range",
        choices=("auto", "on", "off"),
        default="auto",
        help="7-bit INT8 weights (auto: on x86-64 CPUs without VNNI)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    data = load_data("cifar10:../shared/data/cifar-10-batches-py")
    model = load_model("resnet56", weights="../shared/data/pretrained/resnet56-4bfd9763.th").eval()
    mean, std = input_norm(model, mean=data.mean, std=data.std)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "r56.onnx", input_shape=data.input_shape)
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(data.train_x), generator=g)[: args.calib_images]
        calib = normalize(data.train_x[idx].float() / 255.0, mean=mean, std=std).numpy()
        int8 = Path(tmp) / "r56.int8.onnx"
        reduce_range = {"auto": None, "on": True, "off": False}[args.reduce_range]
        quant = quantize_int8(fp32, int8, calibration=calib.astype(np.float32), reduce_range=reduce_range)
        bench = benchmark_models({"fp32": fp32, "int8": int8}, input_shape=data.input_shape, threads=(1,))
        n = args.test_images
        xs, ys = data.test_x[:n].numpy(), data.test_y[:n].numpy()
        acc = {k: evaluate_onnx(p, xs, ys, mean=mean, std=std).to_dict() for k, p in (("fp32", fp32), ("int8", int8))}
        sizes = {k: round(p.stat().st_size / 1e6, 3) for k, p in (("fp32", fp32), ("int8", int8))}
    result = {"benchmark": bench.to_dict(), "top1": acc, "size_mb": sizes, "quantization": quant.to_dict()}
    print(bench.to_markdown())
    print({k: v["top1"] for k, v in acc.items()}, sizes)
    if args.out:
        write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
