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

from prunegym.core.onnx_export import export_onnx
from prunegym.core.onnxrt import LatencyConfig, LatencyResult, measure_latency

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


class MeasuredLatency:
    """Export each candidate to ONNX and time it with ONNX Runtime (median of ``config.repeats`` runs).

    Args:
        base_model: the unpruned model (measured once, for ``baseline_ms``).
        input_shape: C×H×W of one input.
        config: how to measure.
    """

    needs_model = True

    def __init__(self, *, base_model: nn.Module, input_shape: tuple[int, int, int], config: LatencyConfig) -> None:
        self.input_shape = tuple(input_shape)
        self.config = config
        self._cache: dict[tuple[tuple[int, ...], tuple[str, ...]], float] = {}
        self.baseline_ms = measure_model_latency(base_model, input_shape=self.input_shape, config=config).median_ms
        log.info(
            "baseline latency %.3f ms (%s, %d thread(s), batch %d)",
            self.baseline_ms,
            config.provider,
            config.intra_op_threads,
            config.batch_size,
        )

    def latency_ms(
        self,
        *,
        model: nn.Module | None,
        ratios: Mapping[str, float],
        kept: tuple[int, ...],
        removed: Sequence[str] = (),
    ) -> float:
        """The measured median latency (ms) of a candidate, cached by its kept channel counts and removed blocks.

        Args:
            model: the pruned model; needed unless the candidate is cached.
            ratios: the candidate's ratios (not used).
            kept: the candidate's kept channel counts (with ``removed``, the cache key).
            removed: the candidate's removed blocks.

        Returns:
            The median latency in ms.

        Raises:
            ValueError: an uncached candidate without its model.
        """
        key = (kept, tuple(sorted(removed)))
        if key in self._cache:
            return self._cache[key]
        if model is None:
            raise ValueError("MeasuredLatency needs the pruned model of an uncached candidate")
        ms = measure_model_latency(model, input_shape=self.input_shape, config=self.config).median_ms
        self._cache[key] = ms
        return ms
