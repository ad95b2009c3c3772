"""The search side of a remote device: send ONNX models as jobs, wait for the results, reuse cached ones."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from prunegym.core.errors import UserError
from prunegym.core.onnxrt import InterleavedTimes, LatencyConfig, OnnxSource, model_bytes
from prunegym.core.remote.jobs import JobSpec, encode_job
from prunegym.core.remote.queue import DeviceQueue, JobLost, cache_key

__all__ = ["RemoteDevice", "RemoteInterleaved"]

log = logging.getLogger(__name__)


class RemoteDevice:
    """A device served by ``prunegym device serve`` somewhere, reached through Redis.

    Args:
        redis: the Redis URL the worker listens on.
        device: the device's name.
        runtime: the runtime the caller expects the device to run (None: whatever it runs).
        timeout: seconds to wait for the device to be registered and for each result.
        visibility_timeout: seconds a dead worker's job stays leased before it is re-queued.
        prefix: the Redis key prefix the worker uses.

    Raises:
        UserError: Redis unreachable or redis-py missing; RemoteTimeout: no worker registered ``device`` in
            ``timeout`` seconds; a device that runs another runtime.
    """

    def __init__(
        self,
        *,
        redis: str,
        device: str,
        runtime: str | None = None,
        timeout: float = 600.0,
        visibility_timeout: float = 30.0,
        prefix: str = "prunegym",
    ) -> None:
        self.queue = DeviceQueue(redis, visibility_timeout=visibility_timeout, prefix=prefix)
        self.queue.ping()
        self.device = device
        self.timeout = timeout
        self.record: dict[str, Any] = self.queue.wait_for_device(device, timeout=timeout)
        if runtime is not None and self.record.get("runtime") != runtime:
            raise UserError(
                f"device {device!r} runs {self.record.get('runtime')}, not {runtime}; "
                f"pass --runtime {self.record.get('runtime')} or start a worker with --runtime {runtime}"
            )
        self.jobs = 0
        self.cache_hits = 0

    @property
    def runtime(self) -> str:
        """The runtime the device's worker measures with."""
        return str(self.record.get("runtime", "ort"))

    @property
    def threads(self) -> int:
        """The threads the device's worker measures with."""
        return int(self.record.get("threads", 1))

    def run(self, models: Sequence[bytes], *, spec: JobSpec) -> dict[str, Any]:
        """Measure ``models`` on the device (or return the cached result of the same job).

        Args:
            models: serialized ONNX models (for a latency job, the reference first).
            spec: what to measure.

        Returns:
            The worker's result: ``result`` (the measurement), ``host``, ``runtime``, ``threads``, ``seconds``.

        Raises:
            RemoteTimeout: no result in time; UserError: the device refused or failed the job.
        """
        key = cache_key(
            digest=spec.digest(models), device=self.device, runtime=self.runtime, threads=self.threads, batch=spec.batch
        )
        payload = encode_job(models, spec=spec)
        limit = int(self.record.get("max_job_bytes") or 0)
        if limit and len(payload) > limit:
            raise UserError(
                f"a job of {len(payload)} bytes is over device {self.device!r}'s limit of {limit} bytes; "
                "start its worker with a larger --max-job-mb"
            )
        job = None
        while True:  # a Redis server that goes away mid-job: wait for it, then wait on the job or submit it again
            try:
                if job is None or not self.queue.known(job):
                    hit = self.queue.cached(key, device=self.device)
                    if hit is not None:
                        self.cache_hits += 1
                        return hit
                    job = self.queue.submit(self.device, payload, key=key)
                    self.jobs += 1
                result = self.queue.wait(self.device, job, timeout=self.timeout)
                break
            except JobLost:
                log.warning("Redis forgot job %s (restarted without its data?); submitting it again", job[:8])
            except self.queue.connection_errors as exc:
                self.queue.reconnect(timeout=self.timeout, cause=exc)
        if not result.get("ok"):
            raise UserError(f"device {self.device!r} could not run the job: {result.get('error')}")
        return result

    def measure_interleaved(
        self,
        models: Sequence[OnnxSource],
        *,
        input_shapes: Sequence[Sequence[int]],
        config: LatencyConfig,
        rounds: int,
        repeats: int | None = None,
        round_warmup: int = 2,
        progress: Callable[[int, int], None] | None = None,
        tag: str = "",
    ) -> InterleavedTimes:
        """:func:`~prunegym.core.onnxrt.measure_interleaved` on the device: the same rounds, every run returned.

        Args:
            models: ONNX files or serialized models.
            input_shapes: one C×H×W input shape per model.
            config: batch and warm-up (threads and runtime are the worker's).
            rounds: interleaved rounds.
            repeats: timed runs of each model in all; defaults to ``config.repeats``.
            round_warmup: untimed runs of each model at the start of its turn in a round.
            progress: called once with (turns, turns) when the result is in.
            tag: enters the cache key (a re-measurement of the same models must not be answered from the cache).
        """
        spec = JobSpec(
            kind="latency",
            input_shapes=tuple(tuple(int(d) for d in s) for s in input_shapes),
            batch=config.batch_size,
            warmup=config.warmup,
            repeats=repeats or config.repeats,
            rounds=rounds,
            round_warmup=round_warmup,
            raw_times=1,
            tag=tag,
        )
        times = self.run([model_bytes(m) for m in models], spec=spec)["result"]["times_ms"]
        if progress is not None:
            progress(rounds * len(models), rounds * len(models))
        return InterleavedTimes(wall_ms=np.array(times["wall"]), cpu_ms=np.array(times["cpu"]))


class RemoteInterleaved:
    """:class:`~prunegym.core.onnxrt.Interleaved` on a remote device: the rounds asked for are timed there in one
    job when the times are first read (a device job carries all the models at once).

    Args:
        device: the remote device.
        models: ONNX files or serialized models.
        input_shapes: one C×H×W input shape per model.
        config: batch and up-front warm-up runs.
        per_round: timed runs of each model per round.
        round_warmup: untimed runs of each model at the start of its turn in a round.
        tag: enters the cache key.
    """

    def __init__(
        self,
        device: RemoteDevice,
        models: Sequence[OnnxSource],
        *,
        input_shapes: Sequence[Sequence[int]],
        config: LatencyConfig,
        per_round: int,
        round_warmup: int = 2,
        tag: str = "",
    ) -> None:
        self.device = device
        self.models = [model_bytes(m) for m in models]
        self.input_shapes = input_shapes
        self.config = config
        self.per_round = per_round
        self.round_warmup = round_warmup
        self.tag = tag
        self._rounds = 0
        self._times: InterleavedTimes | None = None

    @property
    def rounds(self) -> int:
        """Rounds asked for so far."""
        return self._rounds

    def run_round(self, *, step: Callable[[], None] | None = None) -> None:
        """Ask for one more round (timed on the device when :meth:`times` is read)."""
        self._rounds += 1
        self._times = None
        if step is not None:
            step()

    def times(self) -> InterleavedTimes:
        """All rounds asked for, timed on the device in one interleaved job."""
        if self._times is None:
            self._times = self.device.measure_interleaved(
                self.models,
                input_shapes=self.input_shapes,
                config=self.config,
                rounds=max(1, self._rounds),
                repeats=self.per_round * max(1, self._rounds),
                round_warmup=self.round_warmup,
                tag=self.tag,
            )
        return self._times
