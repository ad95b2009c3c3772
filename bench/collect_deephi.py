"""Issue 16: one summary of a finished ``bench/deephi_minivggnet.sh`` run, beside the tutorial's published figures.

Reads RUN/iterate/rounds.json (every round's compress and finetune summaries in DeePhi's convention), evaluates
the trained baseline on the test split, adds RUN/int8/int8.json, and writes OUT/summary.json and OUT/summary.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from prunegym.core.checkpoint import load_model
from prunegym.core.data import load_data
from prunegym.core.evaluate import evaluate, input_norm
from prunegym.core.io import atomic_write_text, write_json
from prunegym.core.onnxrt.machine import machine_description

# what the issue quotes from the tutorial (fractions; None: not quoted)
TUTORIAL = {
    "baseline_top1": 0.865,
    "round_1": {"ops_removed": 0.097, "weights_removed": 0.085},
    "round_7": {"ops_removed": 0.682, "weights_removed": 0.646, "top1_pruned": 0.528, "top1": 0.851, "top5": 0.992},
    "int8_top1": 0.857,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", required=True, help="the bench run folder")
    ap.add_argument("--out", required=True, help="results folder (small files only)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    rounds = json.loads((run / "iterate" / "rounds.json").read_text())["rounds"]
    int8 = json.loads((run / "int8" / "int8.json").read_text())
    cfg = (run / "iterate" / "config.yaml").read_text()
    data_spec = next(line.split(":", 1)[1].strip() for line in cfg.splitlines() if line.startswith("data:"))
    data = load_data(data_spec)
    base = load_model("minivggnet", weights=str(run / "train" / "best.pt")).eval()
    mean, std = input_norm(base, mean=data.mean, std=data.std)
    test = evaluate(base, data.test_x, data.test_y, mean=mean, std=std).to_dict()
    rows = []
    for r in rounds:
        c, f = r["compress_summary"], r["finetune_summary"]
        rows.append(
            {
                "round": r["round"],
                "rate": r["rate"],
                "weights": f["compressed_params"],
                "operations": f["compressed_ops"],
                "weights_removed": round(1 - f["compressed_params"] / f["baseline_params"], 4),
                "ops_removed": round(1 - f["compressed_ops"] / f["baseline_ops"], 4),
                "val_top1_pruned": c["compressed_accuracy"],
                "val_top1": f["compressed_accuracy"],
                "val_top5": f["compressed_top5"],
                "test_top1": r["test_accuracy"],
            }
        )
    summary = {
        "baseline": {"weights": rounds[0]["finetune_summary"]["baseline_params"], "test": test},
        "rounds": rows,
        "int8": {k: int8[k] for k in ("test_images", "pytorch", "onnxruntime_fp32", "onnxruntime_int8")},
        "tutorial": TUTORIAL,
        "machine": machine_description(),
    }
    out = Path(args.out)
    write_json(out / "summary.json", summary)
    lines = [
        "| round | rate | ops removed | weights removed | val top-1 pruned | val top-1 finetuned | top-5 | test top-1 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['rate']} | {r['ops_removed']:.3f} | {r['weights_removed']:.3f} | "
            f"{r['val_top1_pruned']:.2f}% | {r['val_top1']:.2f}% | {r['val_top5']:.2f}% | {r['test_top1']:.2f}% |"
        )
    i8 = summary["int8"]
    lines += [
        "",
        f"baseline test top-1 {test['top1']:.2f}%; final model on {i8['test_images']} test images: PyTorch "
        f"{i8['pytorch']['top1']:.2f}%, ONNX Runtime FP32 {i8['onnxruntime_fp32']['top1']:.2f}%, "
        f"INT8 {i8['onnxruntime_int8']['top1']:.2f}%",
    ]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
