"""Measured latency: an ONNX Runtime session with fixed threads, warm-up, then the median of K timed runs.

The session builder (:func:`make_session`) and the timing loop (:func:`time_runs`) are shared with
``prunegym.deploy.benchmark``. The module itself imports torch only inside :func:`measure_model_latency`.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NotImplemented

from prunegym.core.errors import UserError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "GRAPH_OPTIMIZATIONS",
    "LatencyConfig",
    "LatencyResult",
    "make_session",
    "measure_latency",
    "measure_model_latency",
    "random_input",
    "resolve_provider",
    "summarize_ms",
    "time_runs",
]

log = logging.getLogger(__name__)

GRAPH_OPTIMIZATIONS: dict[str, ort.GraphOptimizationLevel] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}

OnnxSource = Path | str | bytes


@dataclass(frozen=True)
class LatencyConfig:
    """How to measure: provider, threads, batch size, warm-up runs, timed runs, graph optimization level."""

    provider: str = "CPUExecutionProvider"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    batch_size: int = 1
    warmup: int = 10
    repeats: int = 50
    graph_optimization: str = "all"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads", "batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise UserError(f"latency {name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise UserError(f"latency warmup must be >= 0, got {self.warmup}")
        if self.graph_optimization not in GRAPH_OPTIMIZATIONS:
            raise UserError(
                f"unknown graph_optimization {self.graph_optimization!r}; use one of {', '.join(GRAPH_OPTIMIZATIONS)}"
            )


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one batch in milliseconds: median and spread over ``repeats`` timed runs."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    iqr_ms: float
    min_ms: float
    repeats: int
    batch_size: int
    provider: str
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(self).items()}


def resolve_provider(provider: str) -> str:
    """The full name of an available execution provider ("cpu" → "CPUExecutionProvider"), else UserError."""
    name = _PROVIDER_ALIASES.get(provider.lower(), provider)
    available = ort.get_available_providers()
    if name not in available:
        raise UserError(
            f"execution provider {provider!r} is not available in this onnxruntime; use one of {', '.join(available)}"
        )
    return name


def make_session(
    model: OnnxSource,
    *,
    provider: str = "CPUExecutionProvider",
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
    graph_optimization: str = "all",
) -> ort.InferenceSession:
    """An InferenceSession with fixed thread counts, sequential execution and the given graph optimizations."""
    name = resolve_provider(provider)
    if graph_optimization not in GRAPH_OPTIMIZATIONS:
        raise UserError(
            f"unknown graph_optimization {graph_optimization!r}; use one of {', '.join(GRAPH_OPTIMIZATIONS)}"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = GRAPH_OPTIMIZATIONS[graph_optimization]
    opts.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    source = model if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise UserError(f"ONNX model not found: {model}; check the path")
    try:
        return ort.InferenceSession(source, opts, providers=[name])
    except (Fail, InvalidGraph, InvalidProtobuf, NotImplemented) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        label = "<bytes>" if isinstance(model, bytes) else str(model)
        raise UserError(f"ONNX Runtime cannot load {label}: {first}; re-export the model") from exc


def random_input(
    session: ort.InferenceSession, *, batch_size: int, input_shape: Sequence[int] | None = None, seed: int = 0
) -> np.ndarray:
    """A seeded random batch for the session's first input: ``batch_size`` × ``input_shape`` (C×H×W).

    ``input_shape`` may be omitted when the model's non-batch dimensions are static.
    """
    meta = session.get_inputs()[0]
    dims = list(meta.shape)
    if input_shape is None:
        if not all(isinstance(d, int) for d in dims[1:]):
            raise UserError(f"model input {meta.name} has dynamic dims {dims}; pass input_shape, e.g. (3, 32, 32)")
        input_shape = [int(d) for d in dims[1:]]
    input_shape = [int(d) for d in input_shape]
    if len(input_shape) != len(dims) - 1:
        raise UserError(f"input_shape {tuple(input_shape)} does not fit model input {meta.name} of shape {dims}")
    if isinstance(dims[0], int) and dims[0] != batch_size:
        raise UserError(
            f"model input {meta.name} has a fixed batch of {dims[0]}, not {batch_size}; "
            f"export with dynamic_batch=True or use batch_size={dims[0]}"
        )
    dtype = np.float16 if meta.type == "tensor(float16)" else np.float32
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch_size, *input_shape)).astype(dtype)


def time_runs(session: ort.InferenceSession, feed: np.ndarray, *, warmup: int, repeats: int) -> np.ndarray:
    """Run ``warmup`` untimed then ``repeats`` timed inferences; per-run wall times in milliseconds.

    Inputs and outputs are bound once (IO binding), so the loop times ``run`` and little else; the Python
    garbage collector is paused while timing.
    """
    binding = session.io_binding()
    binding.bind_cpu_input(session.get_inputs()[0].name, feed)
    for out in session.get_outputs():
        binding.bind_output(out.name)
    run: Callable[[Any], None] = session.run_with_iobinding
    for _ in range(warmup):
        run(binding)
    times = np.empty(repeats, dtype=np.float64)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            t0 = time.perf_counter()
            run(binding)
            times[i] = time.perf_counter() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    return times * 1e3


def summarize_ms(times_ms: np.ndarray, *, batch_size: int, provider: str, threads: int) -> LatencyResult:
    """Median, p90, mean, std, IQR and min of per-run times in milliseconds."""
    q25, q50, q75, q90 = np.percentile(times_ms, [25, 50, 75, 90])
    return LatencyResult(
        median_ms=float(q50),
        p90_ms=float(q90),
        mean_ms=float(np.mean(times_ms)),
        std_ms=float(np.std(times_ms, ddof=1)) if len(times_ms) > 1 else 0.0,
        iqr_ms=float(q75 - q25),
        min_ms=float(np.min(times_ms)),
        repeats=len(times_ms),
        batch_size=batch_size,
        provider=provider,
        threads=threads,
    )


def measure_latency(
    onnx_model: OnnxSource, *, input_shape: Sequence[int] | None = None, config: LatencyConfig | None = None
) -> LatencyResult:
    """Latency of one batch of ``config.batch_size`` × ``input_shape`` (C×H×W) for an ONNX file or bytes."""
    config = config or LatencyConfig()
    session = make_session(
        onnx_model,
        provider=config.provider,
        intra_op_threads=config.intra_op_threads,
        inter_op_threads=config.inter_op_threads,
        graph_optimization=config.graph_optimization,
    )
    feed = random_input(session, batch_size=config.batch_size, input_shape=input_shape, seed=config.seed)
    times = time_runs(session, feed, warmup=config.warmup, repeats=config.repeats)
    result = summarize_ms(
        times, batch_size=config.batch_size, provider=session.get_providers()[0], threads=config.intra_op_threads
    )
    log.debug(
        "latency %.3f ms median (p90 %.3f, IQR %.3f) over %d runs",
        result.median_ms,
        result.p90_ms,
        result.iqr_ms,
        result.repeats,
    )
    return result


def measure_model_latency(
    model: nn.Module,
    *,
    input_shape: Sequence[int],
    config: LatencyConfig | None = None,
    opset: int = 17,
) -> LatencyResult:
    """Export ``model`` to ONNX in a temporary folder (not verified: only its speed matters) and measure it."""
    from prunegym.core.onnx_export import export_onnx

    with tempfile.TemporaryDirectory(prefix="prunegym-latency-") as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", input_shape=input_shape, opset=opset, verify=False)
        return measure_latency(path, input_shape=input_shape, config=config)
