"""prunegym.core.onnxrt: the one runtime layer (sessions on ONNX Runtime or OpenVINO, random feeds, timing on two
clocks, interleaved rounds, the host record).

Needs only numpy, onnxruntime, onnx and the standard library (never torch; OpenVINO when asked for), so the deployed-bundle runtime
(:mod:`prunegym.deploy.runtime`) and the benchmark run where PyTorch is not installed.
"""

from __future__ import annotations

from prunegym.core.onnxrt.host import host_record
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
from prunegym.core.onnxrt.runtime import (
    OPENVINO_MISSING,
    RUNTIME_LABELS,
    RUNTIMES,
    OpenVinoSession,
    SessionAny,
    bound_run,
    check_runtime,
    model_bytes,
    model_precision,
    model_sha256,
    open_model,
    runtime_info,
    runtime_version,
)
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
    "OPENVINO_MISSING",
    "PROVIDER_ALIASES",
    "ROTATION_STEP",
    "RUNTIMES",
    "RUNTIME_LABELS",
    "Interleaved",
    "InterleavedTimes",
    "LatencyConfig",
    "LatencyResult",
    "OnnxSource",
    "OpenVinoSession",
    "SessionAny",
    "SessionLike",
    "as_session",
    "bound_run",
    "check_graph_optimization",
    "check_runtime",
    "cpu_flags",
    "cpu_name",
    "host_record",
    "machine_description",
    "make_session",
    "measure_interleaved",
    "measure_latency",
    "model_bytes",
    "model_precision",
    "model_sha256",
    "open_model",
    "random_input",
    "resolve_clock",
    "resolve_provider",
    "rotated_order",
    "round_ratio",
    "runtime_info",
    "runtime_version",
    "session_and_feed",
    "summarize_ms",
    "time_runs",
    "time_runs_both",
]
