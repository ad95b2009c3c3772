"""The cost of the remote latency path: the same measurement locally and through a device worker, and jobs/s.

Starts one ``prunegym device serve`` worker (ONNX Runtime, 1 thread) on this machine against ``--redis``, then:

1. ResNet-56 unpruned vs the depth+width pruned one (the Optuna best policy, as in bench/runtimes_resnet56.py),
   the env's measurement (5 interleaved rounds, 30 timed runs each): ``--pairs`` times locally and remotely,
   alternating; the speed-up ratio each path measures and the wall seconds per measurement.
2. Jobs/s through the worker: ``--jobs`` tiny jobs (a small CNN, 1 timed run each), one after another (a search
   waiting on each) and all queued at once.

.venv/bin/python bench/remote_overhead.py --redis redis://127.0.0.1:6390/0 --out bench/results/remote-overhead.json
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from prunegym.core.checkpoint import load_model
from prunegym.core.data import load_data
from prunegym.core.evaluate import input_norm, recalibrate_bn
from prunegym.core.io import write_json
from prunegym.core.models import build_model
from prunegym.core.onnx_export import export_onnx_bytes
from prunegym.core.onnxrt import LatencyConfig, machine_description, measure_interleaved, round_ratio
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy
from prunegym.core.remote import DeviceQueue, JobSpec, RemoteDevice, encode_job

SHARED = Path("../shared/data")
POLICY = Path("bench/results/resnet56/search/optuna-s0/best_policy.yaml")


def _models() -> tuple[bytes, bytes]:
    data = load_data(f"cifar10:{SHARED / 'cifar-10-batches-py'}", val_size=1000)
    base = load_model("resnet56", weights=str(SHARED / "pretrained" / "resnet56-4bfd9763.th")).eval()
    mean, std = input_norm(base, mean=data.mean, std=data.std)
    policy = Policy.load(POLICY)
    pruned = apply_policy(
        base, policy, input_shape=data.input_shape, criterion=policy.criterion, round_to=policy.round_to
    )
    recalibrate_bn(pruned, data.train_x, mean=mean, std=std, num_images=200)
    shape = data.input_shape
    return export_onnx_bytes(base, input_shape=shape), export_onnx_bytes(pruned.eval(), input_shape=shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", required=True)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, "-m", "prunegym.cli.main", "--quiet", "device", "serve", "--redis", args.redis]
    worker = subprocess.Popen([*cmd, "--name", name, "--quiet-jobs"], stdout=subprocess.DEVNULL)
    try:
        base, pruned = _models()
        dev = RemoteDevice(redis=args.redis, device=name, timeout=120)
        config = LatencyConfig(repeats=30, warmup=6)
        shapes = [(3, 32, 32)] * 2
        local, remote = [], []
        for i in range(args.pairs):
            t = time.perf_counter()
            rounds = measure_interleaved([base, pruned], input_shapes=shapes, config=config, rounds=5).round_medians(
                "cpu"
            )
            local.append((round_ratio(rounds[1], rounds[0])[0], time.perf_counter() - t))
            t = time.perf_counter()
            spec = JobSpec(input_shapes=tuple(shapes), repeats=30, warmup=6, rounds=5, tag=f"pair-{i}")
            res = dev.run([base, pruned], spec=spec)
            remote.append((res["result"]["ratio_to_first"][1][0], time.perf_counter() - t, res["seconds"]))
        small = export_onnx_bytes(build_model("smallcnn", in_channels=3).eval(), input_shape=(3, 32, 32))
        tiny = JobSpec(repeats=1, rounds=1, warmup=0, round_warmup=0)
        t = time.perf_counter()
        for i in range(args.jobs):
            dev.run([small], spec=JobSpec(**{**tiny.__dict__, "tag": f"seq-{i}"}))
        sequential = args.jobs / (time.perf_counter() - t)
        q = DeviceQueue(args.redis)
        t = time.perf_counter()
        ids = [
            q.submit(name, encode_job([small], spec=JobSpec(**{**tiny.__dict__, "tag": f"q-{i}"})))
            for i in range(args.jobs)
        ]
        for job in ids:
            assert q.wait(name, job, timeout=120)["ok"]
        queued = args.jobs / (time.perf_counter() - t)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    loc, rem = np.array(local), np.array(remote)
    result = {
        "machine": machine_description(),
        "note": "client, Redis and worker on this one 2-core machine (loopback), while another search ran",
        "pairs": args.pairs,
        "local": {"speedup_median": float(np.median(1 / loc[:, 0])), "seconds_median": float(np.median(loc[:, 1]))},
        "remote": {
            "speedup_median": float(np.median(1 / rem[:, 0])),
            "seconds_median": float(np.median(rem[:, 1])),
            "worker_seconds_median": float(np.median(rem[:, 2])),
        },
        "overhead_seconds_median": float(np.median(rem[:, 1] - loc[:, 1])),
        "jobs": args.jobs,
        "jobs_per_s_sequential": sequential,
        "jobs_per_s_queued": queued,
    }
    print(result)
    if args.out:
        write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
