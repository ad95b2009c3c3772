"""A short DDPG search on the embedded default (digits) with its latency measured on a remote device worker, end
to end through a real Redis: the worker is SIGKILLed mid-job, another finishes the job, the episode count is exact.

Needs ``PRUNEGYM_TEST_REDIS_URL`` (``eval "$(bash .ci/redis.sh start)"``); skips without it, fails under CI.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from prunegym.core.io import read_jsonl
from prunegym.core.remote import DeviceQueue

EPISODES = 6


def _worker(url: str, device: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "prunegym.cli.main", "--quiet", "device", "serve", "--redis", url, "--name", device]
    cmd += ["--visibility-timeout", "2", "--quiet-jobs"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_ddpg_search_with_remote_latency_survives_a_killed_worker(
    redis_url: str, digits_model: Path, tmp_path: Path
) -> None:
    device = f"edge-{uuid.uuid4().hex[:8]}"  # the searches' default key prefix, a device of this test's own
    q = DeviceQueue(redis_url)
    a = _worker(redis_url, device)
    procs = [a]
    try:
        deadline = time.monotonic() + 60
        while q.live_workers(device) < 1:
            assert time.monotonic() < deadline and a.poll() is None, "worker A did not start"
            time.sleep(0.05)
        out = tmp_path / "remote-amc"
        search = [sys.executable, "-m", "prunegym.cli.main", "--quiet", "agent", "train", "--model", str(digits_model)]
        search += ["--data", "digits", "--val-size", "200", "--bn-recalib-images", "200"]
        search += ["--episodes", str(EPISODES), "--warmup-episodes", "2", "--checkpoint-every", "100"]
        search += ["--target", "latency", "--target-ratio", "0.7", "--latency", "remote", "--device", device]
        search += ["--redis", redis_url, "--remote-timeout", "120", "--latency-repeats", "600", "--out", str(out)]
        agent = subprocess.Popen(search, stderr=subprocess.PIPE, text=True)
        procs.append(agent)
        # the search's first job (the baseline) goes to A, the only worker: kill A while it measures
        deadline = time.monotonic() + 120
        while not q.redis.zcard(q._dev(device, "leases")):
            assert time.monotonic() < deadline and agent.poll() is None, "the search sent no job"
            time.sleep(0.002)
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        procs.append(_worker(redis_url, device))  # B
        _, err = agent.communicate(timeout=300)
        assert agent.returncode == 0, err[-2000:]
        records = read_jsonl(out / "episodes.jsonl")
        assert [r["episode"] for r in records] == list(range(EPISODES))
        assert all(0.0 < r["latency_ratio"] < 1.5 for r in records)
        stats = {k.decode(): int(v) for k, v in q.redis.hgetall(q._dev(device, "stats")).items()}
        assert stats["done"] >= 2 and stats.get("errors", 0) == 0  # the baseline (re-done by B) and the candidates
        assert q.redis.zcard(q._dev(device, "leases")) == 0 and q.redis.llen(q._dev(device, "pending")) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
        keys = list(q.redis.scan_iter(f"prunegym:dev:{device}:*"))
        if keys:
            q.redis.delete(*keys)
        q.redis.hdel("prunegym:devices", device)
