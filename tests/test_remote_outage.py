"""A Redis server that goes away under a device worker and a search: both wait for it, and a job the restarted
server forgot is submitted again and measured; a server that stays away ends each side with one line.

Each test runs its own throwaway redis-server (loopback, free port, no persistence) so it can kill and restart
it; the binary comes with `.ci/redis.sh start` (Debian's redis-server). Skips without it, fails under CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from prunegym.core.errors import UserError
from prunegym.core.remote import DeviceQueue, DeviceWorker, JobSpec, RemoteDevice


class Server:
    """redis-server on 127.0.0.1:port, started and SIGKILLed at will (an empty server after each restart)."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder = folder
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*cmd, "--dir", str(self.folder)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed; run: bash .ci/redis.sh start (it installs Debian's redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    srv = Server(tmp_path)
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def onnx_model() -> bytes:
    import torch

    from prunegym.core.models import build_model
    from prunegym.core.onnx_export import export_onnx_bytes

    torch.manual_seed(0)
    return export_onnx_bytes(build_model("smallcnn", in_channels=3).eval(), input_shape=(3, 32, 32))


def _serve(worker: DeviceWorker, errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            worker.serve()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@contextmanager
def serving(worker: DeviceWorker, errors: list[BaseException]) -> Iterator[threading.Thread]:
    """``worker`` serving in a thread for the block, stopped and joined after it."""
    thread = _serve(worker, errors)
    try:
        yield thread
    finally:
        worker.stop()
        thread.join(timeout=30)


def _long(models: list[bytes]) -> JobSpec:
    return JobSpec(input_shapes=((3, 32, 32),) * len(models), repeats=200, rounds=2)


def test_a_job_the_restarted_server_forgot_is_submitted_again_and_measured(server: Server, onnx_model: bytes) -> None:
    first = DeviceWorker(queue=DeviceQueue(server.url, visibility_timeout=2), name="box")
    errors: list[BaseException] = []
    thread = _serve(first, errors)
    dev = RemoteDevice(redis=server.url, device="box", timeout=90)
    first.stop()  # nobody serves the device for now: the job below waits in the queue
    thread.join(timeout=30)
    models = [onnx_model, onnx_model]
    out: dict[str, object] = {}
    search = threading.Thread(target=lambda: out.update(result=dev.run(models, spec=_long(models))), daemon=True)
    search.start()
    q = DeviceQueue(server.url)
    deadline = time.monotonic() + 30
    while not q.redis.llen(q._dev("box", "pending")):
        assert time.monotonic() < deadline, "the job was never queued"
        time.sleep(0.01)
    server.kill()  # the queued job is gone with the server's data
    time.sleep(1.0)
    server.start()
    second = DeviceWorker(queue=DeviceQueue(server.url, visibility_timeout=2), name="box")
    with serving(second, errors):
        search.join(timeout=90)
        assert not search.is_alive(), "the search never got its result"
        result = out["result"]
        assert result["ok"] and f"{second.worker_id}" == result["worker"]
        assert dev.jobs == 2  # the job, then the same job again on the restarted server
        assert not errors


def test_a_worker_waits_out_a_restart_and_registers_again(server: Server, onnx_model: bytes) -> None:
    worker = DeviceWorker(queue=DeviceQueue(server.url, visibility_timeout=2), name="box", reconnect_timeout=60)
    errors: list[BaseException] = []
    with serving(worker, errors) as thread:
        q = DeviceQueue(server.url)
        q.wait_for_device("box", timeout=30)
        server.kill()
        time.sleep(1.5)  # the worker's claims and heartbeats fail meanwhile
        server.start()
        fresh = DeviceQueue(server.url)
        deadline = time.monotonic() + 15
        while fresh.device_record("box") is None or not fresh.live_workers("box"):
            assert time.monotonic() < deadline, "the worker did not register on the restarted server"
            time.sleep(0.05)
        models = [onnx_model, onnx_model]
        result = RemoteDevice(redis=server.url, device="box", timeout=60).run(models, spec=_long(models))
        assert result["ok"] and result["worker"] == worker.worker_id
        assert thread.is_alive() and not errors


def test_a_server_that_stays_away_ends_search_and_worker_with_one_line(server: Server, onnx_model: bytes) -> None:
    worker = DeviceWorker(queue=DeviceQueue(server.url, visibility_timeout=2), name="box", reconnect_timeout=1.5)
    errors: list[BaseException] = []
    thread = _serve(worker, errors)
    dev = RemoteDevice(redis=server.url, device="box", timeout=1.5)
    while not dev.queue.live_workers("box"):  # registered and beating
        time.sleep(0.05)
    server.kill()
    started = time.monotonic()
    with pytest.raises(UserError) as search_error:
        dev.run([onnx_model, onnx_model], spec=JobSpec(input_shapes=((3, 32, 32),) * 2, repeats=10, rounds=2))
    assert time.monotonic() - started < 30
    message = str(search_error.value)
    assert message.startswith(f"lost the connection to Redis at {server.url}") and "\n" not in message
    assert "did not come back in 1.5 s" in message and "--resume" in message
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], UserError) and "lost the connection" in str(errors[0])
