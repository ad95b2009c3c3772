"""``prunegym deploy run BUNDLE IMAGES…`` and ``prunegym deploy bench BUNDLE``: ONNX Runtime only, no torch."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from prunegym.cli.device import device_name, redis_url
from prunegym.cli.util import add_command, positive_float, positive_int, positive_int_list, print_json, stdout

RUNTIME_CHOICES = ("ort", "openvino")

log = logging.getLogger(__name__)


def cmd_run(args: argparse.Namespace) -> int:
    from prunegym.deploy.runtime import Classifier

    clf = Classifier(args.bundle, threads=args.threads, precision="fp32" if args.fp32 else "int8", runtime=args.runtime)
    preds = clf.predict(args.images, top_k=args.top_k)
    if args.json:
        print_json([{"image": str(img), **p.to_dict()} for img, p in zip(args.images, preds, strict=True)])
    else:
        for img, p in zip(args.images, preds, strict=True):
            top = ", ".join(f"{lab} {pr:.3f}" for lab, pr in zip(p.labels, p.probabilities, strict=True))
            stdout.print(f"{img}: {p.label}  ({top})")
    return 0


def _remote_bench(args: argparse.Namespace, models: dict[str, Path]) -> int:
    """Benchmark the bundle's models on a remote device (one interleaved latency + throughput job)."""
    from prunegym.core.onnxrt import model_bytes
    from prunegym.core.remote import JobSpec, RemoteDevice

    dev = RemoteDevice(redis=args.redis, device=args.device, timeout=args.remote_timeout)
    blobs = [model_bytes(p) for p in models.values()]
    spec = JobSpec(repeats=args.repeats, rounds=args.rounds, clock=args.clock, throughput_batch=args.batch)
    res = dev.run(blobs, spec=spec)
    out = res["result"]
    rows = []
    for i, name in enumerate(models):
        rows.append(
            {
                "model": name,
                "precision": out["runtime"]["precision"][i],
                "latency_median_ms": round(out["median_ms"][out["clock"]][i], 4),
                "latency_p90_ms": round(out["p90_ms"][i], 4),
                "speedup": round(1.0 / out["ratio_to_first"][i][0], 4),
                "speedup_cv": round(out["ratio_to_first"][i][1], 4),
                "throughput_fps": round(out["throughput_fps"][i], 1),
            }
        )
    rec = res["host"]
    summary = {
        "device": args.device,
        "machine": f"{rec['cpu']} ({', '.join(rec['cpu_flags'])}), {rec['cpus']} CPUs, {rec['arch']}",
        "runtime": f"{rec['runtime']} {rec['runtime_version']}",
        "threads": res["threads"],
        "clock": out["clock"],
        "rounds": args.rounds,
        "batch_throughput": args.batch,
        "entries": rows,
    }
    if args.json:
        print_json(summary)
        return 0
    print(
        f"device {args.device}: {summary['machine']}; {summary['runtime']}, {res['threads']} thread(s), {args.rounds} rounds"
    )
    print()
    print("| model | precision | latency median (ms) | p90 (ms) | speedup (± CV) | throughput (img/s) |")
    print("|---|---|---:|---:|---:|---:|")
    for e in rows:
        print(
            f"| {e['model']} | {e['precision']} | {e['latency_median_ms']:.3f} | {e['latency_p90_ms']:.3f} | "
            f"{e['speedup']:.2f}× (± {100 * e['speedup_cv']:.0f}%) | {e['throughput_fps']:.0f} |"
        )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from prunegym.core.errors import UserError
    from prunegym.deploy.benchmark import benchmark_models

    bundle = Path(args.bundle)
    models = {"fp32": bundle / "model.onnx", "int8": bundle / "model.int8.onnx"}
    if args.baseline:
        models = {"baseline": Path(args.baseline), **models}  # the reference of every ratio
    if args.latency == "remote":
        if not (args.device and args.redis):
            raise UserError("--latency remote needs --device NAME and --redis URL (see prunegym device list)")
        return _remote_bench(args, models)
    report = benchmark_models(
        models,
        threads=args.threads,
        batch_throughput=args.batch,
        repeats=args.repeats,
        rounds=args.rounds,
        clock=args.clock,
        runtime=args.runtime,
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
    r.add_argument("--runtime", choices=RUNTIME_CHOICES, default="ort", help="ort (ONNX Runtime) or openvino")
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
    b.add_argument("--runtime", choices=RUNTIME_CHOICES, default="ort", help="ort (ONNX Runtime) or openvino")
    b.add_argument(
        "--latency",
        choices=("local", "remote"),
        default="local",
        help="local: measure here; remote: on the device --device served through --redis",
    )
    b.add_argument("--device", type=device_name, help="the remote device's name (prunegym device list)")
    b.add_argument("--redis", type=redis_url, help="the Redis URL of the remote device's worker")
    b.add_argument(
        "--remote-timeout", type=positive_float, default=600.0, help="seconds to wait for the device's result"
    )
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(func=cmd_bench)
    d.set_defaults(func=lambda a: d.print_help() or 2)
