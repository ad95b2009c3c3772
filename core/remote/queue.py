"""The device queue over Redis: per-device pending jobs, leases with a visibility timeout, results recorded once.

Keys (under ``prefix``, default ``prunegym``), for a device ``NAME``:

- ``devices`` (hash): NAME → the registered device record (host, runtime, threads);
- ``dev:NAME:workers`` (hash): worker id → its last heartbeat;
- ``dev:NAME:pending`` (list) of job ids, ``dev:NAME:leases`` (sorted set) job id → lease deadline (ms);
- ``dev:NAME:lock``: the worker measuring now (one at a time per device, so timings never overlap), with a lease;
- ``dev:NAME:wake`` (list): a token per new job, which idle workers block on;
- ``job:ID`` (hash: payload, cache key, attempts, worker), ``result:ID``, ``done:ID`` (the waiter's wake-up);
- ``cache:KEY``: a result by (job digest — models and settings —, device, runtime, threads, batch).

Claiming, renewing, recording and re-queueing are Lua scripts, so each is atomic: a claim takes the device lock
and a lease together; a worker that dies stops renewing both, and after the visibility timeout any worker or
waiter re-queues its job (at the front) for another worker; the first result recorded wins, and the same script
writes the cache entry, so a repeat submitted right after the waiter woke already hits the cache.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prunegym.core.errors import UserError

__all__ = ["REMOTE_MISSING", "DeviceInfo", "DeviceQueue", "JobLost", "RemoteTimeout", "cache_key"]

log = logging.getLogger(__name__)

REMOTE_MISSING = "redis-py is not installed; install it with: pip install 'prunegym[remote]'"
RESULT_TTL_S = 24 * 3600

_CLAIM = """
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[1] then return false end
local id = redis.call('LPOP', KEYS[1])
while id and redis.call('EXISTS', ARGV[3] .. id) == 0 do id = redis.call('LPOP', KEYS[1]) end  -- withdrawn or done
if not id then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), id)
local job = ARGV[3] .. id
redis.call('HSET', job, 'worker', ARGV[1])
local attempts = redis.call('HINCRBY', job, 'attempts', 1)
return {id, attempts}
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] ~= '' and redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
end
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return 1
"""

_RECORD = """
local recorded = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[5])
  if ARGV[4] ~= '' then redis.call('SET', ARGV[4], ARGV[2]) end
  redis.call('HINCRBY', KEYS[6], ARGV[6], 1)
  redis.call('DEL', KEYS[5])
  redis.call('RPUSH', KEYS[4], '1')
  redis.call('EXPIRE', KEYS[4], ARGV[5])
  recorded = 1
end
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[3] then redis.call('DEL', KEYS[3]) end
if redis.call('LLEN', KEYS[7]) > 0 then redis.call('RPUSH', KEYS[8], '1') end
return recorded
"""

_REAP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
local requeued = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local job = ARGV[1] .. id
  if redis.call('EXISTS', ARGV[2] .. id) == 0 and redis.call('EXISTS', job) == 1 then
    local attempts = tonumber(redis.call('HGET', job, 'attempts') or '0')
    if attempts >= tonumber(ARGV[3]) then
      local msg = cjson.encode({ok = false, job = id, error = 'the job was taken ' .. attempts ..
        ' times and no worker finished it (each died or hung); check the workers\\' logs'})
      redis.call('SET', ARGV[2] .. id, msg, 'EX', ARGV[5])
      redis.call('DEL', job)
      redis.call('RPUSH', ARGV[4] .. id, '1')
      redis.call('EXPIRE', ARGV[4] .. id, ARGV[5])
    else
      redis.call('LPUSH', KEYS[2], id)
      requeued = requeued + 1
    end
  end
end
if requeued > 0 then redis.call('RPUSH', KEYS[3], '1') end
return requeued
"""


class RemoteTimeout(UserError):
    """No worker answered a job in time."""


class JobLost(Exception):
    """The server no longer holds a job that has no result (it restarted without its data): submit it again."""


def cache_key(*, digest: str, device: str, runtime: str, threads: int, batch: int) -> str:
    """The cache key of a result: the job's digest (its models and settings), device, runtime, threads, batch."""
    return f"{digest}:{device}:{runtime}:{threads}:{batch}"


