"""Timing ONNX Runtime runs: IO-bound loops on the wall clock and the inference thread's CPU clock, the ms summary.

What is timed: one inference on inputs and outputs bound once (:func:`~prunegym.core.onnxrt.runtime.bound_run`:
ONNX Runtime's ``run_with_iobinding`` or an OpenVINO infer request), with Python's garbage collector paused.
The ``cpu`` clock is the CPU time of the calling thread, which is where ONNX Runtime computes on the CPU
provider at one intra-op thread: it equals the wall-clock latency on an idle core, while on a shared machine
time-slicing by other processes inflates the wall clock by whole scheduler slices.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from prunegym.core.errors import UserError
from prunegym.core.onnxrt.runtime import SessionAny, bound_run, check_runtime, open_model
from prunegym.core.onnxrt.session import (
    OnnxSource,
    check_graph_optimization,
    random_input,
    resolve_provider,
)

__all__ = [
    "CLOCKS",
    "LatencyConfig",
    "LatencyResult",
    "measure_latency",
    "resolve_clock",
    "summarize_ms",
    "time_runs",
    "time_runs_both",
]

log = logging.getLogger(__name__)

CLOCKS = ("auto", "cpu", "wall")


@dataclass(frozen=True)
class LatencyConfig:
    """How to measure.

    Args:
        provider: execution provider, full name or alias.
        intra_op_threads: threads inside one operator.
        inter_op_threads: threads across operators.
        batch_size: the batch of one timed run.
        warmup: untimed runs before the timed ones.
        repeats: timed runs.
        graph_optimization: "disable", "basic", "extended" or "all".
        seed: seeds the random input.
        runtime: "ort" (ONNX Runtime with ``provider``) or "openvino" (OpenVINO's CPU plugin).
    """

    provider: str = "CPUExecutionProvider"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    batch_size: int = 1
    warmup: int = 10
    repeats: int = 50
    graph_optimization: str = "all"
    seed: int = 0
    runtime: str = "ort"

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads", "batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise UserError(f"latency {name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise UserError(f"latency warmup must be >= 0, got {self.warmup}")
        check_graph_optimization(self.graph_optimization)
        check_runtime(self.runtime)


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
        """The fields as a dict, floats rounded to 5 decimals."""
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(self).items()}


def resolve_clock(clock: str, *, config: LatencyConfig) -> str:
    """The clock to time with: ``wall`` (perf_counter) or ``cpu`` (CPU time of the calling thread).

    Args:
        clock: ``auto``, ``cpu`` or ``wall``. ``auto`` picks ``cpu`` for the CPU provider (or OpenVINO's CPU
            plugin) at 1 thread (the runtime then computes on the calling thread, so its CPU time is the run's
            latency on an idle core) and ``wall`` otherwise.
        config: the provider and threads the runs will use.

    Returns:
        ``cpu`` or ``wall``.

    Raises:
        UserError: an unknown clock, or ``cpu`` with another provider or more than one thread.
    """
    if clock not in CLOCKS:
        raise UserError(f"unknown clock {clock!r}; use one of {', '.join(CLOCKS)}")
    on_cpu = config.runtime == "openvino" or resolve_provider(config.provider) == "CPUExecutionProvider"
    single = on_cpu and config.intra_op_threads == 1
    if clock == "auto":
        return "cpu" if single else "wall"
    if clock == "cpu" and not single:
        raise UserError(
            "the cpu clock counts the calling thread only, so it needs the cpu provider at 1 thread; use --clock wall"
        )
    return clock


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's garbage collector off inside the block (restored to its previous state after)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc_was_enabled:
            gc.enable()


def time_runs(session: SessionAny, feed: np.ndarray, *, warmup: int, repeats: int) -> np.ndarray:
    """Run ``warmup`` untimed then ``repeats`` timed inferences on the wall clock.

    Args:
        session: the session to time.
        feed: the input batch (bound once).
        warmup: untimed runs first.
        repeats: timed runs.

    Returns:
        Per-run wall times in milliseconds, shape ``(repeats,)``.
    """
    run: Callable[[], Any] = bound_run(session, feed)
    for _ in range(warmup):
        run()
    times = np.empty(repeats, dtype=np.float64)
    with _gc_paused():
        for i in range(repeats):
            t0 = time.perf_counter()
            run()
            times[i] = time.perf_counter() - t0
    return times * 1e3


def time_runs_both(
    session: SessionAny, feed: np.ndarray, *, warmup: int, repeats: int
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`time_runs`, timing each run on the wall clock and the thread CPU clock at once.

    Args:
        session: the session to time.
        feed: the input batch (bound once).
        warmup: untimed runs first.
        repeats: timed runs.

    Returns:
        Per-run wall times and thread CPU times in milliseconds, each of shape ``(repeats,)``.
    """
    run = bound_run(session, feed)
    for _ in range(warmup):
        run()
    wall = np.empty(repeats, dtype=np.float64)
    cpu = np.empty(repeats, dtype=np.float64)
    perf, thread = time.perf_counter, time.thread_time
    with _gc_paused():
        for i in range(repeats):
            t0, c0 = perf(), thread()
            run()
            c1, t1 = thread(), perf()
            wall[i], cpu[i] = t1 - t0, c1 - c0
    return wall * 1e3, cpu * 1e3


def summarize_ms(times_ms: np.ndarray, *, batch_size: int, provider: str, threads: int) -> LatencyResult:
    """Median, p90, mean, std, IQR and min of per-run times.

    Args:
        times_ms: per-run times in milliseconds.
        batch_size: the batch of one run (recorded).
        provider: the execution provider (recorded).
        threads: the intra-op threads (recorded).

    Returns:
        The summary; ``std_ms`` is 0 for a single run.
    """
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


def session_and_feed(
    model: OnnxSource, *, config: LatencyConfig, input_shape: Sequence[int] | None = None
) -> tuple[SessionAny, np.ndarray]:
    """A session opened as ``config`` says (runtime, provider, threads) and a random input batch for it.

    Args:
        model: ONNX bytes or a path to an ``.onnx`` file.
        config: runtime, provider, threads, graph optimization, batch size and seed (of the input).
        input_shape: C×H×W of one input (default: the model's).
    """
    session = open_model(
        model,
        runtime=config.runtime,
        provider=config.provider,
        threads=config.intra_op_threads,
        inter_op_threads=config.inter_op_threads,
        graph_optimization=config.graph_optimization,
    )
    return session, random_input(session, batch_size=config.batch_size, input_shape=input_shape, seed=config.seed)


def measure_latency(
    onnx_model: OnnxSource, *, input_shape: Sequence[int] | None = None, config: LatencyConfig | None = None
) -> LatencyResult:
    """Latency of one batch of an ONNX model: ``config.warmup`` untimed runs, then ``config.repeats`` timed ones.

    Args:
        onnx_model: an ONNX file or a serialized model.
        input_shape: C×H×W of one input; may be omitted when the model's non-batch dims are static.
        config: how to measure; defaults to :class:`LatencyConfig`'s.

    Returns:
        The wall-clock summary (median, p90, spread) of the timed runs.
    """
    config = config or LatencyConfig()
    session, feed = session_and_feed(onnx_model, config=config, input_shape=input_shape)
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
