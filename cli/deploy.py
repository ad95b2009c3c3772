"""``prunegym replay [STEP]``, ``prunegym deploy run BUNDLE IMAGES…`` and ``prunegym deploy bench BUNDLE``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from prunegym.cli.util import (
    add_command,
    add_config_flags,
    config_from_args,
    print_json,
    progress_bar,
    stdout,
)
from prunegym.deploy.replay_config import STEPS, ReplayConfig

log = logging.getLogger(__name__)

REPLAY_HELP = {
    "device": "where the finetune runs: auto (a CUDA GPU when there is one, else cpu), cpu, cuda, cuda:N",
    "out": "replay folder (default: RUN/replay)",
    "run": "search run folder (config.yaml + best_policy.yaml)",
    "policy": "policy YAML (instead of, or overriding, the run's best)",
    "epochs": "finetune epochs",
    "distill": "distill from the unpruned model while finetuning",
    "calib_images": "training images to calibrate INT8",
    "calib_method": "minmax, entropy, percentile",
    "reduce_range": "7-bit INT8 weights (default: on x86-64 CPUs without VNNI, where U8S8 kernels saturate)",
    "test_limit": "verify on only the first N test images",
    "bench_threads": "thread counts to benchmark",
    "bench_batch": "batch size of the throughput runs",
}


def cmd_replay(args: argparse.Namespace) -> int:
    from prunegym.deploy.replay import run_replay

    cfg = config_from_args(ReplayConfig, args)
    steps = STEPS if args.step == "all" else (args.step,)
    with progress_bar() as bar:
        task = bar.add_task("replay", total=None, info="")

        def on_step(phase: str, done: int, total: int, metrics: dict[str, float]) -> None:
            bar.update(task, description=f"finetune {phase}", completed=done, total=total,
                       info=f"loss {metrics['loss']:.3f}")  # fmt: skip

        _, results = run_replay(cfg, steps=steps, progress=on_step)
    if "bundle" in results:
        report = json.loads((results["bundle"] / "report.json").read_text())
        stdout.print((results["bundle"] / "report.md").read_text())
        stdout.print(f"bundle: {results['bundle']}  ({report['variants']['pruned']['speedup']:.2f}× FP32, "
                     f"{report['variants']['pruned+int8']['speedup']:.2f}× INT8 vs the unpruned model)")  # fmt: skip
    else:
        for step, res in results.items():
            stdout.print(f"{step}: {res}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from prunegym.deploy.runtime import Classifier

    clf = Classifier(args.bundle, threads=args.threads, precision="fp32" if args.fp32 else "int8")
    preds = clf.predict(args.images, top_k=args.top_k)
    if args.json:
        print_json([{"image": str(img), **p.to_dict()} for img, p in zip(args.images, preds, strict=True)])
    else:
        for img, p in zip(args.images, preds, strict=True):
            top = ", ".join(f"{lab} {pr:.3f}" for lab, pr in zip(p.labels, p.probabilities, strict=True))
            stdout.print(f"{img}: {p.label}  ({top})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from prunegym.deploy.benchmark import benchmark_models

    bundle = Path(args.bundle)
    models = {"fp32": bundle / "model.onnx", "int8": bundle / "model.int8.onnx"}
    report = benchmark_models(models, threads=tuple(int(t) for t in args.threads.split(",")),
                              batch_throughput=args.batch, repeats=args.repeats, rounds=args.rounds)  # fmt: skip
    if args.json:
        print_json(report.to_dict())
    else:
        stdout.print(report.to_markdown())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "replay", help="replay a policy: finetune, transform, ONNX, INT8, verify, benchmark, bundle",
                    example="prunegym replay --run runs/amc-r56 --epochs 30")  # fmt: skip
    p.add_argument("step", nargs="?", default="all", choices=("all", *STEPS), help="run one step (and what it needs)")
    add_config_flags(p, ReplayConfig, help=REPLAY_HELP)
    p.set_defaults(func=cmd_replay)

    d = add_command(sub, "deploy", help="use a bundle with ONNX Runtime alone: classify images, re-benchmark",
                    example="prunegym deploy run runs/x/replay/bundle cat.png")  # fmt: skip
    dsub = d.add_subparsers(dest="deploy_command", metavar="ACTION")
    r = add_command(dsub, "run", help="classify images with the bundle (ONNX Runtime only; torch not needed)",
                    example="prunegym deploy run BUNDLE img1.png img2.png --top-k 3")  # fmt: skip
    r.add_argument("bundle", help="bundle folder")
    r.add_argument("images", nargs="+", help="image files")
    r.add_argument("--top-k", type=int, default=3, help="classes to show")
    r.add_argument("--threads", type=int, default=1, help="intra-op threads")
    r.add_argument("--fp32", action="store_true", help="use model.onnx instead of model.int8.onnx")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=cmd_run)
    b = add_command(dsub, "bench", help="re-measure the bundle's models on this machine (interleaved)",
                    example="prunegym deploy bench BUNDLE --threads 1,2")  # fmt: skip
    b.add_argument("bundle", help="bundle folder")
    b.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    b.add_argument("--batch", type=int, default=64, help="throughput batch size")
    b.add_argument("--repeats", type=int, default=50, help="timed batch-1 runs per model and thread count")
    b.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(func=cmd_bench)
    d.set_defaults(func=lambda a: d.print_help() or 2)
