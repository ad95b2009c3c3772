"""Deploy figures: latency and throughput vs threads; channels per layer before and after pruning."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from prunegym.core.plots import Figure, save_png
from prunegym.core.stats import model_stats


def plot_bench(bench: Mapping[str, Any], out: Path) -> Path:
    """Two panels: batch-1 median latency and throughput, one line per model over the thread counts (labelled
    bars when only one thread count was measured)."""
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    models = list(dict.fromkeys(e["model"] for e in bench["entries"]))
    counts = sorted({e["threads"] for e in bench["entries"]})
    if len(counts) == 1:
        rows = [next(e for e in bench["entries"] if e["model"] == m) for m in models]
        colours = [f"C{i}" for i in range(len(models))]
        for ax, key, fmt in ((ax1, "latency_median_ms", "{:.3f} ms"), (ax2, "throughput_fps", "{:,.0f} images/s")):
            values = [e[key] for e in rows]
            bars = ax.bar(models, values, color=colours)
            ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8)
            ax.margins(y=0.15)
            ax.grid(axis="y", alpha=0.3)
        ax1.set(ylabel="latency, batch 1 (ms, median)", title=f"latency at {counts[0]} thread(s)")
        ax2.set(ylabel="images / s", title=f"throughput at {counts[0]} thread(s)")
        fig.suptitle(f"ONNX Runtime {bench.get('onnxruntime', '')}, {bench.get('machine', '')}")
        fig.tight_layout()
        return save_png(fig, out, dpi=110)
    for name in models:
        rows = sorted((e for e in bench["entries"] if e["model"] == name), key=lambda e: e["threads"])
        threads = [e["threads"] for e in rows]
        ax1.plot(threads, [e["latency_median_ms"] for e in rows], marker="o", label=name)
        ax2.plot(threads, [e["throughput_fps"] for e in rows], marker="o", label=name)
    ax1.set(xlabel="threads", ylabel="latency, batch 1 (ms, median)", title="latency")
    ax2.set(xlabel="threads", ylabel="images / s", title="throughput")
    for ax in (ax1, ax2):
        ax.set_xticks(counts)  # thread counts are integers
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"ONNX Runtime {bench.get('onnxruntime', '')}, {bench.get('machine', '')}")
    fig.tight_layout()
    return save_png(fig, out, dpi=110)


def plot_channels(*, base: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...], out: Path) -> Path:
    """Output channels of every conv/linear layer, before (outline) and after (filled) pruning."""
    before = {la.name: la.out_channels for la in model_stats(base, input_shape=input_shape).layers}
    after = {la.name: la.out_channels for la in model_stats(pruned, input_shape=input_shape).layers}
    names = list(before)
    fig = Figure(figsize=(max(6, 0.28 * len(names)), 4))
    ax = fig.add_subplot()
    xs = range(len(names))
    ax.bar(xs, [before[n] for n in names], color="none", edgecolor="gray", label="before")
    ax.bar(xs, [after.get(n, 0) for n in names], color="tab:blue", alpha=0.8, label="after")
    ax.set_xticks(list(xs), names, rotation=90, fontsize=7)
    ax.set_ylabel("output channels")
    ax.set_title("channels per layer before/after pruning")
    ax.legend()
    fig.tight_layout()
    return save_png(fig, out, dpi=110)
