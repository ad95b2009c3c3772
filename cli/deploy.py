"""``prunegym deploy run BUNDLE IMAGES…`` and ``prunegym deploy bench BUNDLE``: ONNX Runtime only, no torch."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from prunegym.cli.util import add_command, positive_int, positive_int_list, print_json, stdout

log = logging.getLogger(__name__)


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
    if args.baseline:
        models = {"baseline": Path(args.baseline), **models}  # the reference of every ratio
    report = benchmark_models(
        models,
        threads=args.threads,
        batch_throughput=args.batch,
        repeats=args.repeats,
        rounds=args.rounds,
        clock=args.clock,
    )
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.to_markdown())  # a Markdown table: never wrapped
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = add_command(
        sub,
        "deploy",
        example="prunegym deploy run runs/x/replay/bundle cat.png",
    )
    dsub = d.add_subparsers(dest="deploy_command", metavar="ACTION")
    r = add_command(
        dsub,
        "run",
        help="classify images with the bundle (ONNX Runtime only; torch not needed)",
        example="prunegym deploy run BUNDLE img1.png img2.png --top-k 3",
    )
    r.add_argument("bundle", help="bundle folder")
    r.add_argument("images", nargs="+", help="image files")
    r.add_argument("--top-k", type=positive_int, default=3, help="classes to show")
    r.add_argument("--threads", type=positive_int, default=1, help="intra-op threads")
    r.add_argument("--fp32", action="store_true", help="use model.onnx instead of model.int8.onnx")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=cmd_run)
    b = add_command(
        dsub,
        "bench",
        help="re-measure the bundle's models on this machine (interleaved)",
        example="prunegym deploy bench BUNDLE --threads 1,2",
    )
    b.add_argument("bundle", help="bundle folder")
    b.add_argument("--threads", type=positive_int_list, default=(1, 2), help="comma-separated thread counts")
    b.add_argument("--batch", type=positive_int, default=64, help="throughput batch size")
    b.add_argument("--repeats", type=positive_int, default=50, help="timed batch-1 runs per model and thread count")
    b.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds")
    b.add_argument(
        "--baseline",
        metavar="ONNX",
        help="the unpruned model's ONNX file (e.g. RUN/replay/onnx/baseline.onnx): timed first, the speed-up reference",
    )
    b.add_argument(
        "--clock",
        choices=("auto", "cpu", "wall"),
        default="auto",
        help="latency clock: auto = the inference thread's CPU time at 1 thread (immune to busy neighbours), else wall",
    )
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(func=cmd_bench)
    d.set_defaults(func=lambda a: d.print_help() or 2)
