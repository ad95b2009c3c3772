"""Fair side-by-side benchmark of ONNX models: interleaved rounds, latency at batch 1, throughput at a large batch.

On a shared, noisy machine a model measured a minute after another sees a different machine. Here every
model gets a session per thread count up front, then the rounds go round-robin over the models (in a rotated
order each round), so load spikes hit all of them alike and the ratios stay fair. Latency is the median (and
p90) of all timed batch-1 runs pooled over the rounds; throughput is images/s at the large batch, the median
over rounds. Sessions, feeds, timing loops and the round rotation come from :mod:`prunegym.core.onnxrt`, so
only numpy and onnxruntime are needed (no torch): ``prunegym deploy bench BUNDLE`` re-measures on whatever
machine it runs on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from prunegym.core.errors import UserError
from prunegym.core.onnxrt import (
    NOISY_CV,
    LatencyConfig,
    SessionAny,
    machine_description,
    open_model,
    random_input,
    resolve_clock,
    rotated_order,
    round_ratio,
    runtime_info,
    runtime_version,
    summarize_ms,
    time_runs,
    time_runs_both,
)

__all__ = ["BenchmarkEntry", "BenchmarkReport", "benchmark_models"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkEntry:
    """One model at one thread count. Ratios compare with the first model at the same thread count."""

    model: str
    threads: int
    latency_median_ms: float
    latency_p90_ms: float
    latency_iqr_ms: float
    batch_latency: int
    throughput_fps: float
    batch_throughput: int
    latency_samples: int
    speedup: float  # median over rounds of (first model's round median / this one's) (> 1: faster)
    fps_ratio: float  # this throughput / first model's throughput
    clock: str = "wall"  # what latency was timed with: cpu (the inference thread's CPU time) or wall
    speedup_cv: float = 0.0  # coefficient of variation of the per-round speed-ups (dispersion)
    runtime: str = "ort"  # ort (ONNX Runtime) or openvino
    precision: str = "fp32"  # fp32 or int8 (OpenVINO: f32 = FP32 with INFERENCE_PRECISION_HINT=f32)

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class BenchmarkReport:
    """All entries (models × thread counts) plus how and where they were measured."""

    entries: tuple[BenchmarkEntry, ...]
    baseline: str
    rounds: int
    provider: str
    machine: str
    onnxruntime: str
    runtimes: Mapping[str, str] = field(default_factory=dict)  # runtime → version, of those used

    @property
    def noisy(self) -> list[BenchmarkEntry]:
        """Entries whose per-round speed-ups spread more than :data:`NOISY_CV`: the machine was too busy."""
        return [e for e in self.entries if e.speedup_cv > NOISY_CV]

    def get(self, model: str, threads: int) -> BenchmarkEntry:
        for entry in self.entries:
            if entry.model == model and entry.threads == threads:
                return entry
        raise KeyError(f"no entry for model {model!r} at {threads} threads")

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "rounds": self.rounds,
            "provider": self.provider,
            "machine": self.machine,
            "onnxruntime": self.onnxruntime,
            "runtimes": dict(self.runtimes),
            "noisy": [f"{e.model}@{e.threads}" for e in self.noisy],
            "entries": [e.to_dict() for e in self.entries],
        }

    def to_markdown(self) -> str:
        """A Markdown table: one row per model and thread count."""
        versions = ", ".join(f"{k} {v}" for k, v in self.runtimes.items()) or f"ort {self.onnxruntime}"
        lines = [
            f"{self.machine}; {versions}, {self.provider}, {self.rounds} interleaved rounds",
            "",
            "| model | runtime | precision | threads | clock | latency median (ms) | p90 (ms) | speedup (± CV) | "
            "throughput (img/s) | × first |",
            "|---|---|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for e in self.entries:
            lines.append(
                f"| {e.model} | {e.runtime} | {e.precision} | {e.threads} | {e.clock} | {e.latency_median_ms:.3f} | {e.latency_p90_ms:.3f} | "
                f"{e.speedup:.2f}× (± {100 * e.speedup_cv:.0f}%) | {e.throughput_fps:.0f} | {e.fps_ratio:.2f}× |"
            )
        if self.noisy:
            noisy = ", ".join(self.to_dict()["noisy"])
            lines += [
                "",
                f"**Warning**: the per-round speed-ups of {noisy} spread more than {100 * NOISY_CV:.0f}%: "
                "the machine was too busy for these figures.",
            ]
        return "\n".join(lines)


def _machine() -> str:
    return machine_description()


def _split_counts(total: int, rounds: int) -> list[int]:
    """``total`` runs over ``rounds`` rounds, as evenly as possible, at least one per round."""
    base, extra = divmod(max(total, rounds), rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


@dataclass
class _Subject:
    """One model's session at one thread count, its two feeds, and the times collected over the rounds."""

    session: SessionAny
    lat_feed: np.ndarray
    tput_feed: np.ndarray
    clock: str = "wall"
    runtime: str = "ort"
    precision: str = "fp32"
    lat_samples: list[np.ndarray] = field(default_factory=list)
    tput_rounds: list[float] = field(default_factory=list)


