"""One host record: what a device worker registers and what a local latency table records about its machine."""

from __future__ import annotations

import os
import platform
import socket
from typing import Any

import onnxruntime as ort

from prunegym.core.onnxrt.machine import cpu_flags, cpu_name
from prunegym.core.onnxrt.runtime import check_runtime, runtime_version
from prunegym.core.onnxrt.session import resolve_provider

__all__ = ["host_record"]


def host_record(*, runtime: str = "ort", provider: str = "cpu") -> dict[str, Any]:
    """The machine and runtime a measurement runs on.

    Args:
        runtime: "ort" or "openvino".
        provider: the ONNX Runtime execution provider (recorded as OpenVINO's CPU plugin for ``openvino``).

    Returns:
        ``cpu`` (model name), ``cpu_flags`` (the ISA flags speed depends on), ``cpus``, ``arch``, ``hostname``,
        ``runtime``, ``runtime_version``, ``onnxruntime`` (its version) and ``provider``.

    Raises:
        UserError: an unknown runtime or provider, or OpenVINO asked for and not installed.
    """
    check_runtime(runtime)
    return {
        "cpu": cpu_name(),
        "cpu_flags": list(cpu_flags()),
        "cpus": os.cpu_count(),
        "arch": platform.machine(),
        "hostname": socket.gethostname(),
        "runtime": runtime,
        "runtime_version": runtime_version(runtime),
        "onnxruntime": ort.__version__,
        "provider": "OpenVINO:CPU" if runtime == "openvino" else resolve_provider(provider),
    }
