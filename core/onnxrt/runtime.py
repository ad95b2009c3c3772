"""Two runtimes behind one small interface: ONNX Runtime (``ort``) and Intel's OpenVINO (``openvino``).

:func:`open_model` opens an ONNX file or serialized model with N threads on either runtime and returns a session
with the subset of :class:`onnxruntime.InferenceSession` prunegym uses (``get_inputs``, ``get_outputs``,
``get_providers``, ``run``); :func:`bound_run` binds a feed once and returns the zero-argument call the timing
loops time. OpenVINO is optional (``pip install 'prunegym[openvino]'``) and imported only when asked for. FP32
models run on OpenVINO with ``INFERENCE_PRECISION_HINT=f32`` (its default on CPUs with AVX-512-BF16 or AMX is
bf16: faster on some layers, less exact, and not what the model was verified in); INT8 QDQ models are left to
OpenVINO's own low-precision path.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from prunegym.core.errors import UserError
from prunegym.core.onnxrt.session import OnnxSource, make_session

__all__ = [
    "OPENVINO_MISSING",
    "RUNTIMES",
    "RUNTIME_LABELS",
    "OpenVinoSession",
    "SessionAny",
    "bound_run",
    "check_runtime",
    "model_bytes",
    "model_precision",
    "model_sha256",
    "open_model",
    "runtime_info",
    "runtime_version",
]

RUNTIMES = ("ort", "openvino")
RUNTIME_LABELS = {"ort": "ONNX Runtime", "openvino": "OpenVINO"}  # how reports name them
OPENVINO_MISSING = "OpenVINO is not installed; install it with: pip install 'prunegym[openvino]'"
_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def check_runtime(runtime: str) -> None:
    """Raise UserError unless ``runtime`` is one of :data:`RUNTIMES`.

    Args:
        runtime: "ort" or "openvino".
    """
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")


@functools.cache
def _openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise UserError(OPENVINO_MISSING) from exc
    return openvino


def runtime_version(runtime: str) -> str:
    """The installed version of ``runtime`` (OpenVINO's without its build suffix).

    Raises:
        UserError: an unknown runtime, or OpenVINO asked for and not installed.
    """
    check_runtime(runtime)
    if runtime == "ort":
        return ort.__version__
    return str(_openvino().__version__).split("-")[0]


def model_bytes(model: OnnxSource) -> bytes:
    """The serialized model (read from the file when given a path).

    Raises:
        UserError: a missing file.
    """
    if isinstance(model, bytes):
        return model
    path = Path(model)
    if not path.is_file():
        raise UserError(f"ONNX model not found: {model}; check the path")
    return path.read_bytes()


def model_sha256(model: OnnxSource) -> str:
    """The SHA-256 (hex) of the serialized model: what the remote cache is keyed by."""
    return hashlib.sha256(model_bytes(model)).hexdigest()


def model_precision(model: OnnxSource) -> str:
    """``int8`` for a quantized model (QDQ or QOperator nodes), ``fp16`` for a float16 input, else ``fp32``.

    Args:
        model: an ONNX file or a serialized model.
    """
    import onnx

    proto = onnx.load_from_string(model_bytes(model)) if isinstance(model, bytes) else onnx.load(str(model))
    if any(node.op_type in _INT8_OPS for node in proto.graph.node):
        return "int8"
    first = proto.graph.input[0].type.tensor_type.elem_type if proto.graph.input else 1
    return "fp16" if first == onnx.TensorProto.FLOAT16 else "fp32"


@dataclass(frozen=True)
class _IoMeta:
    """What ``InferenceSession.get_inputs()`` items tell: name, shape (str for a dynamic dim), element type."""

    name: str
    shape: list[int | str]
    type: str


_OV_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "i64": "tensor(int64)", "i32": "tensor(int32)"}


def _meta(port: Any, index: int) -> _IoMeta:
    names = port.get_names()
    name = sorted(names)[0] if names else f"io{index}"
    dims: list[int | str] = [
        d.get_length() if d.is_static else f"dim{i}" for i, d in enumerate(port.get_partial_shape())
    ]
    kind = port.get_element_type().get_type_name()
    return _IoMeta(name=name, shape=dims, type=_OV_TYPES.get(kind, f"tensor({kind})"))


class OpenVinoSession:
    """An OpenVINO CPU compiled model behind the part of ``onnxruntime.InferenceSession`` prunegym uses.

    Args:
        model: an ONNX file or a serialized model.
        threads: ``INFERENCE_NUM_THREADS`` (one stream; at 1 thread OpenVINO infers on the calling thread, so the
            thread CPU clock times it as it does ONNX Runtime).
        device: the OpenVINO device ("CPU").

    Raises:
        UserError: OpenVINO not installed, or a model it cannot read.
    """

    def __init__(self, model: OnnxSource, *, threads: int = 1, device: str = "CPU") -> None:
        ov = _openvino()
        core = ov.Core()
        data = model_bytes(model)
        try:
            ov_model = core.read_model(data)
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            label = "<bytes>" if isinstance(model, bytes) else str(model)
            raise UserError(f"OpenVINO cannot read {label}: {first}; re-export the model") from exc
        self.precision = "int8" if any(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ops()) else "f32"
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": int(threads),
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
        }
        if self.precision == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"  # else bf16 on AVX-512-BF16 / AMX CPUs
        self.compiled = core.compile_model(ov_model, device, config)
        self.device = device
        self.threads = int(threads)
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = str(hint.get_type_name() if hasattr(hint, "get_type_name") else hint)
        self._inputs = [_meta(p, i) for i, p in enumerate(self.compiled.inputs)]
        self._outputs = [_meta(p, i) for i, p in enumerate(self.compiled.outputs)]
        self._request = self.compiled.create_infer_request()

    def get_inputs(self) -> list[_IoMeta]:
        """The model's inputs (name, shape, type), as ONNX Runtime reports them."""
        return list(self._inputs)

    def get_outputs(self) -> list[_IoMeta]:
        """The model's outputs."""
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        """``["OpenVINO:CPU"]``: what reports name as the provider."""
        return [f"OpenVINO:{self.device}"]

    def run(self, output_names: Sequence[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Infer one feed; the outputs in the model's order (``output_names`` must be None or all of them)."""
        if output_names is not None and list(output_names) != [o.name for o in self._outputs]:
            raise ValueError("OpenVinoSession.run returns all outputs; pass output_names=None")
        (value,) = feed.values()
        self._request.infer([np.ascontiguousarray(value)])
        return [self._request.get_output_tensor(i).data.copy() for i in range(len(self._outputs))]

    def runner(self, feed: np.ndarray) -> Callable[[], Any]:
        """A zero-argument call inferring ``feed`` on its own request (input bound once, outputs not copied)."""
        ov = _openvino()
        request = self.compiled.create_infer_request()
        request.set_input_tensor(ov.Tensor(np.ascontiguousarray(feed)))
        return request.infer


SessionAny = ort.InferenceSession | OpenVinoSession


def open_model(
    model: OnnxSource,
    *,
    runtime: str = "ort",
    threads: int = 1,
    provider: str = "CPUExecutionProvider",
    inter_op_threads: int = 1,
    graph_optimization: str = "all",
) -> SessionAny:
    """A session of ``model`` on ``runtime`` with ``threads`` threads.

    Args:
        model: an ONNX file or a serialized model.
        runtime: "ort" (ONNX Runtime with ``provider``) or "openvino" (OpenVINO's CPU plugin).
        threads: intra-op threads (ONNX Runtime) or inference threads (OpenVINO).
        provider: ONNX Runtime execution provider, full name or alias (ONNX Runtime only).
        inter_op_threads: ONNX Runtime inter-op threads.
        graph_optimization: ONNX Runtime graph optimization level.

    Raises:
        UserError: an unknown runtime, OpenVINO missing, or a model the runtime cannot load.
    """
    check_runtime(runtime)
    if runtime == "openvino":
        return OpenVinoSession(model, threads=threads)
    return make_session(
        model,
        provider=provider,
        intra_op_threads=threads,
        inter_op_threads=inter_op_threads,
        graph_optimization=graph_optimization,
    )


def bound_run(session: SessionAny, feed: np.ndarray) -> Callable[[], Any]:
    """``feed`` bound once to the session's first input; the zero-argument call that runs one inference.

    ONNX Runtime: an IO binding of the input and all outputs, run with ``run_with_iobinding``. OpenVINO: an
    infer request with the input tensor set.
    """
    if isinstance(session, OpenVinoSession):
        return session.runner(feed)
    binding = session.io_binding()
    binding.bind_cpu_input(session.get_inputs()[0].name, feed)
    for out in session.get_outputs():
        binding.bind_output(out.name)
    run = session.run_with_iobinding
    return lambda: run(binding)


def runtime_info(session: SessionAny, *, model: OnnxSource | None = None) -> dict[str, Any]:
    """What a report says about where a model ran: runtime, its version, provider and precision.

    Args:
        session: the open session.
        model: the model (for ONNX Runtime's precision: int8 when it holds quantized nodes).
    """
    if isinstance(session, OpenVinoSession):
        return {
            "runtime": "openvino",
            "version": runtime_version("openvino"),
            "provider": session.get_providers()[0],
            "precision": session.precision,
            "inference_precision": session.inference_precision,
        }
    precision = model_precision(model) if model is not None else "unknown"
    return {
        "runtime": "ort",
        "version": ort.__version__,
        "provider": session.get_providers()[0],
        "precision": precision,
    }
