"""Remote latency: each candidate is timed on a device served by ``prunegym device serve``, through Redis.

Like :class:`~prunegym.env.latency.measured.MeasuredLatency`, but the interleaved rounds run on the device: every
job carries the unpruned model and the candidate, so the speed-up ratio is measured on the device itself, in one
run; the device's worker caches results by (models, device, runtime, threads, batch), so a repeated candidate
costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import nn

from prunegym.core.onnx_export import export_onnx_bytes
from prunegym.core.onnxrt import LatencyConfig
from prunegym.core.remote import JobSpec, RemoteDevice
from prunegym.env.latency.measured import InterleavedLatency

__all__ = ["RemoteLatency", "device_round_to"]

log = logging.getLogger(__name__)


def device_round_to(record: Mapping[str, object]) -> int:
    """The channel block of a device's runtime from its host record (or a table's device info): 16 with AVX-512,
    8 with AVX2, else 1 (ONNX Runtime's NCHWc and OpenVINO's blocked layouts alike)."""
    flags = set(record.get("cpu_flags") or ())  # type: ignore[call-overload]
    if str(record.get("arch", record.get("machine", ""))).lower() not in {"x86_64", "amd64"}:
        return 1
    if "avx512f" in flags:
        return 16
    return 8 if "avx2" in flags else 1


class RemoteLatency(InterleavedLatency):
    """Time each candidate on a remote device against the unpruned model, interleaved there.

    Args:
        base_model: the unpruned model.
        input_shape: C×H×W of one input.
        config: batch, warm-up and runs per measurement (threads and runtime are the worker's).
        device: the device's name.
        redis: the Redis URL its worker listens on.
        runtime: the runtime the search expects the device to run (checked against its worker).
        timeout: seconds to wait for the device and for each result.
        rounds: interleaved rounds per candidate.
        clock: ``auto``, ``cpu`` or ``wall`` (on the device).
    """

    def __init__(
        self,
        *,
        base_model: nn.Module,
        input_shape: tuple[int, int, int],
        config: LatencyConfig,
        device: str,
        redis: str,
        runtime: str | None = None,
        timeout: float = 600.0,
        rounds: int = 5,
        clock: str = "auto",
    ) -> None:
        self.input_shape = tuple(input_shape)
        self.device = RemoteDevice(redis=redis, device=device, runtime=runtime, timeout=timeout)
        self.rounds = max(1, rounds)
        self.clock = clock
        self.config = config
        self._cache: dict[tuple[tuple[int, ...], tuple[str, ...]], float] = {}
        self._base = export_onnx_bytes(base_model, input_shape=self.input_shape)
        first = self.device.run([self._base], spec=self._spec(models=1, repeats=config.repeats * 2))
        self.baseline_ms = float(first["result"]["median_ms"][first["result"]["clock"]][0])
        self.spread: list[float] = []
        log.info(
            "baseline latency %.3f ms on device %s (%s %s, %d thread(s), batch %d, %s clock)",
            self.baseline_ms,
            device,
            self.device.runtime,
            self.device.record.get("runtime_version"),
            self.device.threads,
            config.batch_size,
            first["result"]["clock"],
        )

    def _spec(self, *, models: int, repeats: int) -> JobSpec:
        return JobSpec(
            kind="latency",
            input_shapes=(self.input_shape,) * models,
            batch=self.config.batch_size,
            warmup=self.config.warmup,
            repeats=repeats,
            rounds=self.rounds,
            clock=self.clock,
        )

    def ratio_to_baseline(self, candidate: bytes) -> tuple[float, float]:
        """``(median per-round time ratio candidate / baseline, its coefficient of variation)``, on the device."""
        result = self.device.run([self._base, candidate], spec=self._spec(models=2, repeats=self.config.repeats))
        ratio, cv = result["result"]["ratio_to_first"][1]
        return float(ratio), float(cv)

    def noisy(self, cv: float) -> None:
        log.warning("latency spread %.0f%% on device %s: the device is busy", 100 * cv, self.device.device)
