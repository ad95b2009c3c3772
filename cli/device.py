"""``prunegym device serve`` (a latency worker on the target machine) and ``prunegym device list`` (torch-free)."""

from __future__ import annotations

import argparse
import logging
import re
import signal
from pathlib import Path
from typing import Any

from prunegym.cli.util import add_command, positive_float, positive_int, print_json, stdout
from prunegym.core.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["cmd_list", "cmd_serve", "register"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def device_name(text: str) -> str:
    """An argparse ``type``: a device name (letters, digits, ``.``, ``_``, ``-``; at most 64)."""
    if not _NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device name (letters, digits, . _ -; at most 64)")
    return text


def redis_url(text: str) -> str:
    """An argparse ``type``: a ``redis://`` or ``rediss://`` URL."""
    if not re.match(r"^rediss?://", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Redis URL; use redis://[:PASSWORD@]HOST:PORT/DB")
    return text


def cmd_serve(args: argparse.Namespace) -> int:
    from prunegym.core.remote import DeviceQueue, DeviceWorker

    images = Path(args.images) if args.images else None
    if images is not None and not images.is_dir():
        raise UserError(f"--images {images} is not a folder; pass a folder of class subfolders of images")
    queue = DeviceQueue(args.redis, visibility_timeout=args.visibility_timeout, prefix=args.prefix)
    worker = DeviceWorker(
        queue=queue,
        name=args.name,
        runtime=args.runtime,
        threads=args.threads,
        images=images,
        max_job_bytes=int(args.max_job_mb * 1024 * 1024),
        reconnect_timeout=args.reconnect_timeout,
    )
    rec = worker.record
    stdout.print(
        f"device {args.name}: {rec['cpu']} ({', '.join(rec['cpu_flags'])}), {rec['runtime']} "
        f"{rec['runtime_version']}, {args.threads} thread(s); worker {worker.worker_id}; waiting for jobs (Ctrl-C stops)"
    )

    def stop(_signum: int, _frame: Any) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, stop)

    def show(info: dict[str, Any]) -> None:
        if not args.quiet_jobs:
            stdout.print(f"job {info['job'][:8]} {'done' if info['recorded'] else 'already done'} ({info['done']})")

    try:
        done = worker.serve(max_jobs=args.max_jobs, on_job=show)
    except KeyboardInterrupt:
        worker.stop()
        done = -1
    if done >= 0:
        stdout.print(f"served {done} job(s)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from prunegym.core.remote import DeviceQueue

    queue = DeviceQueue(args.redis, prefix=args.prefix)
    queue.ping()
    devices = queue.devices()
    if args.json:
        print_json(
            [
                {
                    "name": d.name,
                    "workers": d.workers,
                    "pending": d.pending,
                    "running": d.running,
                    "done": d.done,
                    "cache_hits": d.cache_hits,
                    **{"record": dict(d.record)},
                }
                for d in devices
            ]
        )
        return 0
    if not devices:
        stdout.print("no devices registered; start a worker: prunegym device serve --redis URL --name NAME")
        return 0
    t = Table(title=f"devices on {queue._safe_url()}")
    for col in ("device", "workers", "queue", "running", "done", "cache hits", "runtime", "threads"):
        t.add_column(col, justify="right" if col in ("workers", "queue", "running", "done", "cache hits") else "left")
    for d in devices:
        r = d.record
        t.add_row(
            d.name,
            str(d.workers),
            str(d.pending),
            str(d.running),
            str(d.done),
            str(d.cache_hits),
            f"{r.get('runtime')} {r.get('runtime_version')}",
            str(r.get("threads")),
        )
    stdout.print(t)
    for d in devices:
        r = d.record
        stdout.print(
            f"{d.name}: {r.get('cpu')} ({', '.join(r.get('cpu_flags') or [])}), {r.get('cpus')} CPUs, {r.get('arch')}"
        )
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", type=redis_url, required=True, help="Redis URL, redis://[:PASSWORD@]HOST:PORT/DB")
    p.add_argument("--prefix", type=device_name, default="prunegym", help="Redis key prefix (to share a server)")


def register(sub: argparse._SubParsersAction) -> None:
    d = add_command(sub, "device", example="prunegym device serve --redis redis://HOST:6379/0 --name pi4")
    dsub = d.add_subparsers(dest="device_command", metavar="ACTION")
    s = add_command(
        dsub,
        "serve",
        help="run a latency worker for this machine: take jobs from Redis, measure, report back",
        example="prunegym device serve --redis redis://HOST:6379/0 --name xeon --runtime openvino --threads 1",
    )
    _common(s)
    s.add_argument("--name", type=device_name, required=True, help="the device's name (what searches pass as --device)")
    s.add_argument("--runtime", choices=("ort", "openvino"), default="ort", help="the runtime that measures")
    s.add_argument("--threads", type=positive_int, default=1, help="threads of the runtime")
    s.add_argument("--images", help="labelled image folder (class subfolders) for accuracy jobs")
    s.add_argument("--max-job-mb", type=positive_float, default=64.0, help="largest job payload accepted (MB)")
    s.add_argument(
        "--visibility-timeout",
        type=positive_float,
        default=30.0,
        help="seconds without a heartbeat after which a job of a dead worker is re-queued",
    )
    s.add_argument(
        "--reconnect-timeout",
        type=positive_float,
        default=600.0,
        help="seconds to wait for a Redis server that went away (restart, network cut) before giving up",
    )
    s.add_argument("--max-jobs", type=positive_int, default=None, help="exit after this many jobs (default: serve)")
    s.add_argument("--quiet-jobs", action="store_true", help="no line per job")
    s.set_defaults(func=cmd_serve)
    ls = add_command(
        dsub,
        "list",
        help="registered devices, their live workers and queue depth",
        example="prunegym device list --redis redis://HOST:6379/0",
    )
    _common(ls)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_list)
    d.set_defaults(func=lambda a: d.print_help() or 2)
