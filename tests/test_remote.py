"""The device queue and worker against a real Redis server: leases, SIGKILL recovery, results recorded once, the
cache, bad jobs, serialization per device, and the timeouts a search sees.

Needs ``PRUNEGYM_TEST_REDIS_URL`` (``eval "$(bash .ci/redis.sh start)"``); skips without it, fails under CI.
"""

from __future__ import annotations

import itertools
import json
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from prunegym.cli.main import main
from prunegym.core.errors import UserError
from prunegym.core.remote import (
    JOB_FORMAT,
    MAGIC,
    BadJob,
    DeviceQueue,
    DeviceWorker,
    JobSpec,
    RemoteDevice,
    RemoteTimeout,
    decode_job,
    encode_job,
)


@pytest.fixture(scope="module")
def onnx_model() -> bytes:
    """A small real CNN (smallcnn on 3×32×32) as ONNX bytes."""
    import torch

    from prunegym.core.models import build_model
    from prunegym.core.onnx_export import export_onnx_bytes

    torch.manual_seed(0)
    return export_onnx_bytes(build_model("smallcnn", in_channels=3).eval(), input_shape=(3, 32, 32))


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix per test (its keys deleted after)."""
    name = f"pgtest-{uuid.uuid4().hex[:8]}"
    yield name
    q = DeviceQueue(redis_url, prefix=name)
    keys = list(q.redis.scan_iter(f"{name}:*"))
    if keys:
        q.redis.delete(*keys)


def start_worker(url: str, prefix: str, name: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "prunegym.cli.main", "--quiet", "device", "serve", "--redis", url]
    cmd += ["--name", name, "--prefix", prefix, "--visibility-timeout", "2", "--quiet-jobs", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_registered(q: DeviceQueue, name: str, workers: int = 1, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while q.live_workers(name) < workers:
        assert time.monotonic() < deadline, "the worker did not register"
        time.sleep(0.05)


@pytest.fixture
def worker_thread(redis_url: str, prefix: str) -> Iterator[DeviceWorker]:
    worker = DeviceWorker(queue=DeviceQueue(redis_url, prefix=prefix, visibility_timeout=2), name="box")
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    wait_registered(DeviceQueue(redis_url, prefix=prefix), "box")
    yield worker
    worker.stop()
    thread.join(timeout=10)


def test_a_job_of_a_worker_killed_mid_job_completes_on_another_and_is_recorded_once(
    redis_url: str, prefix: str, onnx_model: bytes
) -> None:
    q = DeviceQueue(redis_url, prefix=prefix, visibility_timeout=2)
    a = start_worker(redis_url, prefix, "box")
    b = None
    try:
        wait_registered(q, "box")
        spec = JobSpec(repeats=4000, rounds=4, warmup=5)  # a few seconds of timing: time to kill it mid-job
        job = q.submit("box", encode_job([onnx_model, onnx_model], spec=spec), key="k-" + prefix)
        deadline = time.monotonic() + 60
        while q.redis.zscore(q._dev("box", "leases"), job) is None:
            assert time.monotonic() < deadline, "worker A never took the job"
            time.sleep(0.01)
        taken_by = q.redis.hget(q._k("job", job), "worker").decode()
        assert f":{a.pid}:" in taken_by
        time.sleep(0.3)  # inside the measurement
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        assert q.result(job) is None  # killed before it could record anything
        b = start_worker(redis_url, prefix, "box")
        result = q.wait("box", job, timeout=120)
        assert result["ok"], result
        assert f":{b.pid}:" in result["worker"] and result["attempt"] == 2
        assert len(result["result"]["median_ms"]["cpu"]) == 2
        # recorded once: a late duplicate (say, worker A waking up) changes nothing
        assert not q.record("box", job, result={"ok": True, "result": "late"}, worker=taken_by)
        assert q.result(job) == result
        done = int(q.redis.hget(q._dev("box", "stats"), "done"))
        assert done == 1 and q.redis.zcard(q._dev("box", "leases")) == 0 and q.redis.llen(q._dev("box", "pending")) == 0
        assert q.redis.get(q._k("cache", "k-" + prefix)) is not None
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)


def test_a_repeated_job_is_answered_from_the_cache_without_a_new_job(
    redis_url: str, prefix: str, onnx_model: bytes, worker_thread: DeviceWorker
) -> None:
    dev = RemoteDevice(redis=redis_url, device="box", runtime="ort", timeout=60, prefix=prefix)
    assert dev.record["cpu_flags"] == worker_thread.record["cpu_flags"] and dev.threads == 1
    spec = JobSpec(input_shapes=((3, 32, 32),) * 2, repeats=20, rounds=2)
    first = dev.run([onnx_model, onnx_model], spec=spec)
    again = dev.run([onnx_model, onnx_model], spec=spec)  # at once: the cache was written with the result
    assert (dev.jobs, dev.cache_hits) == (1, 1)
    assert again == first
    ratio, _ = first["result"]["ratio_to_first"][1]
    assert 0.5 < ratio < 2.0  # the same model twice, interleaved
    (info,) = dev.queue.devices()
    assert (info.name, info.done, info.cache_hits, info.pending) == ("box", 1, 1, 0)
    other = dev.run([onnx_model, onnx_model], spec=JobSpec(input_shapes=spec.input_shapes, repeats=20, batch=2))
    assert dev.jobs == 2 and other["result"]["median_ms"]["cpu"] != first["result"]["median_ms"]["cpu"]


def test_bad_jobs_get_an_error_result_and_the_worker_serves_the_next(
    redis_url: str, prefix: str, onnx_model: bytes
) -> None:
    q = DeviceQueue(redis_url, prefix=prefix)
    w = start_worker(redis_url, prefix, "box", "--max-job-mb", "0.5")
    try:
        wait_registered(q, "box")
        spec = JobSpec(repeats=10, rounds=2)
        truncated = encode_job([onnx_model], spec=spec)[: -len(onnx_model) // 2]
        header_lies = encode_job([onnx_model[: len(onnx_model) // 2]], spec=spec)  # consistent sizes, broken model
        oversized = encode_job([onnx_model * 1], spec=spec) + b"\0" * (600 * 1024)
        bad = {"truncated": truncated, "broken": header_lies, "oversized": oversized, "garbage": b"\x80pickle"}
        jobs = {k: q.submit("box", v) for k, v in bad.items()}
        errors = {k: q.wait("box", j, timeout=60) for k, j in jobs.items()}
        assert not any(r["ok"] for r in errors.values())
        assert "truncated" in errors["truncated"]["error"]
        assert "not a valid ONNX model" in errors["broken"]["error"]
        assert "over this worker's limit" in errors["oversized"]["error"]
        assert "job header" in errors["garbage"]["error"]
        good = q.wait("box", q.submit("box", encode_job([onnx_model], spec=spec)), timeout=60)
        assert good["ok"] and w.poll() is None
        assert int(q.redis.hget(q._dev("box", "stats"), "errors")) == 4
    finally:
        w.send_signal(signal.SIGTERM)
        assert w.wait(timeout=30) == 0


def test_decode_refuses_what_a_worker_must_not_load(onnx_model: bytes) -> None:
    spec = JobSpec(repeats=3)
    with pytest.raises(BadJob, match="over this worker's limit of 100 bytes"):
        decode_job(encode_job([onnx_model], spec=spec), max_bytes=100)

    def with_spec(**changes: object) -> bytes:
        header = {"format": JOB_FORMAT, "spec": {**spec.to_dict(), **changes}, "sizes": [len(onnx_model)]}
        raw = json.dumps(header).encode()
        return MAGIC + struct.pack(">I", len(raw)) + raw + onnx_model

    assert decode_job(with_spec())[0] == spec
    with pytest.raises(BadJob, match="job repeats must be an integer"):
        decode_job(with_spec(repeats="3"))
    with pytest.raises(BadJob, match="unknown job kind"):
        decode_job(with_spec(kind="__import__"))
    with pytest.raises(BadJob, match="unknown job spec field"):
        decode_job(with_spec(module="os"))
    got_spec, models = decode_job(encode_job([onnx_model, onnx_model], spec=spec))
    assert got_spec == spec and models == [onnx_model, onnx_model]


def test_two_workers_of_one_device_never_measure_at_once(redis_url: str, prefix: str, onnx_model: bytes) -> None:
    workers = [DeviceWorker(queue=DeviceQueue(redis_url, prefix=prefix), name="box") for _ in range(2)]
    threads = [threading.Thread(target=w.serve, daemon=True) for w in workers]
    for t in threads:
        t.start()
    q = DeviceQueue(redis_url, prefix=prefix)
    try:
        wait_registered(q, "box", workers=2)
        spec = JobSpec(repeats=200, rounds=2)
        jobs = [q.submit("box", encode_job([onnx_model], spec=spec)) for _ in range(4)]
        results = [q.wait("box", j, timeout=60) for j in jobs]
        assert all(r["ok"] for r in results)
        spans = sorted((r["started"], r["finished"]) for r in results)
        assert all(end <= nxt_start for (_, end), (nxt_start, _) in itertools.pairwise(spans)), spans
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(timeout=10)


def test_no_worker_times_out_with_a_one_line_error(redis_url: str, prefix: str, capsys, onnx_model: bytes) -> None:
    with pytest.raises(RemoteTimeout, match=r"no worker has registered device 'nobody' after 0\.5 s"):
        RemoteDevice(redis=redis_url, device="nobody", timeout=0.5, prefix=prefix)
    q = DeviceQueue(redis_url, prefix=prefix)
    q.register("gone", record={"runtime": "ort", "threads": 1}, worker="w1")  # registered, then died
    q.redis.hdel(q._dev("gone", "workers"), "w1")
    dev = RemoteDevice(redis=redis_url, device="gone", timeout=0.5, prefix=prefix)
    with pytest.raises(RemoteTimeout, match="no worker is serving it; start one on the device"):
        dev.run([onnx_model], spec=JobSpec(repeats=3))
    assert q.redis.llen(q._dev("gone", "pending")) == 0  # the timed-out job was withdrawn
    with pytest.raises(UserError, match="runs ort, not openvino; pass --runtime ort"):
        RemoteDevice(redis=redis_url, device="gone", runtime="openvino", timeout=0.5, prefix=prefix)


def test_a_search_against_a_device_nobody_serves_stops_with_one_line(redis_url: str, capsys) -> None:
    device = f"nobody-{uuid.uuid4().hex[:6]}"
    argv = ["env", "rollout", "--model", "smallcnn", "--data", "digits", "--episodes", "1", "--latency", "remote"]
    argv += ["--device", device, "--redis", redis_url, "--remote-timeout", "1", "--val-size", "100"]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"no worker has registered device '{device}' after 1 s" in line and "prunegym device serve" in line


def test_device_list_shows_devices_and_queue_depth(redis_url: str, prefix: str, capsys, onnx_model: bytes) -> None:
    q = DeviceQueue(redis_url, prefix=prefix)
    q.register(
        "pi4", record={"runtime": "ort", "runtime_version": "1.x", "threads": 1, "cpu": "Cortex-A72"}, worker="w"
    )
    for _ in range(3):
        q.submit("pi4", encode_job([onnx_model], spec=JobSpec()))
    assert main(["device", "list", "--redis", redis_url, "--prefix", prefix, "--json"]) == 0
    (dev,) = json.loads(capsys.readouterr().out)
    assert (dev["name"], dev["workers"], dev["pending"], dev["record"]["cpu"]) == ("pi4", 1, 3, "Cortex-A72")


def test_latency_build_and_deploy_bench_run_on_the_remote_device(
    redis_url: str, onnx_model: bytes, tmp_path, capsys
) -> None:
    name = f"edge-{uuid.uuid4().hex[:8]}"  # the default key prefix, as the commands use it
    worker = DeviceWorker(queue=DeviceQueue(redis_url, visibility_timeout=5), name=name)
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    q = DeviceQueue(redis_url)
    try:
        wait_registered(q, name)
        table = tmp_path / "table.json"
        argv = ["latency", "build", "--model", "smallcnn", "--data", "digits", "--grid-step", "8", "--calib-rounds"]
        argv += ["4", "--latency", "remote", "--device", name, "--redis", redis_url, "--out", str(table), "--json"]
        assert main(argv) == 0
        device = json.loads(capsys.readouterr().out)["device"]
        assert device["remote_device"] == name and device["runtime"] == "ort"
        assert device["cpu_flags"] == worker.record["cpu_flags"] and device["hostname"] == worker.record["hostname"]
        jobs = int(q.redis.hget(q._dev(name, "stats"), "done"))
        assert jobs >= 2  # the layer chunks and the calibration models, each a job on the device
        bundle = tmp_path / "bundle"
        bundle.mkdir()
        (bundle / "model.onnx").write_bytes(onnx_model)
        (bundle / "model.int8.onnx").write_bytes(onnx_model)
        argv = ["deploy", "bench", str(bundle), "--latency", "remote", "--device", name, "--redis", redis_url]
        assert main([*argv, "--repeats", "20", "--rounds", "2", "--batch", "4", "--json"]) == 0
        bench = json.loads(capsys.readouterr().out)
        assert [e["model"] for e in bench["entries"]] == ["fp32", "int8"] and bench["runtime"].startswith("ort ")
        assert all(e["throughput_fps"] > 0 and e["latency_median_ms"] > 0 for e in bench["entries"])
    finally:
        worker.stop()
        thread.join(timeout=10)
        keys = list(q.redis.scan_iter(f"prunegym:dev:{name}:*"))
        if keys:
            q.redis.delete(*keys)
        q.redis.hdel("prunegym:devices", name)


def test_an_accuracy_job_scores_the_labelled_folder_the_worker_holds(
    redis_url: str, prefix: str, digits_model, digits, tmp_path
) -> None:
    from PIL import Image

    from prunegym.core.checkpoint import load_model
    from prunegym.core.onnx_export import export_onnx_bytes
    from prunegym.deploy.runtime import evaluate_onnx

    folder = tmp_path / "images"
    x, y = digits.test_x[:120].numpy(), digits.test_y[:120].numpy()
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        (folder / digits.class_names[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0], mode="L").save(folder / digits.class_names[label] / f"{i:04d}.png")
    model = export_onnx_bytes(load_model(str(digits_model)).eval(), input_shape=digits.input_shape)
    worker = DeviceWorker(queue=DeviceQueue(redis_url, prefix=prefix), name="lab", images=folder)
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    try:
        wait_registered(DeviceQueue(redis_url, prefix=prefix), "lab")
        dev = RemoteDevice(redis=redis_url, device="lab", timeout=60, prefix=prefix)
        spec = JobSpec(kind="accuracy", labels=digits.class_names, mean=digits.mean, std=digits.std)
        res = dev.run([model], spec=spec)["result"]
        path = tmp_path / "m.onnx"
        path.write_bytes(model)
        here = evaluate_onnx(path, x, y, mean=digits.mean, std=digits.std)
        assert res["images"] == 120 and res["top1"][0] * 100 == pytest.approx(here.top1, abs=1e-9)
    finally:
        worker.stop()
        thread.join(timeout=10)


def test_the_password_can_come_from_the_environment(redis_url: str, monkeypatch) -> None:
    if "@" not in redis_url:
        pytest.skip("this server has no password")
    password = redis_url.split("://", 1)[1].split("@", 1)[0].lstrip(":")
    bare = redis_url.split("://", 1)[0] + "://" + redis_url.split("@", 1)[1]
    with pytest.raises(UserError, match="cannot reach Redis"):
        DeviceQueue(bare).ping()
    monkeypatch.setenv("PRUNEGYM_REDIS_PASSWORD", password)
    DeviceQueue(bare).ping()
