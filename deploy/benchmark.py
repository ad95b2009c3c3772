"""Fair side-by-side benchmark of ONNX models: interleaved rounds, latency at batch 1, throughput at a large batch.

On a shared, noisy machine a model measured a minute after another sees a different machine. Here every
model gets a session per thread count up front, then the rounds go round-robin over the models (in a rotated
order each round), so load spikes hit all of them alike and the ratios stay fair. Latency is the median (and
p90) of all timed batch-1 runs pooled over the rounds; throughput is images/s at the large batch, the median
over rounds. Only numpy and onnxruntime are needed (no torch): ``prunegym deploy bench BUNDLE`` re-measures on
whatever machine it runs on.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from prunegym.core.errors import UserError
from prunegym.env.latency import make_session, random_input, summarize_ms, time_runs

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
    speedup: float  # first model's median latency / this one's (> 1: faster)
    fps_ratio: float  # this throughput / first model's throughput

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
            "entries": [e.to_dict() for e in self.entries],
        }

    def to_markdown(self) -> str:
        """A Markdown table: one row per model and thread count."""
        lines = [
            "| model | threads | latency median (ms) | p90 (ms) | speedup | throughput (img/s) | × first |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for e in self.entries:
            lines.append(
                f"| {e.model} | {e.threads} | {e.latency_median_ms:.3f} | {e.latency_p90_ms:.3f} | "
                f"{e.speedup:.2f}× | {e.throughput_fps:.0f} | {e.fps_ratio:.2f}× |"
            )
        return "\n".join(lines)


def _machine() -> str:
    return f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPUs"


def _split_counts(total: int, rounds: int) -> list[int]:
    """``total`` runs over ``rounds`` rounds, as evenly as possible, at least one per round."""
    base, extra = divmod(max(total, rounds), rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


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
) -> BenchmarkReport:
    """Benchmark ``models`` (name → ONNX file or bytes; the first is the reference for ratios), interleaved.

    ``input_shape`` (C×H×W) may be omitted when the models' non-batch dims are static. ``repeats`` timed
    batch-``batch_latency`` runs and ``throughput_repeats`` timed batch-``batch_throughput`` runs per model and
    thread count are spread over ``rounds`` round-robin rounds; ``warmup`` untimed runs precede them.
    A model with a fixed batch dimension is timed at that batch for throughput.
    """
    if not models:
        raise UserError("no models to benchmark; pass at least one ONNX file")
    if rounds < 1 or repeats < 1 or throughput_repeats < 1 or not threads:
        raise UserError("rounds, repeats and throughput_repeats must be >= 1 and threads non-empty")
    if min(threads) < 1 or batch_latency < 1 or batch_throughput < 1:
        raise UserError(f"threads and batch sizes must be >= 1, got threads={tuple(threads)}")
    names = list(models)
    lat_counts = _split_counts(repeats, rounds)
    tput_counts = _split_counts(throughput_repeats, rounds)
    entries: list[BenchmarkEntry] = []
    resolved_provider = provider
    for n_threads in threads:
        sessions: dict[str, ort.InferenceSession] = {}
        lat_feed: dict[str, np.ndarray] = {}
        tput_feed: dict[str, np.ndarray] = {}
        for name in names:
            session = make_session(
                models[name], provider=provider, intra_op_threads=n_threads, graph_optimization=graph_optimization
            )
            resolved_provider = session.get_providers()[0]
            fixed = session.get_inputs()[0].shape[0]
            fixed = fixed if isinstance(fixed, int) else None
            sessions[name] = session
            lat_feed[name] = random_input(session, batch_size=fixed or batch_latency, input_shape=input_shape)
            tput_feed[name] = random_input(session, batch_size=fixed or batch_throughput, input_shape=input_shape)
            time_runs(session, lat_feed[name], warmup=warmup, repeats=1)
            time_runs(session, tput_feed[name], warmup=min(warmup, 2), repeats=1)
        lat_samples: dict[str, list[np.ndarray]] = {name: [] for name in names}
        tput_rounds: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                session = sessions[name]
                lat_samples[name].append(time_runs(session, lat_feed[name], warmup=0, repeats=lat_counts[r]))
                start = time.perf_counter()
                time_runs(session, tput_feed[name], warmup=0, repeats=tput_counts[r])
                elapsed = time.perf_counter() - start
                tput_rounds[name].append(tput_counts[r] * len(tput_feed[name]) / elapsed)
        base_lat = base_fps = 0.0
        for name in names:
            summary = summarize_ms(
                np.concatenate(lat_samples[name]),
                batch_size=len(lat_feed[name]),
                provider=resolved_provider,
                threads=n_threads,
            )
            fps = float(np.median(tput_rounds[name]))
            if name == names[0]:
                base_lat, base_fps = summary.median_ms, fps
            entries.append(
                BenchmarkEntry(
                    model=name,
                    threads=n_threads,
                    latency_median_ms=summary.median_ms,
                    latency_p90_ms=summary.p90_ms,
                    latency_iqr_ms=summary.iqr_ms,
                    batch_latency=summary.batch_size,
                    throughput_fps=fps,
                    batch_throughput=len(tput_feed[name]),
                    latency_samples=summary.repeats,
                    speedup=base_lat / summary.median_ms,
                    fps_ratio=fps / base_fps,
                )
            )
            log.info(
                "%s @%d threads: %.3f ms median (p90 %.3f), %.0f img/s",
                name,
                n_threads,
                summary.median_ms,
                summary.p90_ms,
                fps,
            )
    return BenchmarkReport(
        entries=tuple(entries),
        baseline=names[0],
        rounds=rounds,
        provider=resolved_provider,
        machine=_machine(),
        onnxruntime=ort.__version__,
    )
