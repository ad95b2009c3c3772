"""The search side of a remote device: send ONNX models as jobs, wait for the results, reuse cached ones."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from prunegym.core.errors import UserError
from prunegym.core.remote.jobs import JobSpec, encode_job
from prunegym.core.remote.queue import DeviceQueue, cache_key

__all__ = ["RemoteDevice"]

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
        hit = self.queue.cached(key, device=self.device)
        if hit is not None:
            self.cache_hits += 1
            return hit
        payload = encode_job(models, spec=spec)
        limit = int(self.record.get("max_job_bytes") or 0)
        if limit and len(payload) > limit:
            raise UserError(
                f"a job of {len(payload)} bytes is over device {self.device!r}'s limit of {limit} bytes; "
                "start its worker with a larger --max-job-mb"
            )
        job = self.queue.submit(self.device, payload, key=key)
        self.jobs += 1
        result = self.queue.wait(self.device, job, timeout=self.timeout)
        if not result.get("ok"):
            raise UserError(f"device {self.device!r} could not run the job: {result.get('error')}")
        return result
