"""prunegym.core.onnxrt: the one ONNX Runtime layer (sessions, random feeds, timing on two clocks, interleaved rounds).

Needs only numpy, onnxruntime and the standard library (never torch), so the deployed-bundle runtime
(:mod:`prunegym.deploy.runtime`) and the benchmark run where PyTorch is not installed.
"""

from __future__ import annotations

from prunegym.core.onnxrt.interleaved import (
    NOISY_CV,
    ROTATION_STEP,
    Interleaved,
    InterleavedTimes,
    measure_interleaved,
    rotated_order,
    round_ratio,
)
from prunegym.core.onnxrt.machine import ISA_FLAGS, cpu_flags, cpu_name, machine_description
from prunegym.core.onnxrt.session import (
    GRAPH_OPTIMIZATIONS,
    PROVIDER_ALIASES,
    OnnxSource,
    SessionLike,
    as_session,
    check_graph_optimization,
    make_session,
    random_input,
    resolve_provider,
)
from prunegym.core.onnxrt.timing import (
    CLOCKS,
    LatencyConfig,
    LatencyResult,
    measure_latency,
    resolve_clock,
    session_and_feed,
    summarize_ms,
    time_runs,
    time_runs_both,
)

__all__ = [
    "CLOCKS",
    "GRAPH_OPTIMIZATIONS",
    "ISA_FLAGS",
    "NOISY_CV",
    "PROVIDER_ALIASES",
    "ROTATION_STEP",
    "Interleaved",
    "InterleavedTimes",
    "LatencyConfig",
    "LatencyResult",
    "OnnxSource",
    "SessionLike",
    "as_session",
    "check_graph_optimization",
    "cpu_flags",
    "cpu_name",
    "machine_description",
    "make_session",
    "measure_interleaved",
    "measure_latency",
    "random_input",
    "resolve_clock",
    "resolve_provider",
    "rotated_order",
    "round_ratio",
    "session_and_feed",
    "summarize_ms",
    "time_runs",
    "time_runs_both",
]
