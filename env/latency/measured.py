"""Measured latency: export a model to ONNX and time it with ONNX Runtime; the env's latency-model protocol.

Both latency models of the environment (:class:`MeasuredLatency` here, and
:class:`~prunegym.env.latency.predict.PredictedLatency` from a profiled table) answer
``latency_ms(model=..., ratios=..., kept=...)`` for a candidate and know the unpruned model's ``baseline_ms``;
both cache by the candidate's channel counts.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from torch import nn

from prunegym.core.onnx_export import export_onnx, export_onnx_bytes
from prunegym.core.onnxrt import (
    NOISY_CV,
    LatencyConfig,
    LatencyResult,
    measure_interleaved,
    measure_latency,
    resolve_clock,
    round_ratio,
)

__all__ = ["LatencyModel", "MeasuredLatency", "measure_model_latency"]

log = logging.getLogger(__name__)


class LatencyModel(Protocol):
    """What the environment asks of a latency model.

    Attributes:
        baseline_ms: the unpruned model's latency.
        needs_model: whether :meth:`latency_ms` needs the pruned model (else the channel counts suffice).
    """

    baseline_ms: float
    needs_model: bool

    def latency_ms(
        self,
        *,
        model: nn.Module | None,
        ratios: Mapping[str, float],
        kept: tuple[int, ...],
        removed: Sequence[str] = (),
    ) -> float:
        """Latency (ms) of a candidate: its pruned model (or None), ratios, kept channel counts, removed blocks."""
        ...


def measure_model_latency(
    model: nn.Module,
    *,
    input_shape: Sequence[int],
    config: LatencyConfig | None = None,
    opset: int = 17,
) -> LatencyResult:
    """Export ``model`` to ONNX in a temporary folder (not verified: only its speed matters) and measure it.

    Args:
        model: the PyTorch model.
        input_shape: C×H×W of one input.
        config: how to measure; defaults to :class:`~prunegym.core.onnxrt.LatencyConfig`'s.
        opset: the ONNX opset of the export.

    Returns:
        The latency summary of :func:`~prunegym.core.onnxrt.measure_latency`.
    """
    with tempfile.TemporaryDirectory(prefix="prunegym-latency-") as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", input_shape=input_shape, opset=opset, verify=False)
        return measure_latency(path, input_shape=input_shape, config=config)


class InterleavedLatency:
    """What every measured cost model shares: candidates timed against the unpruned model in interleaved rounds,
    reported as ``ratio × baseline_ms`` and cached by their kept channel counts and removed blocks.

    Subclasses set ``input_shape``, ``baseline_ms``, ``spread``, ``_cache`` and implement
    :meth:`ratio_to_baseline` (where the rounds run) and :meth:`noisy` (what a spread above :data:`NOISY_CV` says).
    """

    needs_model = True
    input_shape: tuple[int, ...]
    baseline_ms: float
    spread: list[float]
    _cache: dict[tuple[tuple[int, ...], tuple[str, ...]], float]

    def ratio_to_baseline(self, candidate: bytes) -> tuple[float, float]:
        """``(median per-round time ratio candidate / baseline, its coefficient of variation)``."""
        raise NotImplementedError

    def noisy(self, cv: float) -> None:
        """Say that a measurement's per-round spread ``cv`` is too large to trust."""
        raise NotImplementedError

    def latency_ms(
        self,
        *,
        model: nn.Module | None,
        ratios: Mapping[str, float],
        kept: tuple[int, ...],
        removed: Sequence[str] = (),
    ) -> float:
        """The measured latency (ms) of a candidate, cached by its kept channel counts and removed blocks.

        Args:
            model: the pruned model; needed unless the candidate is cached.
            ratios: the candidate's ratios (not used).
            kept: the candidate's kept channel counts (with ``removed``, the cache key).
            removed: the candidate's removed blocks.

        Returns:
            ``ratio × baseline_ms`` (see the class).

        Raises:
            ValueError: an uncached candidate without its model.
        """
        key = (kept, tuple(sorted(removed)))
        if key in self._cache:
            return self._cache[key]
        if model is None:
            raise ValueError(f"{type(self).__name__} needs the pruned model of an uncached candidate")
        ratio, cv = self.ratio_to_baseline(export_onnx_bytes(model, input_shape=self.input_shape))
        self.spread.append(cv)
        if cv > NOISY_CV:
            self.noisy(cv)
        ms = ratio * self.baseline_ms
        self._cache[key] = ms
        return ms


class MeasuredLatency(InterleavedLatency):
    """Time each candidate on the device against the unpruned model, interleaved in one run.

    Every candidate is exported to ONNX and timed in ``rounds`` rounds that alternate it with the unpruned
    model, on ``clock`` (``auto``: the inference thread's CPU time with the CPU provider at one thread, immune
    to time-slicing by neighbours; else the wall clock). The candidate's latency is reported as
    ``ratio × baseline_ms``, where ``ratio`` is the median of its per-round time ratios to the baseline and
    ``baseline_ms`` the baseline's median over a longer first measurement: a busy machine slows both models of a
    round alike, so the ratio (the reward and budget the search uses) stays trustworthy. A per-round spread
    above :data:`NOISY_CV` logs a warning.

    Args:
        base_model: the unpruned model.
        input_shape: C×H×W of one input.
        config: provider, threads, batch, warm-up and runs per measurement (``config.repeats``).
        clock: ``auto``, ``cpu`` or ``wall``.
        rounds: interleaved rounds per candidate.
    """

    def __init__(
        self,
        *,
        base_model: nn.Module,
        input_shape: tuple[int, int, int],
        config: LatencyConfig,
        clock: str = "auto",
        rounds: int = 5,
    ) -> None:
        self.input_shape = tuple(input_shape)
        self.config = config
        self.clock = resolve_clock(clock, config=config)
        self.rounds = max(1, rounds)
        self._cache: dict[tuple[tuple[int, ...], tuple[str, ...]], float] = {}
        self._base = export_onnx_bytes(base_model, input_shape=self.input_shape)
        times = measure_interleaved(
            [self._base], input_shapes=[self.input_shape], config=config, rounds=self.rounds, repeats=config.repeats * 2
        )
        self.baseline_ms = float(times.median(self.clock)[0])
        self.spread: list[float] = []
        log.info(
            "baseline latency %.3f ms (%s clock, %s, %d thread(s), batch %d)",
            self.baseline_ms,
            self.clock,
            config.provider,
            config.intra_op_threads,
            config.batch_size,
        )

    def ratio_to_baseline(self, candidate: bytes) -> tuple[float, float]:
        """``(median per-round time ratio candidate / baseline, its coefficient of variation)``."""
        times = measure_interleaved(
            [self._base, candidate],
            input_shapes=[self.input_shape] * 2,
            config=self.config,
            rounds=self.rounds,
            repeats=self.config.repeats,
        )
        per_round = times.round_medians(self.clock)
        return round_ratio(per_round[1], per_round[0])

    def noisy(self, cv: float) -> None:
        log.warning(
            "latency measurement spread %.0f%% over %d rounds: the machine is too busy for this figure; "
            "raise --latency-repeats or measure on a quiet machine",
            100 * cv,
            self.rounds,
        )
