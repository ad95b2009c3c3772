"""Latency cost models for the environment: measured on the device, or predicted from a profiled table.

Both answer ``latency_ms(model=..., ratios=..., kept=...)`` for a candidate and know the unpruned model's
``baseline_ms``; both cache by the candidate's channel counts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from torch import nn

from prunegym.env.latency import LatencyConfig, measure_model_latency

log = logging.getLogger(__name__)


class LatencyModel(Protocol):
    baseline_ms: float
    needs_model: bool

    def latency_ms(self, *, model: nn.Module | None, ratios: Mapping[str, float], kept: tuple[int, ...]) -> float: ...


class MeasuredLatency:
    """Export each candidate to ONNX and time it with ONNX Runtime (median of ``config.repeats`` runs)."""

    needs_model = True

    def __init__(self, *, base_model: nn.Module, input_shape: tuple[int, int, int], config: LatencyConfig) -> None:
        self.input_shape = tuple(input_shape)
        self.config = config
        self._cache: dict[tuple[int, ...], float] = {}
        self.baseline_ms = measure_model_latency(base_model, input_shape=self.input_shape, config=config).median_ms
        log.info("baseline latency %.3f ms (%s, %d thread(s), batch %d)", self.baseline_ms, config.provider,
                 config.intra_op_threads, config.batch_size)  # fmt: skip

    def latency_ms(self, *, model: nn.Module | None, ratios: Mapping[str, float], kept: tuple[int, ...]) -> float:
        if kept in self._cache:
            return self._cache[kept]
        if model is None:
            raise ValueError("MeasuredLatency needs the pruned model of an uncached candidate")
        ms = measure_model_latency(model, input_shape=self.input_shape, config=self.config).median_ms
        self._cache[kept] = ms
        return ms
