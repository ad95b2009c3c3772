"""Issue 14: what one finetune step of the replay costs on this CPU, each change measured in one interleaved run.

A step = forward + backward + SGD update of the student on one batch of CIFAR-10 training images, with the
unpruned model's forward for distillation where the row says so. Configurations are visited in an order rotated
every round and timed on the calling thread's CPU time (one PyTorch thread; immune to busy neighbours), so a
slow patch of the shared machine hits them all alike. The compiled variant's one-time compile is reported apart.
The bf16-teacher row (``--teacher-precision bf16``) comes with what it changes: the teacher's test top-1 and the
mean KL divergence between its FP32 and bf16 soft targets at T = 4 on ``--agreement-images`` test images.

    .venv/bin/python bench/finetune_step_time.py --policy bench/results/resnet56/search/optuna-s0/best_policy.yaml \\
        --out bench/results/resnet56/finetune-step-time.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prunegym.core.checkpoint import load_model
from prunegym.core.data import load_data, normalize
from prunegym.core.evaluate import input_norm
from prunegym.core.io import write_json
from prunegym.core.onnxrt.machine import machine_description
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy
from prunegym.core.train import distillation_loss, teacher_logits

W = "../shared/data/pretrained/resnet56-4bfd9763.th"
C10 = "cifar10:../shared/data/cifar-10-batches-py"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="the student's policy YAML")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per configuration and round")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile row")
    ap.add_argument("--agreement-images", type=int, default=10_000, help="test images for the bf16 teacher check")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_data(C10, val_size=0)
    teacher = load_model("resnet56", weights=W).eval()
    policy = Policy.load(args.policy)
    pruned = apply_policy(teacher, policy, input_shape=data.input_shape)
    mean, std = input_norm(teacher, mean=data.mean, std=data.std)
    idx = torch.randperm(len(data.train_y))[: args.batch_size]
    x01, y = data.train_x[idx].float() / 255.0, data.train_y[idx]

    def make(student: torch.nn.Module, *, channels_last: bool, kd: bool, compiled: bool, precision: str = "fp32"):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        net = copy.deepcopy(student).train().to(memory_format=fmt)
        tea = copy.deepcopy(teacher).eval().to(memory_format=fmt) if kd else None
        fwd = torch.compile(net) if compiled else net
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        xb = normalize(x01.contiguous(memory_format=fmt), mean=mean, std=std)

        def step() -> None:
            logits = fwd(xb)
            if tea is not None:
                t = teacher_logits(tea, xb, precision=precision)
                loss = distillation_loss(logits, t, y, alpha=0.9, temperature=4.0, label_smoothing=0.0)
            else:
                loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    configs = {
        "pruned, contiguous, no teacher": make(pruned, channels_last=False, kd=False, compiled=False),
        "pruned, contiguous, KD": make(pruned, channels_last=False, kd=True, compiled=False),
        "pruned, channels-last, KD": make(pruned, channels_last=True, kd=True, compiled=False),
        "pruned, channels-last, KD, teacher in bf16": make(
            pruned, channels_last=True, kd=True, compiled=False, precision="bf16"
        ),
        "unpruned student, channels-last, KD": make(teacher, channels_last=True, kd=True, compiled=False),
    }
    if not args.no_compile:
        configs["pruned, channels-last, KD, torch.compile"] = make(pruned, channels_last=True, kd=True, compiled=True)
    first: dict[str, float] = {}
    for name, step in configs.items():  # warm-up; the compile happens here
        t = time.thread_time()
        step()
        first[name] = time.thread_time() - t
    names = list(configs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for k in range(len(names)):
            name = names[(k + r) % len(names)]
            for _ in range(args.steps):
                t = time.thread_time()
                configs[name]()
                times[name].append(time.thread_time() - t)
        print(f"round {r + 1}/{args.rounds}", flush=True)
    ref = float(np.median(times[names[0]]))
    rows = [
        {
            "config": n,
            "step_s_median": round(float(np.median(times[n])), 4),
            "vs_first_row": round(float(np.median(times[n])) / ref, 3),
            "first_step_s": round(first[n], 2),
            "steps": len(times[n]),
        }
        for n in names
    ]
    result = {
        "machine": machine_description(),
        "bf16_teacher": bf16_teacher_check(teacher, data, mean=mean, std=std, images=args.agreement_images),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "policy": args.policy,
        "rounds": args.rounds,
        "rows": rows,
    }
    write_json(Path(args.out), result)
    print(json.dumps(result, indent=2))


def bf16_teacher_check(teacher: torch.nn.Module, data, *, mean, std, images: int) -> dict[str, float]:
    """The teacher's test top-1 in FP32 and under bf16 autocast, and the mean KL(fp32 ‖ bf16) of its soft targets
    at T = 4 (the distillation term's inputs), on the first ``images`` test images."""
    net = copy.deepcopy(teacher).eval().to(memory_format=torch.channels_last)
    hits = {"fp32": 0, "bf16": 0}
    kl_sum, n = 0.0, 0
    for i in range(0, min(images, len(data.test_y)), 500):
        x01 = data.test_x[i : i + 500].float() / 255.0
        y = data.test_y[i : i + 500]
        xb = normalize(x01.contiguous(memory_format=torch.channels_last), mean=mean, std=std)
        a, b = teacher_logits(net, xb), teacher_logits(net, xb, precision="bf16")
        hits["fp32"] += int((a.argmax(1) == y).sum())
        hits["bf16"] += int((b.argmax(1) == y).sum())
        kl = F.kl_div(F.log_softmax(b / 4, 1), F.log_softmax(a / 4, 1), reduction="sum", log_target=True)
        kl_sum += float(kl)
        n += len(y)
    return {
        "images": n,
        "top1_fp32": round(100 * hits["fp32"] / n, 2),
        "top1_bf16": round(100 * hits["bf16"] / n, 2),
        "mean_kl_fp32_to_bf16_T4": kl_sum / n,
    }


if __name__ == "__main__":
    main()
