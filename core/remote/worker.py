"""The device worker: takes jobs from the device queue, measures them on this machine, records the results.

Runs where the device is (``prunegym device serve``). Torch-free: numpy, onnx, onnxruntime (or OpenVINO),
redis-py and, for accuracy jobs, Pillow. Every job is checked before loading (:func:`decode_job`); a bad one, or a
measurement that fails, gets an error result and the worker serves the next job.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prunegym.core.errors import UserError
from prunegym.core.onnxrt import (
    LatencyConfig,
    host_record,
    measure_interleaved,
    model_precision,
    open_model,
    random_input,
    resolve_clock,
    round_ratio,
    runtime_version,
    time_runs,
)
from prunegym.core.remote.jobs import DEFAULT_MAX_JOB_BYTES, BadJob, JobSpec, decode_job
from prunegym.core.remote.queue import DeviceQueue

__all__ = ["DeviceWorker", "measure_job"]

log = logging.getLogger(__name__)

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".webp"}


def _latency(models: Sequence[bytes], spec: JobSpec, *, runtime: str, threads: int) -> dict[str, Any]:
    config = LatencyConfig(
        runtime=runtime, intra_op_threads=threads, batch_size=spec.batch, warmup=spec.warmup, repeats=spec.repeats
    )
    clock = resolve_clock(spec.clock, config=config)
    shapes = spec.input_shapes or [None] * len(models)
    times = measure_interleaved(
        models, input_shapes=shapes, config=config, rounds=spec.rounds, round_warmup=spec.round_warmup
    )
    rounds = times.round_medians(clock)
    out: dict[str, Any] = {
        "clock": clock,
        "median_ms": {c: [float(v) for v in times.median(c)] for c in ("cpu", "wall")},
        "p90_ms": [float(np.percentile(t, 90)) for t in times.times(clock).reshape(len(models), -1)],
        "round_medians_ms": [[float(v) for v in r] for r in rounds],
        "ratio_to_first": [list(round_ratio(rounds[i], rounds[0])) for i in range(len(models))],
        "runs_per_model": int(times.times(clock)[0].size),
    }
    if spec.raw_times:
        out["times_ms"] = {"cpu": times.cpu_ms.round(6).tolist(), "wall": times.wall_ms.round(6).tolist()}
    if spec.throughput_batch:
        fps: list[list[float]] = [[] for _ in models]
        subjects = []
        for model, shape in zip(models, shapes, strict=True):
            session = open_model(model, runtime=runtime, threads=threads)
            feed = random_input(session, batch_size=spec.throughput_batch, input_shape=shape)
            time_runs(session, feed, warmup=2, repeats=1)
            subjects.append((session, feed))
        per_round = max(1, math.ceil(spec.throughput_repeats / spec.rounds))
        for r in range(spec.rounds):
            for i in [*range(r % len(models), len(models)), *range(r % len(models))]:
                session, feed = subjects[i]
                ms = time_runs(session, feed, warmup=0, repeats=per_round)
                fps[i].append(per_round * spec.throughput_batch / (float(np.sum(ms)) / 1e3))
        out["throughput_fps"] = [float(np.median(f)) for f in fps]
        out["throughput_batch"] = spec.throughput_batch
    return out


def _load_folder(root: Path, *, labels: Sequence[str], channels: int, size: tuple[int, int], limit: int) -> Any:
    """uint8 N×C×H×W images of the class folders under ``root`` named in ``labels``, and their label indices."""
    from PIL import Image

    index = {name: i for i, name in enumerate(labels)}
    files = sorted(
        (p, index[p.parent.name]) for p in root.glob("*/*") if p.suffix.lower() in _IMAGE_EXT and p.parent.name in index
    )
    if not files:
        raise BadJob("the worker's image folder holds no images in class folders named like the job's labels")
    if limit:
        files = files[:limit]
    xs = np.empty((len(files), channels, *size), dtype=np.uint8)
    for k, (path, _) in enumerate(files):
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im)
        xs[k] = arr.transpose(2, 0, 1) if channels == 3 else arr[None]
    return xs, np.array([y for _, y in files])


def _accuracy(models: Sequence[bytes], spec: JobSpec, *, runtime: str, threads: int, images: Path | None) -> Any:
    if images is None:
        raise BadJob("this worker holds no labelled images; start it with --images DIR to run accuracy jobs")
    top1 = []
    for model in models:
        session = open_model(model, runtime=runtime, threads=threads)
        meta = session.get_inputs()[0]
        dims = [d for d in meta.shape[1:]]
        if not all(isinstance(d, int) for d in dims):
            raise BadJob("accuracy jobs need models with a static C×H×W input")
        x, y = _load_folder(images, labels=spec.labels, channels=dims[0], size=(dims[1], dims[2]), limit=spec.limit)
        mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(spec.std, dtype=np.float32).reshape(1, -1, 1, 1)
        hits = 0
        for s in range(0, len(x), 256):
            batch = ((x[s : s + 256].astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
            logits = session.run(None, {meta.name: batch})[0]
            hits += int(np.sum(np.argmax(logits, axis=1) == y[s : s + 256]))
        top1.append(hits / len(x))
    return {"top1": top1, "images": len(x)}


def measure_job(
    payload: bytes, *, runtime: str, threads: int, images: Path | None = None, max_bytes: int = DEFAULT_MAX_JOB_BYTES
) -> dict[str, Any]:
    """Check, decode and run one job here.

    Args:
        payload: the job's wire form.
        runtime: "ort" or "openvino".
        threads: the runtime's threads.
        images: the labelled image folder for accuracy jobs (class subfolders).
        max_bytes: the largest payload accepted.

    Returns:
        The measurement (``latency`` or ``accuracy`` fields) plus ``runtime`` (name, version, precision per model).

    Raises:
        BadJob: a job this worker refuses.
        UserError: a model the runtime cannot load.
    """
    spec, models = decode_job(payload, max_bytes=max_bytes)
    if spec.kind == "latency":
        out = _latency(models, spec, runtime=runtime, threads=threads)
    else:
        out = _accuracy(models, spec, runtime=runtime, threads=threads, images=images)
    out["runtime"] = {
        "runtime": runtime,
        "version": runtime_version(runtime),
        "precision": [model_precision(m) for m in models],
    }
    return out


class DeviceWorker:
    """Serve one device: register it, take its jobs one at a time, measure, record.

    Args:
        queue: the device queue.
        name: the device's name (what searches pass as ``--device``).
        runtime: "ort" or "openvino".
        threads: the runtime's threads.
        images: a labelled image folder (class subfolders) for accuracy jobs.
        max_job_bytes: the largest job payload accepted (checked before it is read).
        reconnect_timeout: how long the worker waits for a Redis server that went away (a restart, a network cut)
            before it gives up; it then re-registers, and a job it was measuring is run again from the queue (or,
            when the server lost its data, resubmitted by the search).
    """

    def __init__(
        self,
        *,
        queue: DeviceQueue,
        name: str,
        runtime: str = "ort",
        threads: int = 1,
        images: Path | None = None,
        max_job_bytes: int = DEFAULT_MAX_JOB_BYTES,
        reconnect_timeout: float = 600.0,
    ) -> None:
        self.queue = queue
        self.reconnect_timeout = reconnect_timeout
        self.name = name
        self.runtime = runtime
        self.threads = threads
        self.images = images
        self.max_job_bytes = max_job_bytes
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.record = {
            **host_record(runtime=runtime),
            "threads": threads,
            "images": str(images) if images else None,
            "max_job_bytes": max_job_bytes,
        }
        self._job = ""
        self._stop = threading.Event()

    def _beat(self) -> None:
        interval = self.queue.visibility_ms / 1000 / 4
        while not self._stop.wait(interval):
            try:
                if self.queue.device_record(self.name) is None:  # a server restarted without its data
                    log.warning("device %s is not registered on Redis any more; registering it again", self.name)
                    self.queue.register(self.name, record=self.record, worker=self.worker_id)
                self.queue.heartbeat(self.name, worker=self.worker_id, job=self._job)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    def stop(self) -> None:
        """Finish the current job, then return from :meth:`serve`."""
        self._stop.set()

    def handle(self, job: str, attempt: int) -> bool:
        """Run one claimed job and record its result (an error result for a bad job). Whether it was recorded."""
        started, wall_start = time.perf_counter(), time.time()
        base = {"job": job, "device": self.name, "worker": self.worker_id, "attempt": attempt}
        base |= {"runtime": self.runtime, "threads": self.threads, "host": self.record}
        size = self.queue.payload_size(job)
        key = ""
        if size > self.max_job_bytes:
            result = {
                **base,
                "ok": False,
                "error": f"job payload of {size} bytes is over this worker's limit of "
                f"{self.max_job_bytes} bytes; send smaller models or raise --max-job-mb",
            }
        else:
            payload, key = self.queue.payload(job)
            if payload is None:
                self.queue.release(self.name, worker=self.worker_id)
                return False
            try:
                out = measure_job(
                    payload,
                    runtime=self.runtime,
                    threads=self.threads,
                    images=self.images,
                    max_bytes=self.max_job_bytes,
                )
                result = {**base, "ok": True, "result": out}
            except (BadJob, UserError) as exc:
                result = {**base, "ok": False, "error": str(exc)}
            except Exception as exc:
                log.exception("job %s failed", job)
                result = {**base, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.perf_counter() - started, 4)
        result["started"], result["finished"] = wall_start, time.time()  # when the device was busy (serialization)
        recorded = self.queue.record(self.name, job, result=result, worker=self.worker_id, cache=key)
        log.info(
            "job %s %s in %.2f s%s",
            job[:8],
            "done" if result["ok"] else f"failed ({result.get('error')})",
            result["seconds"],
            "" if recorded else " (already recorded by another worker)",
        )
        return recorded

    def serve(self, *, max_jobs: int | None = None, on_job: Callable[[dict[str, Any]], None] | None = None) -> int:
        """Register, then take and run jobs until :meth:`stop` (or ``max_jobs`` jobs).

        Args:
            max_jobs: return after this many jobs (None: serve until stopped).
            on_job: called with a short summary after each job (for progress).

        Returns:
            Jobs handled.
        """
        self.queue.ping()
        beat = threading.Thread(target=self._beat, name="prunegym-heartbeat", daemon=True)
        registered = False
        done = 0
        try:
            while not self._stop.is_set() and (max_jobs is None or done < max_jobs):
                try:
                    if not registered:
                        self.queue.register(self.name, record=self.record, worker=self.worker_id)
                        registered = True
                        if not beat.is_alive():
                            beat.start()
                    self.queue.reap(self.name)
                    claimed = self.queue.claim(self.name, worker=self.worker_id, wait=1.0)
                    if claimed is None:
                        continue
                    self._job = claimed[0]
                    self.queue.heartbeat(self.name, worker=self.worker_id, job=self._job)
                    recorded = self.handle(*claimed)
                except self.queue.connection_errors as exc:
                    self._job = ""  # its lease runs out: the job is taken again, or resubmitted
                    self.queue.reconnect(timeout=self.reconnect_timeout, cause=exc)
                    registered = False  # a server restarted without its data has forgotten the device
                    continue
                self._job = ""
                done += 1
                if on_job is not None:
                    on_job({"job": claimed[0], "recorded": recorded, "done": done})
        finally:
            self._stop.set()
            try:
                self.queue.unregister_worker(self.name, worker=self.worker_id)
            except self.queue.connection_errors as exc:  # gone already: its heartbeat simply stops
                log.warning("could not unregister from Redis: %s", exc)
        return done