@dataclass(frozen=True)
class DeviceInfo:
    """A registered device as ``prunegym device list`` shows it.

    Args:
        name: the device's name.
        record: what its worker registered (host record, runtime, threads).
        workers: workers that sent a heartbeat lately.
        pending: jobs waiting.
        running: jobs leased to a worker now.
        done: results recorded.
        cache_hits: jobs answered from the cache.
    """

    name: str
    record: Mapping[str, Any]
    workers: int
    pending: int
    running: int
    done: int
    cache_hits: int


def _redis_module() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise UserError(REMOTE_MISSING) from exc
    return redis


class DeviceQueue:
    """Jobs for named devices in one Redis server.

    Args:
        url: the server, ``redis://[:password@]host:port/db``; without a password in it, the one in the
            ``PRUNEGYM_REDIS_PASSWORD`` environment variable (so that run folders' config.yaml holds no secret).
        prefix: the key prefix (several setups can share a server).
        visibility_timeout: seconds a claimed job stays leased without a heartbeat before it is re-queued.
        max_attempts: claims after which a job nobody finishes gets an error result.

    Raises:
        UserError: redis-py missing, or a URL it cannot parse.
    """

    def __init__(
        self, url: str, *, prefix: str = "prunegym", visibility_timeout: float = 30.0, max_attempts: int = 3
    ) -> None:
        redis = _redis_module()
        self.url = url
        try:
            extra = {}
            if os.environ.get("PRUNEGYM_REDIS_PASSWORD") and "@" not in url:
                extra["password"] = os.environ["PRUNEGYM_REDIS_PASSWORD"]
            self.redis = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=10, **extra)
        except ValueError as exc:
            raise UserError(f"bad Redis URL {url!r} ({exc}); use redis://[:PASSWORD@]HOST:PORT/DB") from exc
        self.prefix = prefix
        self.visibility_ms = max(100, int(visibility_timeout * 1000))
        self.max_attempts = max_attempts
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.AuthenticationError)
        # what a server that went away (restart, network cut, still loading its data) raises mid-run
        self.connection_errors: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        )
        self._claim = self.redis.register_script(_CLAIM)
        self._renew = self.redis.register_script(_RENEW)
        self._record = self.redis.register_script(_RECORD)
        self._reap = self.redis.register_script(_REAP)

    # ------------------------------------------------------------------------------------------------ keys

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _dev(self, device: str, what: str) -> str:
        return self._k("dev", device, what)

    def ping(self) -> None:
        """Raise a one-line UserError unless the server answers."""
        try:
            self.redis.ping()
        except self._errors as exc:
            raise UserError(f"cannot reach Redis at {self._safe_url()} ({exc}); start it or fix --redis") from exc

    def reconnect(self, *, timeout: float, cause: BaseException) -> None:
        """Wait up to ``timeout`` seconds for the server to answer again after ``cause`` (one of
        :attr:`connection_errors`), retrying with a growing pause.

        Raises:
            UserError: it did not come back in time (one line: what was lost, and what to do).
        """
        log.warning("lost Redis at %s (%s); retrying for up to %g s", self._safe_url(), cause, timeout)
        deadline = time.monotonic() + timeout
        pause = 0.1
        while True:
            try:
                self.redis.ping()
            except (*self.connection_errors, *self._errors) as exc:
                cause = exc
            else:
                log.info("Redis at %s answers again", self._safe_url())
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise UserError(
                    f"lost the connection to Redis at {self._safe_url()} and it did not come back in {timeout:g} s "
                    f"({cause}); start it again and rerun (a search continues with --resume)"
                ) from cause
            time.sleep(min(pause, left))
            pause = min(pause * 2, 2.0)

    def known(self, job: str) -> bool:
        """Whether the server still holds ``job`` or its result (a server restarted without its data holds
        neither)."""
        return bool(self.redis.exists(self._k("job", job), self._k("result", job)))

    def _safe_url(self) -> str:
        if "@" not in self.url:
            return self.url
        scheme, rest = self.url.split("://", 1) if "://" in self.url else ("redis", self.url)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"

    # ------------------------------------------------------------------------------------------ devices

    def register(self, device: str, *, record: Mapping[str, Any], worker: str) -> None:
        """Register ``device`` (its record replaces an older one) and ``worker`` as serving it."""
        self.redis.hset(self._k("devices"), device, json.dumps({**record, "registered": time.time()}))
        self.heartbeat(device, worker=worker)

    def heartbeat(self, device: str, *, worker: str, job: str = "") -> None:
        """Say ``worker`` is alive and extend the lease of its ``job`` and of the device lock it holds."""
        beat = json.dumps({"time": time.time(), "job": job, "host": socket.gethostname(), "pid": os.getpid()})
        self.redis.hset(self._dev(device, "workers"), worker, beat)
        self._renew(
            keys=[self._dev(device, "leases"), self._dev(device, "lock")], args=[job, worker, self.visibility_ms]
        )

    def unregister_worker(self, device: str, *, worker: str) -> None:
        """Remove ``worker`` from the device's workers (a clean exit)."""
        self.redis.hdel(self._dev(device, "workers"), worker)

    def device_record(self, device: str) -> dict[str, Any] | None:
        """What the device's worker registered, or None."""
        raw = self.redis.hget(self._k("devices"), device)
        return json.loads(raw) if raw else None

    def live_workers(self, device: str, *, within: float | None = None) -> int:
        """Workers of ``device`` that sent a heartbeat in the last ``within`` seconds (default: the visibility
        timeout)."""
        within = self.visibility_ms / 1000 if within is None else within
        now = time.time()
        beats = self.redis.hvals(self._dev(device, "workers"))
        return sum(1 for b in beats if now - float(json.loads(b)["time"]) <= within)

    def devices(self) -> list[DeviceInfo]:
        """Every registered device with its live workers, queue depth, running jobs and counters."""
        out = []
        for name, raw in sorted(self.redis.hgetall(self._k("devices")).items()):
            dev = name.decode()
            stats = {k.decode(): int(v) for k, v in self.redis.hgetall(self._dev(dev, "stats")).items()}
            out.append(
                DeviceInfo(
                    name=dev,
                    record=json.loads(raw),
                    workers=self.live_workers(dev),
                    pending=int(self.redis.llen(self._dev(dev, "pending"))),
                    running=int(self.redis.zcard(self._dev(dev, "leases"))),
                    done=stats.get("done", 0),
                    cache_hits=stats.get("cache_hits", 0),
                )
            )
        return out

    # ------------------------------------------------------------------------------------------- client

    def cached(self, key: str, *, device: str) -> dict[str, Any] | None:
        """The cached result under ``key`` (counted as a cache hit of ``device``), or None."""
        raw = self.redis.get(self._k("cache", key))
        if raw is None:
            return None
        self.redis.hincrby(self._dev(device, "stats"), "cache_hits", 1)
        return json.loads(raw)

    def submit(self, device: str, payload: bytes, *, key: str = "") -> str:
        """Queue ``payload`` for ``device``; its result will be cached under ``key`` (empty: not cached).

        Returns:
            The job id.
        """
        job = uuid.uuid4().hex
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._k("job", job), mapping={"payload": payload, "cache": key, "device": device, "attempts": 0})
        pipe.expire(self._k("job", job), RESULT_TTL_S)
        pipe.rpush(self._dev(device, "pending"), job)
        pipe.rpush(self._dev(device, "wake"), "1")
        pipe.execute()
        return job

    def result(self, job: str) -> dict[str, Any] | None:
        """The recorded result of ``job``, or None."""
        raw = self.redis.get(self._k("result", job))
        return json.loads(raw) if raw else None

    def wait(self, device: str, job: str, *, timeout: float) -> dict[str, Any]:
        """Block until ``job`` has a result, re-queueing expired leases meanwhile.

        Raises:
            RemoteTimeout: no result within ``timeout`` seconds (the job is withdrawn).
            JobLost: the server forgot the job (a restart without its data).
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.result(job)
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.redis.blpop([self._k("done", job)], timeout=max(0.01, min(1.0, left)))
            self.reap(device)
            if not self.known(job):
                raise JobLost(job)
        self.redis.lrem(self._dev(device, "pending"), 0, job)
        self.redis.delete(self._k("job", job))
        found = self.result(job)
        if found is not None:
            return found
        live = self.live_workers(device)
        why = (
            f"{live} worker(s) are serving it but did not finish in time; raise the timeout or add workers"
            if live
            else f"no worker is serving it; start one on the device: prunegym device serve --redis URL --name {device}"
        )
        raise RemoteTimeout(f"no result from device {device!r} after {timeout:g} s: {why}")

    def wait_for_device(self, device: str, *, timeout: float) -> dict[str, Any]:
        """The device's record, waiting up to ``timeout`` seconds for a worker to register it.

        Raises:
            RemoteTimeout: no worker registered ``device`` in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            record = self.device_record(device)
            if record is not None:
                return record
            if time.monotonic() >= deadline:
                raise RemoteTimeout(
                    f"no worker has registered device {device!r} after {timeout:g} s; start one on the device: "
                    f"prunegym device serve --redis URL --name {device}"
                )
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    # ------------------------------------------------------------------------------------------- worker

    def claim(self, device: str, *, worker: str, wait: float = 1.0) -> tuple[str, int] | None:
        """Take the next job of ``device`` with its lock and a lease, waiting up to ``wait`` seconds for one.

        Returns:
            ``(job id, attempt number)``, or None when there is none (or another worker holds the device).
        """
        keys = [self._dev(device, "pending"), self._dev(device, "leases"), self._dev(device, "lock")]
        got = self._claim(keys=keys, args=[worker, self.visibility_ms, self._k("job", "")])
        if got is None:
            self.redis.blpop([self._dev(device, "wake")], timeout=max(0.01, wait))
            got = self._claim(keys=keys, args=[worker, self.visibility_ms, self._k("job", "")])
        if got is None:
            return None
        return got[0].decode(), int(got[1])

    def payload_size(self, job: str) -> int:
        """Bytes of the job's payload (0 when the job is gone), read without reading the payload."""
        return int(self.redis.hstrlen(self._k("job", job), "payload"))

    def payload(self, job: str) -> tuple[bytes | None, str]:
        """The job's payload (None when the job is gone) and its cache key."""
        payload, key = self.redis.hmget(self._k("job", job), ["payload", "cache"])
        return payload, (key or b"").decode()

    def record(self, device: str, job: str, *, result: Mapping[str, Any], worker: str, cache: str = "") -> bool:
        """Record ``result`` for ``job`` unless one is recorded already; release the lease and the device lock.

        Args:
            device: the device.
            job: the job id.
            result: the JSON-ready result (``ok`` true, or false with ``error``).
            worker: the worker recording it (its lock is released).
            cache: the cache key to store a successful result under (empty: none).

        Returns:
            Whether this call recorded it (False: another worker had).
        """
        keys = [
            self._k("result", job),
            self._dev(device, "leases"),
            self._dev(device, "lock"),
            self._k("done", job),
            self._k("job", job),
            self._dev(device, "stats"),
            self._dev(device, "pending"),
            self._dev(device, "wake"),
        ]
        cache_full = self._k("cache", cache) if cache and result.get("ok") else ""
        counter = "done" if result.get("ok") else "errors"
        args = [job, json.dumps(dict(result)), worker, cache_full, RESULT_TTL_S, counter]
        return bool(self._record(keys=keys, args=args))

    def release(self, device: str, *, worker: str) -> None:
        """Release the device lock if ``worker`` holds it."""
        lock = self._dev(device, "lock")
        if self.redis.get(lock) == worker.encode():
            self.redis.delete(lock)

    def reap(self, device: str) -> int:
        """Re-queue the jobs whose lease expired (a dead worker's); error out those taken ``max_attempts`` times.

        Returns:
            Jobs re-queued.
        """
        keys = [self._dev(device, "leases"), self._dev(device, "pending"), self._dev(device, "wake")]
        args = [self._k("job", ""), self._k("result", ""), self.max_attempts, self._k("done", ""), RESULT_TTL_S]
        return int(self._reap(keys=keys, args=args))
