"""What machine a timing came from: the CPU model and the instruction-set flags INT8 and NCHWc speed depend on.

The project's machines differ between sessions (an AMD EPYC with AVX2 only, an Intel Xeon with AVX-512 VNNI),
so every latency report names both.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["ISA_FLAGS", "cpu_flags", "cpu_name", "machine_description"]

# the flags that decide ONNX Runtime's conv blocking (avx2 / avx512f), INT8 kernels (the VNNI and AMX variants)
# and OpenVINO's default bf16 inference (avx512_bf16 / amx_bf16)
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    for line in _cpuinfo():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> tuple[str, ...]:
    """The :data:`ISA_FLAGS` this CPU has, in that order."""
    flags = next((line.split(":", 1)[1].split() for line in _cpuinfo() if line.startswith("flags")), [])
    return tuple(f for f in ISA_FLAGS if f in flags)


def machine_description() -> str:
    """``"<cpu name> (avx2, avx512_vnni), 2 CPUs, x86_64"``: what every latency table names."""
    flags = ", ".join(cpu_flags()) or "no AVX2/AVX-512 flags"
    return f"{cpu_name()} ({flags}), {os.cpu_count()} CPUs, {platform.machine()}"