def _prepare(
    model: Path | str | bytes,
    *,
    threads: int,
    provider: str,
    graph_optimization: str,
    input_shape: Sequence[int] | None,
    batch_latency: int,
    batch_throughput: int,
    warmup: int,
    runtime: str = "ort",
) -> _Subject:
    """Open the session, draw both feeds (a fixed batch dimension wins) and warm up on each."""
    session = open_model(
        model, runtime=runtime, provider=provider, threads=threads, graph_optimization=graph_optimization
    )
    fixed = session.get_inputs()[0].shape[0]
    fixed = fixed if isinstance(fixed, int) else None
    lat_feed = random_input(session, batch_size=fixed or batch_latency, input_shape=input_shape)
    tput_feed = random_input(session, batch_size=fixed or batch_throughput, input_shape=input_shape)
    time_runs(session, lat_feed, warmup=warmup, repeats=1)
    time_runs(session, tput_feed, warmup=min(warmup, 2), repeats=1)
    info = runtime_info(session, model=model)
    return _Subject(
        session=session, lat_feed=lat_feed, tput_feed=tput_feed, runtime=runtime, precision=info["precision"]
    )


def _run_rounds(subjects: Sequence[_Subject], *, lat_counts: Sequence[int], tput_counts: Sequence[int]) -> None:
    """Round-robin rounds (the order rotated by one model each round): latency runs, then a timed throughput block."""
    for r, (n_lat, n_tput) in enumerate(zip(lat_counts, tput_counts, strict=True)):
        for i in rotated_order(len(subjects), r, step=1):
            sub = subjects[i]
            wall, cpu = time_runs_both(sub.session, sub.lat_feed, warmup=0, repeats=n_lat)
            sub.lat_samples.append(cpu if sub.clock == "cpu" else wall)
            start = time.perf_counter()
            time_runs(sub.session, sub.tput_feed, warmup=0, repeats=n_tput)
            elapsed = time.perf_counter() - start
            sub.tput_rounds.append(n_tput * len(sub.tput_feed) / elapsed)


def _entries(subjects: Mapping[str, _Subject], *, threads: int) -> list[BenchmarkEntry]:
    """One entry per model at ``threads``: pooled latency summary (named by the provider its session ran on:
    ``CPUExecutionProvider``, ``OpenVINO:CPU`` …), median throughput, ratios to the first model."""
    entries: list[BenchmarkEntry] = []
    base_fps = 0.0
    base_rounds = np.array([np.median(s) for s in next(iter(subjects.values())).lat_samples])
    for k, (name, sub) in enumerate(subjects.items()):
        summary = summarize_ms(
            np.concatenate(sub.lat_samples),
            batch_size=len(sub.lat_feed),
            provider=sub.session.get_providers()[0],
            threads=threads,
        )
        speedup, speedup_cv = round_ratio(base_rounds, np.array([np.median(s) for s in sub.lat_samples]))
        fps = float(np.median(sub.tput_rounds))
        if k == 0:
            base_fps = fps
        entries.append(
            BenchmarkEntry(
                model=name,
                threads=threads,
                latency_median_ms=summary.median_ms,
                latency_p90_ms=summary.p90_ms,
                latency_iqr_ms=summary.iqr_ms,
                batch_latency=summary.batch_size,
                throughput_fps=fps,
                batch_throughput=len(sub.tput_feed),
                latency_samples=summary.repeats,
                speedup=speedup,
                fps_ratio=fps / base_fps,
                clock=sub.clock,
                speedup_cv=speedup_cv,
                runtime=sub.runtime,
                precision=sub.precision,
            )
        )
        log.info(
            "%s @%d threads: %.3f ms median (p90 %.3f), %.0f img/s",
            name,
            threads,
            summary.median_ms,
            summary.p90_ms,
            fps,
        )
    return entries


