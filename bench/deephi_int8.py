"""Issue 16: the final model of the DeePhi flow in INT8 through the deploy path, accuracy measured by ONNX Runtime.

Exports the model (``core/onnx_export.py``), quantizes it with static QDQ calibration on seeded training images
(``deploy/quantize.py``, the replay's quantize step) and evaluates FP32 and INT8 with ONNX Runtime
(``deploy/runtime.py``) on the test split; PyTorch's top-1 beside them. Writes one JSON file atomically.

    .venv/bin/python bench/deephi_int8.py --model runs/bench/deephi-minivggnet/iterate/model.pt \\
        --data cifar10:../shared/data/cifar-10-batches-py --out runs/bench/deephi-minivggnet/int8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from prunegym.core.checkpoint import load_model
from prunegym.core.data import load_data, normalize
from prunegym.core.evaluate import evaluate, input_norm
from prunegym.core.io import write_json
from prunegym.core.onnx_export import export_onnx
from prunegym.core.onnxrt.machine import machine_description
from prunegym.deploy.quantize import quantize_int8
from prunegym.deploy.runtime import evaluate_onnx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the saved prunegym model (iterate's model.pt)")
    ap.add_argument("--data", required=True, help="data spec")
    ap.add_argument("--out", required=True, help="folder for model.onnx, model.int8.onnx and int8.json")
    ap.add_argument("--calib-images", type=int, default=256, help="training images to calibrate on")
    ap.add_argument("--limit", type=int, default=None, help="evaluate the first N test images only (smoke runs)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    data = load_data(args.data)
    model = load_model(args.model, num_classes=data.num_classes, in_channels=data.in_channels).eval()
    mean, std = input_norm(model, mean=data.mean, std=data.std)
    fp32 = export_onnx(model, out / "model.onnx", input_shape=data.input_shape)
    idx = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(7))[: args.calib_images]
    calib = normalize(data.train_x[idx].float() / 255.0, mean=mean, std=std).numpy().astype(np.float32)
    q = quantize_int8(fp32, out / "model.int8.onnx", calibration=calib)
    n = len(data.test_x) if args.limit is None else min(args.limit, len(data.test_x))
    x, y = data.test_x[:n], data.test_y[:n]
    record = {
        "model": args.model,
        "test_images": n,
        "machine": machine_description(),
        "pytorch": evaluate(model, x, y, mean=mean, std=std).to_dict(),
        "onnxruntime_fp32": evaluate_onnx(fp32, x.numpy(), y.numpy(), mean=mean, std=std).to_dict(),
        "onnxruntime_int8": evaluate_onnx(q.int8_path, x.numpy(), y.numpy(), mean=mean, std=std).to_dict(),
        "quantize": q.to_dict(),
    }
    write_json(out / "int8.json", record)
    print(record)


if __name__ == "__main__":
    main()
