"""ONNX Runtime sessions: execution providers, thread and graph-optimization settings, random feeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
    NotImplemented,
)

from prunegym.core.errors import UserError

__all__ = [
    "GRAPH_OPTIMIZATIONS",
    "PROVIDER_ALIASES",
    "OnnxSource",
    "SessionLike",
    "as_session",
    "check_graph_optimization",
    "make_session",
    "random_input",
    "resolve_provider",
]

GRAPH_OPTIMIZATIONS: dict[str, ort.GraphOptimizationLevel] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
PROVIDER_ALIASES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}
_LOAD_ERRORS = (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile, NotImplemented)

OnnxSource = Path | str | bytes  # an ONNX file, or a serialized model
SessionLike = OnnxSource | ort.InferenceSession


def resolve_provider(provider: str) -> str:
    """The full name of an available execution provider.

    Args:
        provider: a full name ("CPUExecutionProvider") or a short alias ("cpu", "cuda", "openvino", ...).

    Returns:
        The provider's full name.

    Raises:
        UserError: the provider is not available in this onnxruntime (the message lists those that are).
    """
    name = PROVIDER_ALIASES.get(provider.lower(), provider)
    available = ort.get_available_providers()
    if name not in available:
        raise UserError(
            f"execution provider {provider!r} is not available in this onnxruntime; use one of {', '.join(available)}"
        )
    return name


def check_graph_optimization(level: str) -> None:
    """Raise UserError unless ``level`` is a key of :data:`GRAPH_OPTIMIZATIONS`.

    Args:
        level: "disable", "basic", "extended" or "all".

    Raises:
        UserError: an unknown level (the message lists the known ones).
    """
    if level not in GRAPH_OPTIMIZATIONS:
        raise UserError(f"unknown graph_optimization {level!r}; use one of {', '.join(GRAPH_OPTIMIZATIONS)}")


def make_session(
    model: OnnxSource,
    *,
    provider: str = "CPUExecutionProvider",
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
    graph_optimization: str = "all",
) -> ort.InferenceSession:
    """An InferenceSession with fixed thread counts, sequential execution and the given graph optimizations.

    ONNX Runtime's own log is limited to errors (its warnings about unused initializers are noise here).

    Args:
        model: an ONNX file or a serialized model.
        provider: execution provider, full name or alias (see :func:`resolve_provider`).
        intra_op_threads: threads inside one operator.
        inter_op_threads: threads across operators.
        graph_optimization: a key of :data:`GRAPH_OPTIMIZATIONS`.

    Returns:
        The session.

    Raises:
        UserError: an unavailable provider, an unknown optimization level, a missing file, or a model that
            ONNX Runtime cannot load.
    """
    name = resolve_provider(provider)
    check_graph_optimization(graph_optimization)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = GRAPH_OPTIMIZATIONS[graph_optimization]
    opts.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise UserError(f"ONNX model not found: {model}; check the path")
    try:
        return ort.InferenceSession(source, opts, providers=[name])
    except _LOAD_ERRORS as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        label = "<bytes>" if isinstance(model, bytes) else str(model)
        raise UserError(f"ONNX Runtime cannot load {label}: {first}; re-export the model") from exc


def as_session(model: SessionLike, *, threads: int = 1, provider: str = "CPUExecutionProvider") -> ort.InferenceSession:
    """``model`` itself when it is a session, else a :func:`make_session` with ``threads`` intra-op threads.

    Args:
        model: an open session, an ONNX file or a serialized model.
        threads: intra-op threads of a new session (one inter-op thread, all graph optimizations).
        provider: execution provider of a new session.

    Returns:
        The session.
    """
    if isinstance(model, ort.InferenceSession):
        return model
    return make_session(model, provider=provider, intra_op_threads=threads)


def random_input(
    session: ort.InferenceSession, *, batch_size: int, input_shape: Sequence[int] | None = None, seed: int = 0
) -> np.ndarray:
    """A seeded standard-normal batch for the session's first input (float16 when the model takes it).

    Args:
        session: the session to feed.
        batch_size: the batch dimension.
        input_shape: C×H×W; may be omitted when the model's non-batch dimensions are static.
        seed: seeds the generator.

    Returns:
        An array of shape ``(batch_size, *input_shape)``.

    Raises:
        UserError: dynamic dims and no ``input_shape``, a shape of the wrong rank, or a fixed batch dimension
            other than ``batch_size``.
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