def benchmark_models(
    models: Mapping[str, Path | str | bytes],
    *,
    input_shape: Sequence[int] | None = None,
    threads: Sequence[int] = (1, 2),
    batch_latency: int = 1,
    batch_throughput: int = 64,
    warmup: int = 10,
    repeats: int = 50,
    throughput_repeats: int = 5,
    rounds: int = 5,
    provider: str = "CPUExecutionProvider",
    graph_optimization: str = "all",
    clock: str = "auto",
    runtime: str = "ort",
    runtimes: Mapping[str, str] | None = None,
) -> BenchmarkReport:
    """Benchmark ONNX models side by side, interleaved; the first model is the reference for the ratios.

    Per thread count, every model gets its session, feeds and warm-up (``warmup`` untimed batch-latency runs,
    ``min(warmup, 2)`` throughput runs) up front; then ``repeats`` timed batch-``batch_latency`` runs and
    ``throughput_repeats`` timed batch-``batch_throughput`` runs per model are spread over ``rounds``
    round-robin rounds. A model with a fixed batch dimension is timed at that batch.

    Args:
        models: name → ONNX file or serialized model.
        input_shape: C×H×W; may be omitted when the models' non-batch dims are static.
        threads: intra-op thread counts to measure at.
        batch_latency: batch of the latency runs.
        batch_throughput: batch of the throughput runs.
        warmup: untimed latency runs per model and thread count before the rounds.
        repeats: timed latency runs per model and thread count, over all rounds.
        throughput_repeats: timed throughput runs per model and thread count, over all rounds.
        rounds: round-robin rounds.
        provider: execution provider, full name or alias.
        graph_optimization: "disable", "basic", "extended" or "all".
        clock: what batch-latency runs are timed with: ``auto`` (the inference thread's CPU time at one thread
            on the CPU provider, immune to time-slicing by neighbours; else the wall clock), ``cpu`` or ``wall``.
            Throughput is always wall-clock images/s.
        runtime: "ort" (ONNX Runtime) or "openvino", for every model not in ``runtimes``.
        runtimes: model name → its runtime, to compare runtimes in one interleaved run (the same file may appear
            under two names).

    Returns:
        The report: one entry per model and thread count; speed-ups are medians of per-round ratios.

    Raises:
        UserError: no models, or a count, thread count or batch size below 1.
    """
    if not models:
        raise UserError("no models to benchmark; pass at least one ONNX file")
    if rounds < 1 or repeats < 1 or throughput_repeats < 1 or not threads:
        raise UserError("rounds, repeats and throughput_repeats must be >= 1 and threads non-empty")
    if min(threads) < 1 or batch_latency < 1 or batch_throughput < 1:
        raise UserError(f"threads and batch sizes must be >= 1, got threads={tuple(threads)}")
    lat_counts = _split_counts(repeats, rounds)
    tput_counts = _split_counts(throughput_repeats, rounds)
    entries: list[BenchmarkEntry] = []
    used: dict[str, None] = {}  # the providers the sessions ran on, in order (ONNX Runtime's, OpenVINO:CPU …)
    for n_threads in threads:
        subjects: dict[str, _Subject] = {}
        for name, model in models.items():
            rt = (runtimes or {}).get(name, runtime)
            clk = resolve_clock(clock, config=LatencyConfig(provider=provider, intra_op_threads=n_threads, runtime=rt))
            subjects[name] = _prepare(
                model,
                threads=n_threads,
                provider=provider,
                graph_optimization=graph_optimization,
                input_shape=input_shape,
                batch_latency=batch_latency,
                batch_throughput=batch_throughput,
                warmup=warmup,
                runtime=rt,
            )
            subjects[name].clock = clk
            used[subjects[name].session.get_providers()[0]] = None
        _run_rounds(list(subjects.values()), lat_counts=lat_counts, tput_counts=tput_counts)
        entries += _entries(subjects, threads=n_threads)
    report = BenchmarkReport(
        entries=tuple(entries),
        baseline=next(iter(models)),
        rounds=rounds,
        provider=", ".join(used) or provider,
        machine=_machine(),
        onnxruntime=ort.__version__,
        runtimes={rt: runtime_version(rt) for rt in dict.fromkeys([runtime, *(runtimes or {}).values()])},
    )
    for e in report.noisy:
        log.warning(
            "%s at %d thread(s): per-round speed-ups spread %.0f%%: the machine was too busy for this figure",
            e.model,
            e.threads,
            100 * e.speedup_cv,
        )
    return report
